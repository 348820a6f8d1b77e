// A JavaScript function: `taskforge deploy examples/hello.js`, then
// `taskforge invoke hello '{"name":"Ada"}' --wait 10s`.
// What it logs goes to the execution's logs; what it returns is the output.
exports.handler = async (event) => {
  const name = (event && event.name) || 'world';
  console.log(`greeting ${name}`);
  return { message: `Hello, ${name}!` };
};

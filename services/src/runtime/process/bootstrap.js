// TaskForge's JavaScript bootstrap: runs one function once, in a throwaway sandbox.
// Descriptor 3 carries the result; 1 and 2 carry what the function prints.
// Protocol: write "ready\n" on 3; read the request on stdin ("<code length>\n",
// the code, then the event as JSON); end the log with END; write
// "ok <length>\n<json>" or "error <length>\n<json>" on 3. The worker takes the
// result then, without waiting for the sandbox to be torn down.
'use strict';
const fs = require('fs');
const Module = require('module');
const RESULT = 3;
// Made on first use, which costs milliseconds: make them before the request.
void process.stdout;
void process.stderr;
fs.writeSync(RESULT, 'ready\n');

const END = '\0taskforge:end-of-logs\0';

function finish(kind, body) {
  const bytes = Buffer.from(body, 'utf8');
  fs.writeSync(2, END);
  fs.writeSync(RESULT, Buffer.concat([Buffer.from(`${kind} ${bytes.length}\n`), bytes]));
  process.exit(0);
}

function fail(message, error) {
  const stack = error && error.stack ? String(error.stack).slice(-4000) : '';
  finish('error', JSON.stringify({ message, trace: stack }));
}

function describe(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return `thrown: ${String(error)}`;
}

async function load(code) {
  const module = new Module('handler.js', null);
  module.filename = '/tmp/handler.js';
  module.paths = [];
  try {
    module._compile(code, '/tmp/handler.js');
    return module.exports;
  } catch (error) {
    // An ES module: `import`/`export` are syntax errors to CommonJS.
    if (error instanceof SyntaxError && /\b(import|export)\b/.test(error.message)) {
      const url = 'data:text/javascript;base64,' + Buffer.from(code).toString('base64');
      return import(url);
    }
    throw error;
  }
}

async function main() {
  const request = fs.readFileSync(0);
  const newline = request.indexOf(10);
  const size = Number(request.subarray(0, newline).toString());
  const code = request.subarray(newline + 1, newline + 1 + size).toString('utf8');
  const raw = request.subarray(newline + 1 + size).toString('utf8');
  let event = null;
  if (raw.trim() !== '') {
    try { event = JSON.parse(raw); } catch { event = raw; }
  }
  let value;
  try {
    const exported = await load(code);
    const handler = exported && (exported.handler || (exported.default && exported.default.handler));
    if (typeof handler !== 'function') {
      return fail('the module exports no handler(event) function');
    }
    value = await handler(event);
  } catch (error) {
    return fail(describe(error), error);
  }
  let body;
  try {
    // A handler that returns nothing answers null, as Python's None does.
    body = value === undefined ? 'null' : JSON.stringify(value);
  } catch (error) {
    return fail(`the return value is not JSON-serialisable: ${error.message}`);
  }
  if (body === undefined) {
    return fail(`the return value is not JSON-serialisable: ${typeof value}`);
  }
  finish('ok', body);
}

main().catch((error) => fail(describe(error), error));

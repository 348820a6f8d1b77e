# A Python function: `taskforge deploy examples/hello.py`, then
# `taskforge invoke hello '{"name":"Ada"}' --wait 10s`.
# What it prints goes to the execution's logs; what it returns is the output.


def handler(event):
    name = (event or {}).get("name", "world")
    print(f"greeting {name}")
    return {"message": f"Hello, {name}!"}

# TaskForge's Python bootstrap: runs one function once, in a throwaway sandbox.
# Descriptor 3 carries the result; 1 and 2 carry what the function prints.
# Protocol: write "ready\n" on 3; read the request on stdin ("<code length>\n",
# the code, then the event as JSON); end the log with END; write
# "ok <length>\n<json>" or "error <length>\n<json>" on 3. The worker takes the
# result then, without waiting for the sandbox to be torn down.
import json, os, sys, traceback

# Started with -S: `site` can cost tens of milliseconds (its .pth files may
# import packages). Installed packages stay importable; .pth files are not run.
_version = f"{sys.version_info.major}.{sys.version_info.minor}"
for _path in (f"{sys.prefix}/lib/python{_version}/site-packages", "/usr/lib/python3/dist-packages"):
    if os.path.isdir(_path):
        sys.path.append(_path)

# The compiler's first use costs a millisecond: spend it before the request.
compile("def _warm(event):\n    return f'{event}'\n", "<warm>", "exec")

# Line by line, so the log keeps stdout and stderr in the order printed.
sys.stdout.reconfigure(line_buffering=True)
_result = os.fdopen(3, "wb")
os.set_inheritable(3, False)
_result.write(b"ready\n")
_result.flush()

END = b"\0taskforge:end-of-logs\0"

def _finish(kind, body):
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(2, END)
    _result.write(b"%s %d\n%s" % (kind, len(body), body))
    _result.flush()
    os._exit(0)

def _fail(message, tb=None):
    trace = "".join(traceback.format_exception(tb))[-4000:] if tb is not None else ""
    _finish(b"error", json.dumps({"message": message, "trace": trace}).encode())

def _main():
    request = sys.stdin.buffer.read()
    head, _, rest = request.partition(b"\n")
    size = int(head)
    code, event = rest[:size].decode("utf-8"), rest[size:]
    try:
        event = json.loads(event) if event.strip() else None
    except ValueError:
        event = event.decode("utf-8", "replace")
    module = type(sys)("handler")
    module.__file__ = "handler.py"
    sys.modules["handler"] = module
    try:
        exec(compile(code, "handler.py", "exec"), module.__dict__)
        handler = getattr(module, "handler", None)
        if not callable(handler):
            _fail("the module defines no handler(event) function")
        value = handler(event)
        if hasattr(value, "__await__"):
            import asyncio
            value = asyncio.run(value)
    except BaseException as error:
        _fail(f"{type(error).__name__}: {error}", error)
    try:
        body = json.dumps(value).encode()
    except (TypeError, ValueError) as error:
        _fail(f"the return value is not JSON-serialisable: {error}")
    _finish(b"ok", body)

_main()

//! Python and JavaScript functions in real sandboxes: the `python` and
//! `javascript` runtimes with the real interpreters, launched through the
//! built `taskforge` binary.
//!
//! Every denial is checked with a probe that succeeds without the sandbox
//! (the same function on an unsandboxed runtime), so a test cannot pass
//! because the probe was broken. These tests need `python3` and `node` on
//! PATH and fail, saying so, where either is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use taskforge_proto::common::Function;
use taskforge_services::runtime::process::{Interpreter, Language, ProcessConfig, ProcessRuntime};
use taskforge_services::runtime::{Call, Ran, Runtime, Stop};
use taskforge_services::sandbox::{Limits, RequestLimits, Sandbox, Spec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

mod support;
use support::processes::TempDir;

fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_taskforge"))
}

fn interpreter(language: Language) -> Interpreter {
    Interpreter::find(language, language.default_command().as_ref()).unwrap_or_else(|error| {
        panic!(
            "these tests need {language} ({}): {error}",
            language.default_command()
        )
    })
}

fn config() -> ProcessConfig {
    ProcessConfig {
        warm: 1,
        memory_bytes: 256 << 20,
        ..ProcessConfig::new(launcher())
    }
}

async fn runtime(language: Language, config: ProcessConfig) -> ProcessRuntime {
    ProcessRuntime::start(interpreter(language), config)
        .await
        .unwrap_or_else(|error| panic!("the {language} runtime: {error}"))
}

async fn run(runtime: &ProcessRuntime, code: &str, payload: Value) -> Ran {
    let function = Function {
        language: runtime.name().to_string(),
        code: Bytes::copy_from_slice(code.as_bytes()),
        ..Default::default()
    };
    let prepared = runtime.prepare(&function).await.expect("prepare");
    prepared
        .call(Call {
            payload: Bytes::from(payload.to_string()),
            stop: Stop::new(),
            timeout: Duration::from_secs(20),
        })
        .await
}

fn output(ran: &Ran) -> Value {
    match &ran.result {
        Ok(output) => serde_json::from_slice(output).expect("JSON output"),
        Err(error) => panic!("failed: {error}\nlogs: {}", ran.logs),
    }
}

fn failure(ran: &Ran) -> &str {
    match &ran.result {
        Ok(output) => panic!("succeeded: {}", String::from_utf8_lossy(output)),
        Err(error) => error,
    }
}

/// The execution failed, and its error says `expected`.
fn assert_failed(ran: &Ran, expected: &str) {
    let error = failure(ran);
    assert!(
        error.contains(expected),
        "{expected:?} not in: {error}\nlogs: {}",
        ran.logs
    );
}

fn example(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const PY_SEED: &str = "def handler(event):\n    return {'greeting': f\"Hello, {event['name']}!\", 'sum': event['a'] + event['b']}\n";
const JS_SEED: &str = "exports.handler = (event) => ({ greeting: `Hello, ${event.name}!`, sum: event.a + event.b });\n";

#[tokio::test]
async fn hello_and_the_seed_example_in_both_languages() {
    let seed = json!({"name": "Ada", "a": 2, "b": 3});
    let expected = json!({"greeting": "Hello, Ada!", "sum": 5});
    for (language, hello, code) in [
        (Language::Python, "hello.py", PY_SEED),
        (Language::JavaScript, "hello.js", JS_SEED),
    ] {
        let runtime = runtime(language, config()).await;
        assert_eq!(output(&run(&runtime, code, seed.clone()).await), expected);
        let greeting = output(&run(&runtime, &example(hello), json!({"name": "Grace"})).await);
        assert_eq!(greeting, json!({"message": "Hello, Grace!"}), "{language}");
    }
    // An ES module works too.
    let runtime = runtime(Language::JavaScript, config()).await;
    let module = "export async function handler(event) { return event.a * event.b; }\n";
    assert_eq!(output(&run(&runtime, module, seed).await), json!(6));
}

#[tokio::test]
async fn exceptions_fail_with_their_message_and_trace() {
    let cases = [
        (
            Language::Python,
            "def helper():\n    raise ValueError('bad input')\n\ndef handler(event):\n    helper()\n",
            "ValueError: bad input",
            "in helper",
        ),
        (
            Language::JavaScript,
            "exports.handler = async () => { await null; throw new TypeError('no way'); };",
            "TypeError: no way",
            "handler.js",
        ),
    ];
    for (language, code, message, trace) in cases {
        let ran = run(&runtime(language, config()).await, code, json!(null)).await;
        let error = failure(&ran);
        assert!(error.starts_with(message), "{language}: {error}");
        assert!(error.contains(trace), "the trace names {trace:?}: {error}");
    }
}

#[tokio::test]
async fn async_handlers_are_awaited() {
    let python = runtime(Language::Python, config()).await;
    let code = "import asyncio\nasync def handler(event):\n    await asyncio.sleep(0)\n    return event * 2\n";
    assert_eq!(output(&run(&python, code, json!(21)).await), json!(42));
    let node = runtime(Language::JavaScript, config()).await;
    let code = "exports.handler = (n) => new Promise((done) => setTimeout(() => done(n * 2), 1));";
    assert_eq!(output(&run(&node, code, json!(21)).await), json!(42));
}

#[tokio::test]
async fn prints_go_to_the_logs_and_only_their_tail_is_kept() {
    let python = runtime(Language::Python, config()).await;
    let code = "import sys\ndef handler(event):\n    for i in range(20000):\n        print('line', i)\n    print('to stderr', file=sys.stderr)\n    return 'done'\n";
    let ran = run(&python, code, json!(null)).await;
    assert_eq!(output(&ran), json!("done"));
    assert!(
        ran.logs.ends_with("line 19999\nto stderr\n"),
        "{}",
        &ran.logs[ran.logs.len() - 100..]
    );
    assert!(ran.logs.len() <= 16 << 10, "{} bytes kept", ran.logs.len());
    assert!(!ran.logs.contains("line 0\n"));

    let node = runtime(Language::JavaScript, config()).await;
    let code =
        "exports.handler = () => { console.log('hi from js'); console.error('oops'); return 1; };";
    let ran = run(&node, code, json!(null)).await;
    assert_eq!(output(&ran), json!(1));
    assert_eq!(ran.logs, "hi from js\noops\n");
}

#[tokio::test]
async fn non_json_return_values_fail_clearly() {
    let python = runtime(Language::Python, config()).await;
    let ran = run(
        &python,
        "def handler(event):\n    return {1, 2}\n",
        json!(null),
    )
    .await;
    assert_failed(&ran, "not JSON-serialisable");
    let node = runtime(Language::JavaScript, config()).await;
    let ran = run(&node, "exports.handler = () => 10n;", json!(null)).await;
    assert_failed(&ran, "not JSON-serialisable");
    let ran = run(&node, "exports.handler = () => () => 1;", json!(null)).await;
    assert_failed(&ran, "not JSON-serialisable");
    let ran = run(&node, "exports.nothing = 1; // handler", json!(null)).await;
    assert_failed(&ran, "exports no handler");
}

#[tokio::test]
async fn a_memory_hog_fails_on_the_limit() {
    let python = runtime(Language::Python, config()).await;
    let ran = run(
        &python,
        "def handler(event):\n    hog = bytearray(1 << 30)\n    return len(hog)\n",
        json!(null),
    )
    .await;
    assert_failed(&ran, "MemoryError");

    let node = runtime(Language::JavaScript, config()).await;
    let code =
        "exports.handler = () => { const hog = []; for (;;) hog.push(new Array(1e6).fill(1.5)); };";
    let ran = run(&node, code, json!(null)).await;
    let error = failure(&ran);
    assert!(error.contains("ended without a result"), "{error}");
    assert!(ran.logs.contains("heap out of memory"), "{}", ran.logs);
    // The runtime still works.
    assert_eq!(
        output(&run(&node, JS_SEED, json!({"name": "x", "a": 1, "b": 1})).await)["sum"],
        2
    );
}

#[tokio::test]
async fn a_fork_loop_is_stopped_by_the_process_limit() {
    let python = runtime(Language::Python, config()).await;
    let code = "import os, time\ndef handler(event):\n    children = 0\n    try:\n        for _ in range(500):\n            if os.fork() == 0:\n                time.sleep(60)\n                os._exit(0)\n            children += 1\n    except OSError as error:\n        return {'children': children, 'stopped_by': str(error)}\n    return {'children': children}\n";
    let answer = output(&run(&python, code, json!(null)).await);
    let children = answer["children"].as_u64().unwrap();
    assert!(children < 64, "{answer}");
    assert!(
        answer["stopped_by"]
            .as_str()
            .is_some_and(|why| why.contains("Resource temporarily unavailable")),
        "{answer}"
    );
    // Nothing of it is left to hold the limit: the next execution runs.
    assert_eq!(
        output(&run(&python, PY_SEED, json!({"name": "x", "a": 1, "b": 2})).await)["sum"],
        3
    );
}

#[tokio::test]
async fn the_cpu_limit_ends_a_loop_that_outlives_its_timeout() {
    let python = runtime(Language::Python, config()).await;
    let function = Function {
        language: "python".into(),
        code: Bytes::from_static(b"def handler(event):\n    while True:\n        pass\n"),
        ..Default::default()
    };
    let prepared = python.prepare(&function).await.unwrap();
    // Nobody stops it: the CPU limit (the timeout plus 2 s) does.
    let ran = prepared
        .call(Call {
            payload: Bytes::new(),
            stop: Stop::new(),
            timeout: Duration::from_millis(100),
        })
        .await;
    assert_failed(&ran, "CPU time limit");
}

#[tokio::test]
async fn two_executions_share_nothing() {
    let python = runtime(Language::Python, config()).await;
    let code = "import os\nSEEN = globals().get('SEEN', [])\ndef handler(event):\n    fresh = not os.path.exists('/tmp/marker')\n    open('/tmp/marker', 'w').write('x')\n    import builtins\n    was = getattr(builtins, 'taskforge_marker', None)\n    builtins.taskforge_marker = 'set'\n    return {'fresh_tmp': fresh, 'global_before': was, 'pid': os.getpid()}\n";
    for _ in 0..3 {
        let answer = output(&run(&python, code, json!(null)).await);
        assert_eq!(
            answer,
            json!({"fresh_tmp": true, "global_before": null, "pid": 1})
        );
    }
    let node = runtime(Language::JavaScript, config()).await;
    let code = "exports.handler = () => { const before = globalThis.marker; globalThis.marker = 1; return before === undefined; };";
    for _ in 0..3 {
        assert_eq!(output(&run(&node, code, json!(null)).await), json!(true));
    }
}

/// One function that tries everything the sandbox must deny, and reports.
const PROBES: &str = r#"
import json, os, socket

def attempt(f):
    try:
        return ["ok", f()]
    except Exception as error:
        return ["denied", f"{type(error).__name__}: {error}"]

def connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return "connected"

def write(path):
    with open(path, "w") as f:
        f.write("written by a function")
    return "written"

def environ(pid):
    text = open(f"/proc/{pid}/environ", "rb").read()
    if b"CARGO_MANIFEST_DIR=" not in text:
        raise LookupError("not in the environment")
    return "seen"

def handler(event):
    return {
        "connect": attempt(lambda: connect(event["port"])),
        "read_outside": attempt(lambda: open(event["outside_file"]).read()),
        "write_outside": attempt(lambda: write(event["outside_dir"] + "/by-function")),
        "write_bound": attempt(lambda: write(event["bound_dir"] + "/by-function")),
        "read_bound": attempt(lambda: open(event["bound_dir"] + "/public").read()),
        "read_root_only": attempt(lambda: open(event["bound_dir"] + "/secret").read()),
        "shadow": attempt(lambda: open("/etc/shadow").read()[:4]),
        "signal_worker": attempt(lambda: os.kill(event["worker_pid"], 0)),
        "worker_environ": attempt(lambda: environ(event["worker_pid"])),
        "own_env": sorted(os.environ),
        "write_tmp": attempt(lambda: write("/tmp/scratch")),
        "write_root": attempt(lambda: write("/by-function")),
        "uid": os.getuid(),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test]
async fn the_sandbox_denies_what_an_unsandboxed_process_may_do() {
    use std::os::unix::fs::PermissionsExt;
    let outside = TempDir::new("sandbox-outside");
    let outside_file = outside.path().join("worker-data");
    std::fs::write(&outside_file, "the worker's data").unwrap();
    let bound = TempDir::new("sandbox-bound");
    std::fs::set_permissions(bound.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bound.path().join("public"), "anyone may read this").unwrap();
    std::fs::set_permissions(
        bound.path().join("public"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(bound.path().join("secret"), "only root may read this").unwrap();
    std::fs::set_permissions(
        bound.path().join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let event = json!({
        "port": listener.local_addr().unwrap().port(),
        "outside_file": outside_file,
        "outside_dir": outside.path(),
        "bound_dir": bound.path(),
        "worker_pid": std::process::id(),
    });
    let with_bind = |isolate| ProcessConfig {
        isolate,
        extra_read_only: vec![bound.path().to_path_buf()],
        ..config()
    };

    let open = runtime(Language::Python, with_bind(false)).await;
    let control = output(&run(&open, PROBES, event.clone()).await);
    let sandboxed = runtime(Language::Python, with_bind(true)).await;
    let probed = output(&run(&sandboxed, PROBES, event).await);
    let verdict = |answer: &Value, probe: &str| answer[probe][0].as_str().unwrap().to_string();

    // Without the sandbox each probe works: it is a real probe.
    for probe in [
        "connect",
        "read_outside",
        "write_outside",
        "write_bound",
        "read_bound",
        "signal_worker",
        "worker_environ",
        "write_tmp",
    ] {
        assert_eq!(
            verdict(&control, probe),
            "ok",
            "unsandboxed {probe}: {control}"
        );
    }
    if is_root() {
        assert_eq!(verdict(&control, "shadow"), "ok", "{control}");
        assert_eq!(verdict(&control, "read_root_only"), "ok", "{control}");
    }
    // With it, each is denied.
    for probe in [
        "connect",
        "read_outside",
        "write_outside",
        "write_bound",
        "shadow",
        "signal_worker",
        "worker_environ",
        "write_root",
    ] {
        assert_eq!(
            verdict(&probed, probe),
            "denied",
            "sandboxed {probe}: {probed}"
        );
    }
    if is_root() {
        // Visible, but the function is not root: the host's permissions hold.
        let why = probed["read_root_only"][1].as_str().unwrap();
        assert!(why.starts_with("PermissionError"), "{probed}");
    }
    assert_eq!(verdict(&probed, "read_bound"), "ok", "{probed}");
    assert_eq!(verdict(&probed, "write_tmp"), "ok", "{probed}");
    assert!(
        probed["connect"][1]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{probed}"
    );
    assert_eq!(
        probed["own_env"],
        json!(["HOME", "LANG", "PATH"]),
        "{probed}"
    );
    assert_eq!(probed["uid"], json!(1000), "{probed}");
    assert_eq!(probed["processes"], json!([1]), "only itself: {probed}");
    // The probes wrote only where they were allowed to.
    assert!(!bound.path().join("by-function").exists() || verdict(&control, "write_bound") == "ok");
    std::fs::remove_file(bound.path().join("by-function")).unwrap();
    std::fs::remove_file(outside.path().join("by-function")).unwrap();
    assert!(
        std::fs::read_dir(outside.path()).unwrap().count() == 1,
        "nothing else written"
    );
    drop(listener);
}

/// The processes under `pid` (children, recursively), from /proc.
fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut pending = vec![pid];
    while let Some(parent) = pending.pop() {
        let path = format!("/proc/{parent}/task/{parent}/children");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for child in text.split_whitespace().filter_map(|c| c.parse().ok()) {
            if found.insert(child) {
                pending.push(child);
            }
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie is not running anything.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Killing a sandbox kills everything in its PID namespace, and `kill`
/// returns only once all of it is gone.
#[tokio::test]
async fn killing_a_sandbox_leaves_no_process_behind() {
    let python = interpreter(Language::Python);
    let spec = Spec {
        program: python.program.clone(),
        args: Language::Python.args(256 << 20),
        read_only: python.read_only_paths(),
        tmp_bytes: 1 << 20,
        limits: Limits {
            processes: Some(32),
            ..Limits::default()
        },
        isolate: true,
    };
    let mut sandbox = Sandbox::spawn(&launcher(), &spec).unwrap();
    let mut results = tokio::io::BufReader::new(sandbox.stdout.take().unwrap());
    let mut line = String::new();
    results.read_line(&mut line).await.unwrap();
    assert_eq!(line, "ready\n");

    let code = b"import os, sys\ndef handler(event):\n    for _ in range(3):\n        if os.fork() == 0:\n            break\n    print('started', flush=True)\n    while True:\n        pass\n";
    let header = serde_json::to_string(&RequestLimits::default()).unwrap();
    let mut stdin = sandbox.stdin.take().unwrap();
    let request = [
        format!("{header}\n{}\n", code.len()).as_bytes(),
        code.as_slice(),
        b"null",
    ]
    .concat();
    stdin.write_all(&request).await.unwrap();
    drop(stdin);
    let mut logs = tokio::io::BufReader::new(sandbox.stderr.take().unwrap());
    // All four processes say so (each once its forks are done).
    for _ in 0..4 {
        let mut started = String::new();
        logs.read_line(&mut started).await.unwrap();
        assert_eq!(started, "started\n");
    }

    let launcher_pid = sandbox.id().unwrap();
    let inside = descendants(launcher_pid);
    assert!(
        inside.len() >= 4,
        "the interpreter (PID 1) and its three children: {inside:?}"
    );
    assert!(inside.iter().all(|&pid| alive(pid)));
    let status = sandbox.kill().await.unwrap();
    assert!(!status.success());
    let survivors: Vec<u32> = inside.into_iter().filter(|&pid| alive(pid)).collect();
    assert!(survivors.is_empty(), "still running: {survivors:?}");
}

#[tokio::test]
async fn a_stopped_execution_ends_at_once_and_the_runtime_goes_on() {
    let node = runtime(Language::JavaScript, config()).await;
    let function = Function {
        language: "javascript".into(),
        code: Bytes::from_static(b"exports.handler = () => { for (;;) {} };"),
        ..Default::default()
    };
    let prepared = node.prepare(&function).await.unwrap();
    let stop = Stop::new();
    let running = prepared.call(Call {
        payload: Bytes::new(),
        stop: stop.clone(),
        timeout: Duration::from_secs(600),
    });
    stop.stop();
    let ran = running.await;
    assert_eq!(ran.result, Err("stopped".to_string()));
    let seed = json!({"name": "x", "a": 1, "b": 1});
    assert_eq!(output(&run(&node, JS_SEED, seed).await)["sum"], 2);
}

#[test]
fn interpreters_are_found_as_real_executables() {
    for language in Language::ALL {
        let found = interpreter(language);
        assert!(found.program.is_absolute());
        let bytes = std::fs::read(&found.program).unwrap();
        assert!(
            bytes.starts_with(b"\x7fELF"),
            "{} is not a shell shim",
            found.program.display()
        );
        assert!(
            found
                .read_only_paths()
                .iter()
                .any(|path| found.program.starts_with(path))
        );
    }
    let missing = Interpreter::find(
        Language::Python,
        Path::new("/nonexistent/python3").as_os_str(),
    );
    assert!(
        missing
            .unwrap_err()
            .contains("cannot run /nonexistent/python3")
    );
}

#[test]
fn python_and_node_are_present_here() {
    // CI installs nothing: these runtimes' tests must not silently pass on a
    // machine without the interpreters.
    for language in Language::ALL {
        let output = std::process::Command::new(language.default_command())
            .arg("--version")
            .output()
            .unwrap_or_else(|error| panic!("{} is missing: {error}", language.default_command()));
        assert!(output.status.success());
    }
}

/// The sandbox as an ordinary user gets it: run as root, this starts the
/// launcher as `nobody` (the path where the launcher's own user namespace
/// grants the rights to build the sandbox); run as an ordinary user, every
/// other test here already takes that path, and this one does too.
#[test]
fn an_unprivileged_worker_gets_the_same_sandbox() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    // nobody cannot reach an interpreter under root's home (pyenv's), so
    // take the system's when running as root.
    let command = if is_root() && Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let python = Interpreter::find(Language::Python, command.as_ref()).unwrap();
    let spec = Spec {
        program: python.program.clone(),
        args: Language::Python.args(256 << 20),
        read_only: python.read_only_paths(),
        tmp_bytes: 1 << 20,
        limits: Limits {
            processes: Some(32),
            ..Limits::default()
        },
        isolate: true,
    };
    let mut launcher = std::process::Command::new(launcher());
    launcher
        .arg("sandbox-exec")
        .arg(spec.to_arg())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if is_root() {
        launcher.uid(65534).gid(65534);
    }
    let mut child = launcher.spawn().unwrap();
    let code = b"import os, socket\ndef handler(event):\n    try:\n        socket.create_connection(('127.0.0.1', 1), timeout=2)\n        net = 'reached'\n    except OSError as error:\n        net = str(error)\n    open('/tmp/scratch', 'w').write('x')\n    return {'uid': os.getuid(), 'pid': os.getpid(), 'net': net, 'root': sorted(os.listdir('/'))}\n";
    let header = serde_json::to_string(&RequestLimits::default()).unwrap();
    let request = [
        format!("{header}\n{}\n", code.len()).as_bytes(),
        code.as_slice(),
        b"null",
    ]
    .concat();
    child.stdin.take().unwrap().write_all(&request).unwrap();
    let mut results = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut results)
        .unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{logs}");
    let report = results
        .strip_prefix("ready\nok ")
        .and_then(|rest| rest.split_once('\n'))
        .unwrap_or_else(|| panic!("{results:?} {logs}"));
    assert_eq!(
        report.0.parse::<usize>().unwrap(),
        report.1.len(),
        "framed by its length"
    );
    let answer: Value = serde_json::from_str(report.1).unwrap();
    assert_eq!(answer["uid"], 1000, "{answer}");
    assert_eq!(answer["pid"], 1, "{answer}");
    assert!(
        answer["net"].as_str().unwrap().contains("unreachable"),
        "{answer}"
    );
    assert_eq!(
        answer["root"],
        json!([
            "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"
        ]),
        "{answer}"
    );
}

#[tokio::test]
async fn an_oversized_output_fails_the_attempt() {
    let python = runtime(
        Language::Python,
        ProcessConfig {
            max_output_bytes: 1000,
            ..config()
        },
    )
    .await;
    let ran = run(
        &python,
        "def handler(event):\n    return 'x' * 5000\n",
        json!(null),
    )
    .await;
    assert_failed(&ran, "the limit");
    let ran = run(
        &python,
        "def handler(event):\n    return 'x' * 900\n",
        json!(null),
    )
    .await;
    assert_eq!(output(&ran).as_str().map(str::len), Some(900));
}

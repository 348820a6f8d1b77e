//! The `wasm` runtime on real wasmtime: the examples, every way an execution
//! ends, every limit, and what the sandbox denies.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use taskforge_proto::common::Function;
use wasmtime::{Linker, Module};

use super::*;
use crate::languages::{WASI_MODULE, WASI_PREVIEW1};

const ECHO: &str = include_str!("../../../../examples/echo.wat");
const UPPERCASE: &str = include_str!("../../../../examples/uppercase.wat");
const SUM_AND_GREET: &str = include_str!("../../../../examples/sum_and_greet.wat");
const INFINITE_LOOP: &str = include_str!("../../../../examples/infinite_loop.wat");
const MEMORY_HOG: &str = include_str!("../../../../examples/memory_hog.wat");

/// A guard against a test hanging forever, far above anything expected.
const GUARD: Duration = Duration::from_secs(60);

fn binary(wat: &str) -> Bytes {
    Bytes::from(wat::parse_str(wat).expect("test modules parse"))
}

fn runtime() -> WasmRuntime {
    WasmRuntime::new(WasmConfig::default()).unwrap()
}

fn compile(runtime: &WasmRuntime, wat: &str) -> WasmFunction {
    runtime.compile(&binary(wat)).unwrap()
}

fn run_with(runtime: &WasmRuntime, wat: &str, payload: &[u8]) -> RunResult {
    compile(runtime, wat).execute(Bytes::copy_from_slice(payload), &Stop::new())
}

fn run(wat: &str, payload: &[u8]) -> RunResult {
    run_with(&runtime(), wat, payload)
}

fn text(result: RunResult) -> String {
    String::from_utf8(result.expect("the execution succeeds").to_vec()).unwrap()
}

fn failure(result: RunResult) -> String {
    result.expect_err("the execution fails")
}

/// Imports for modules written in these tests.
const IMPORTS: &str = r#"
    (import "wasi_snapshot_preview1" "fd_write"
      (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"#;

fn module(body: &str) -> String {
    format!("(module {IMPORTS} (memory (export \"memory\") 1) {body})")
}

#[test]
fn echo_copies_any_payload() {
    let runtime = runtime();
    let echo = compile(&runtime, ECHO);
    let stop = Stop::new();
    for payload in [&b""[..], b"hello", &[7u8; 200_000]] {
        let out = echo.execute(Bytes::copy_from_slice(payload), &stop);
        assert_eq!(out.as_deref(), Ok(payload));
    }
}

#[test]
fn uppercase_uppercases_ascii_letters_only() {
    assert_eq!(
        text(run(UPPERCASE, "hello, Wörld z{".as_bytes())),
        "HELLO, WöRLD Z{"
    );
}

#[test]
fn sum_and_greet_answers_like_the_builtin() {
    let runtime = runtime();
    let cases = [
        (r#"{"name":"Ada","a":2,"b":3}"#, "Hello Ada", 5),
        (r#" { "b" : 40 , "name" : "a", "a": 2 } "#, "Hello a", 42),
        (
            r#"{"name":"Grace","a":999999999,"b":999999999}"#,
            "Hello Grace",
            1999999998,
        ),
    ];
    for (payload, message, sum) in cases {
        let out = text(run_with(&runtime, SUM_AND_GREET, payload.as_bytes()));
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value, serde_json::json!({"message": message, "sum": sum}));
        assert_eq!(out, format!(r#"{{"message":"{message}","sum":{sum}}}"#));
    }
    for payload in [
        r#"{"name":"Ada","a":2}"#,
        r#"{"name":"A\"da","a":2,"b":3}"#,
        r#"{"name":7,"a":2,"b":3}"#,
        r#"{"name":"Ada","a":-2,"b":3}"#,
        r#"{"name":"Ada","a":1234567890,"b":3}"#,
        "",
    ] {
        let error = failure(run_with(&runtime, SUM_AND_GREET, payload.as_bytes()));
        assert!(error.starts_with("exit code 1"), "{payload}: {error}");
        assert!(error.contains("expected {\"name\""), "{payload}: {error}");
    }
    let big = format!(r#"{{"name":"{}","a":1,"b":2}}"#, "x".repeat(70_000));
    let error = failure(run_with(&runtime, SUM_AND_GREET, big.as_bytes()));
    assert!(error.contains("under 60 KiB"), "{error}");
}

#[test]
fn a_trap_fails_with_its_message() {
    let error = failure(run(r#"(module (func (export "_start") unreachable))"#, b""));
    assert!(error.starts_with("wasm trap: "), "{error}");
    assert!(error.contains("unreachable"), "{error}");
}

#[test]
fn unbounded_recursion_exhausts_the_stack_not_the_worker() {
    let wat = r#"(module
        (func $down (call $down))
        (func (export "_start") (call $down)))"#;
    let error = failure(run(wat, b""));
    assert!(error.contains("call stack exhausted"), "{error}");
}

#[test]
fn a_non_zero_exit_fails_with_the_code_and_the_end_of_stderr() {
    let wat = module(
        r#"(data (i32.const 16) "bad input: no name\n")
        (data (i32.const 64) "partial output")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 64))
          (i32.store (i32.const 4) (i32.const 14))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (i32.store (i32.const 0) (i32.const 16))
          (i32.store (i32.const 4) (i32.const 19))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
          (call $proc_exit (i32.const 3)))"#,
    );
    assert_eq!(
        failure(run(&wat, b"")),
        "exit code 3; stderr: bad input: no name"
    );
}

#[test]
fn exit_code_zero_succeeds_with_what_was_written() {
    let wat = module(
        r#"(data (i32.const 16) "done")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 16))
          (i32.store (i32.const 4) (i32.const 4))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (call $proc_exit (i32.const 0))
          unreachable)"#,
    );
    assert_eq!(text(run(&wat, b"")), "done");
}

#[test]
fn only_the_end_of_a_long_stderr_is_quoted() {
    let mut stderr = vec![b'x'; 5000];
    stderr.extend_from_slice("é the reason".as_bytes());
    let tail = stderr_tail(&stderr).unwrap();
    assert!(tail.ends_with("é the reason"), "{tail}");
    assert!(tail.starts_with("..."), "{tail}");
    assert!(tail.len() <= STDERR_TAIL_BYTES + 3);
    // Cut inside a character: no replacement character at the start.
    let mut cut = vec![b'x'; STDERR_TAIL_BYTES - 1];
    cut.extend_from_slice("éé".as_bytes());
    assert!(!stderr_tail(&cut).unwrap().contains('\u{fffd}'));
    assert_eq!(
        stderr_tail(b"\xff oops \n"),
        Some("\u{fffd} oops".to_string())
    );
    assert_eq!(stderr_tail(b" \n"), None);
}

/// A runtime on `runtime`'s engine (so sharing its instance slots) whose
/// `sched_yield` calls `on_yield`: a test module calls it to act at a known
/// point of its execution.
fn with_yield_hook(
    runtime: &WasmRuntime,
    on_yield: impl Fn() + Send + Sync + 'static,
) -> WasmRuntime {
    let engine = runtime.shared.engine.clone();
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).unwrap();
    linker.allow_shadowing(true);
    linker
        .func_wrap(WASI_MODULE, "sched_yield", move || {
            on_yield();
            0
        })
        .unwrap();
    let shared = Shared {
        config: runtime.shared.config.clone(),
        engine,
        linker,
        cache: Mutex::new(ModuleCache::new(1)),
        seeds: RandomState::new(),
        executions: AtomicU64::new(0),
    };
    WasmRuntime {
        shared: Arc::new(shared),
    }
}

#[test]
fn an_infinite_loop_ends_soon_after_its_stop() {
    // The stop fires from inside the execution, so it lands while wasm
    // code runs, deterministically.
    let stop = Stop::new();
    let trigger = stop.clone();
    let runtime = with_yield_hook(&runtime(), move || trigger.stop());
    let looping = compile(
        &runtime,
        r#"(module
            (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
            (func (export "_start")
              (drop (call $yield))
              (loop $forever (br $forever))))"#,
    );
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || done.send(looping.execute(Bytes::new(), &stop)));
    // Ends on the epoch ticker's next tick or so; the guard only catches a
    // hang.
    let result = result.recv_timeout(GUARD).expect("the loop was stopped");
    assert_eq!(result, Err(STOPPED.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_ends_and_a_stopped_execution_never_starts() {
    let runtime = runtime();
    let function = Function {
        language: "wasm".into(),
        code: binary(INFINITE_LOOP),
        ..Default::default()
    };
    let prepared = runtime.prepare(&function).await.unwrap();
    let stop = Stop::new();
    let running = tokio::spawn(prepared.run(Bytes::new(), stop.clone()));
    tokio::task::yield_now().await;
    stop.stop();
    let result = tokio::time::timeout(GUARD, running).await.unwrap().unwrap();
    assert_eq!(result, Err(STOPPED.to_string()));
    // Stopped before it starts: it never runs.
    let result = prepared.run(Bytes::new(), stop).await;
    assert_eq!(result, Err(STOPPED.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_execution_leaves_the_async_workers_free() {
    // The loop runs on a blocking thread: the async side (the worker's
    // stream and heartbeats) still makes progress while it spins.
    let runtime = runtime();
    let function = Function {
        language: "wasm".into(),
        code: binary(INFINITE_LOOP),
        ..Default::default()
    };
    let prepared = runtime.prepare(&function).await.unwrap();
    let stop = Stop::new();
    let spinning: Vec<_> = (0..4)
        .map(|_| tokio::spawn(prepared.run(Bytes::new(), stop.clone())))
        .collect();
    let echo = runtime
        .prepare(&Function {
            code: binary(ECHO),
            ..function.clone()
        })
        .await
        .unwrap();
    let out = tokio::time::timeout(GUARD, echo.run(Bytes::from_static(b"hi"), Stop::new()))
        .await
        .unwrap();
    assert_eq!(out, Ok(Bytes::from_static(b"hi")));
    stop.stop();
    for spinning in spinning {
        let result = tokio::time::timeout(GUARD, spinning)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, Err(STOPPED.to_string()));
    }
}

#[test]
fn a_memory_hog_fails_naming_the_memory_limit() {
    let error = failure(run(MEMORY_HOG, b""));
    assert!(error.starts_with("memory limit reached"), "{error}");
    assert!(error.contains("at most 64 MiB"), "{error}");
    assert!(error.contains("exit code 1"), "{error}");
    assert!(error.contains("memory.grow was refused"), "{error}");

    let small = WasmRuntime::new(WasmConfig {
        max_memory_bytes: 2 << 20,
        ..WasmConfig::default()
    })
    .unwrap();
    let error = failure(run_with(&small, MEMORY_HOG, b""));
    assert!(error.contains("at most 2 MiB"), "{error}");
}

#[test]
fn a_module_whose_memory_starts_over_the_limit_is_refused_when_prepared() {
    let small = WasmRuntime::new(WasmConfig {
        max_memory_bytes: 1 << 20,
        ..WasmConfig::default()
    })
    .unwrap();
    let code = binary(r#"(module (memory 17) (func (export "_start")))"#);
    let error = small.compile(&code).unwrap_err();
    assert!(error.starts_with("memory limit"), "{error}");
    assert!(error.contains("at most 1 MiB"), "{error}");
}

#[tokio::test]
async fn a_function_may_lower_its_memory_limit_but_not_raise_it() {
    let runtime = runtime();
    let function = |max_memory_bytes: u64| taskforge_proto::common::Function {
        function_id: "hog".into(),
        language: "wasm".into(),
        code: binary(MEMORY_HOG),
        max_memory_bytes,
        ..Default::default()
    };
    let lowered = runtime.prepare(&function(2 << 20)).await.unwrap();
    let error = lowered.run(Bytes::new(), Stop::new()).await.unwrap_err();
    assert!(error.contains("at most 2 MiB"), "{error}");
    // 0 is the worker's own limit.
    let default = runtime.prepare(&function(0)).await.unwrap();
    let error = default.run(Bytes::new(), Stop::new()).await.unwrap_err();
    assert!(error.contains("at most 64 MiB"), "{error}");
    let error = runtime.prepare(&function(1 << 30)).await.unwrap_err();
    assert!(
        error.contains("this worker allows at most 67108864"),
        "{error}"
    );
    // A module that starts larger than its function's own limit cannot run.
    let mut big = function(1 << 20);
    big.code = binary(r#"(module (memory 17) (func (export "_start")))"#);
    let error = runtime.prepare(&big).await.unwrap_err();
    assert!(error.contains("at most 1 MiB"), "{error}");
}

#[test]
fn too_much_output_fails_naming_the_limit() {
    let wat = module(
        r#"(func (export "_start")
          (i32.store (i32.const 0) (i32.const 1024))
          (i32.store (i32.const 4) (i32.const 60000))
          (loop $more
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (br $more)))"#,
    );
    let error = failure(run(&wat, b""));
    assert!(
        error.starts_with("the module wrote more than 1 MiB (1048576 bytes) to stdout"),
        "{error}"
    );
    let stderr = wat.replace("(i32.const 1) (i32.const 0)", "(i32.const 2) (i32.const 0)");
    let small = WasmRuntime::new(WasmConfig {
        max_output_bytes: 100_000,
        ..WasmConfig::default()
    })
    .unwrap();
    let error = failure(run_with(&small, &stderr, b""));
    assert!(
        error.starts_with("the module wrote more than 100000 bytes to stderr"),
        "{error}"
    );
}

#[test]
fn executions_do_not_see_each_others_state() {
    // Bumps a global and a byte of memory initialised by a data segment,
    // then prints both: every execution starts from the module's image.
    let counter = module(
        r#"(global $runs (mut i32) (i32.const 0))
        (data (i32.const 100) "0")
        (func (export "_start")
          (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
          (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
          (i32.store8 (i32.const 101) (i32.add (global.get $runs) (i32.const 48)))
          (i32.store (i32.const 0) (i32.const 100))
          (i32.store (i32.const 4) (i32.const 2))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#,
    );
    let runtime = runtime();
    let function = compile(&runtime, &counter);
    let stop = Stop::new();
    for _ in 0..3 {
        assert_eq!(
            function.execute(Bytes::new(), &stop).as_deref(),
            Ok(&b"11"[..])
        );
    }
}

/// Tries what a function must not do, printing what it got: a file's
/// content or the environment would appear in the output if a call
/// succeeded.
const PROBE: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "/etc/shadow")
  (data (i32.const 300) "path_open errno ")
  (data (i32.const 320) "environ count ")
  (data (i32.const 340) "fd_prestat_get errno ")
  (data (i32.const 370) "sock_accept errno ")
  (data (i32.const 390) "fd_read(3) errno ")
  (data (i32.const 410) "bad pointer errno ")
  (data (i32.const 432) "FILE:")
  (data (i32.const 440) "ENV:")

  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 48) (local.get $ptr))
    (i32.store (i32.const 52) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56))))
  ;; label, then the number in decimal, then a newline.
  (func $line (param $label i32) (param $len i32) (param $n i32)
    (local $p i32)
    (call $print (local.get $label) (local.get $len))
    (local.set $p (i32.const 96))
    (i32.store8 (i32.const 96) (i32.const 10))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    (call $print (local.get $p) (i32.sub (i32.const 97) (local.get $p))))

  (func (export "_start")
    (local $errno i32)
    ;; Open /etc/shadow from fd 3 (where a preopened directory would be).
    (local.set $errno (call $path_open (i32.const 3) (i32.const 0) (i32.const 256)
      (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))
    (call $line (i32.const 300) (i32.const 16) (local.get $errno))
    (if (i32.eqz (local.get $errno))
      (then
        (i32.store (i32.const 0) (i32.const 4096))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $fd_read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $print (i32.const 432) (i32.const 5))
        (call $print (i32.const 4096) (i32.load (i32.const 8)))))
    ;; The environment.
    (drop (call $environ_sizes_get (i32.const 20) (i32.const 24)))
    (call $line (i32.const 320) (i32.const 14) (i32.load (i32.const 20)))
    (if (i32.load (i32.const 20))
      (then
        (drop (call $environ_get (i32.const 8192) (i32.const 12288)))
        (call $print (i32.const 440) (i32.const 4))
        (call $print (i32.const 12288) (i32.load (i32.const 24)))))
    (call $line (i32.const 340) (i32.const 21)
      (call $fd_prestat_get (i32.const 3) (i32.const 32)))
    (call $line (i32.const 370) (i32.const 18)
      (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 36)))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 16))
    (call $line (i32.const 390) (i32.const 17)
      (call $fd_read (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; An iovec array past the end of memory.
    (call $line (i32.const 410) (i32.const 18)
      (call $fd_write (i32.const 1) (i32.const 0xfffffff0) (i32.const 1) (i32.const 8)))))"#;

/// The effective user id, from /proc (no libc: unsafe code is forbidden).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn files_environment_and_sockets_are_denied_even_as_root() {
    // Root could read /etc/shadow and has an environment: the module gets
    // neither, because the shim never reaches the host, whoever runs it.
    let root = effective_uid() == Some(0);
    let output = text(run(PROBE, b""));
    assert_eq!(
        output,
        "path_open errno 76\n\
         environ count 0\n\
         fd_prestat_get errno 8\n\
         sock_accept errno 76\n\
         fd_read(3) errno 8\n\
         bad pointer errno 21\n",
        "running as root: {root}"
    );
}

#[test]
fn every_wasi_preview1_function_is_linked_and_nothing_else() {
    let runtime = runtime();
    let mut store = Store::new(
        &runtime.shared.engine,
        Execution {
            wasi: WasiCtx::new(Bytes::new(), 1, 1),
            limits: Limits::new(1, 1),
        },
    );
    let linker = &runtime.shared.linker;
    for name in WASI_PREVIEW1 {
        assert!(
            linker.get(&mut store, WASI_MODULE, name).is_ok(),
            "{name} is not linked"
        );
    }
    let linked: Vec<_> = linker
        .iter(&mut store)
        .map(|(module, name, _)| (module.to_string(), name.to_string()))
        .collect();
    assert_eq!(linked.len(), WASI_PREVIEW1.len(), "{linked:?}");
    assert!(linked.iter().all(|(module, _)| module == WASI_MODULE));
}

#[test]
fn a_module_importing_every_wasi_function_links() {
    // The signatures the shim declares match what toolchains import.
    let imports: String = wasi_signatures()
        .iter()
        .map(|(name, params, results)| {
            format!(
                "(import \"{WASI_MODULE}\" \"{name}\" (func (param {params}) (result {results})))\n"
            )
        })
        .collect::<String>()
        .replace("(result )", "")
        .replace("(param )", "");
    let wat =
        format!("(module {imports} (memory (export \"memory\") 1) (func (export \"_start\")))");
    assert_eq!(text(run(&wat, b"")), "");
}

/// WASI preview 1's signatures, as wasi-libc and Rust's std import them.
fn wasi_signatures() -> Vec<(&'static str, String, &'static str)> {
    let lowered = [
        ("args_get", "ii"),
        ("args_sizes_get", "ii"),
        ("environ_get", "ii"),
        ("environ_sizes_get", "ii"),
        ("clock_res_get", "ii"),
        ("clock_time_get", "iIi"),
        ("fd_advise", "iIIi"),
        ("fd_allocate", "iII"),
        ("fd_close", "i"),
        ("fd_datasync", "i"),
        ("fd_fdstat_get", "ii"),
        ("fd_fdstat_set_flags", "ii"),
        ("fd_fdstat_set_rights", "iII"),
        ("fd_filestat_get", "ii"),
        ("fd_filestat_set_size", "iI"),
        ("fd_filestat_set_times", "iIIi"),
        ("fd_pread", "iiiIi"),
        ("fd_prestat_get", "ii"),
        ("fd_prestat_dir_name", "iii"),
        ("fd_pwrite", "iiiIi"),
        ("fd_read", "iiii"),
        ("fd_readdir", "iiiIi"),
        ("fd_renumber", "ii"),
        ("fd_seek", "iIii"),
        ("fd_sync", "i"),
        ("fd_tell", "ii"),
        ("fd_write", "iiii"),
        ("path_create_directory", "iii"),
        ("path_filestat_get", "iiiii"),
        ("path_filestat_set_times", "iiiiIIi"),
        ("path_link", "iiiiiii"),
        ("path_open", "iiiiiIIii"),
        ("path_readlink", "iiiiii"),
        ("path_remove_directory", "iii"),
        ("path_rename", "iiiiii"),
        ("path_symlink", "iiiii"),
        ("path_unlink_file", "iii"),
        ("poll_oneoff", "iiii"),
        ("proc_exit", "i"),
        ("proc_raise", "i"),
        ("sched_yield", ""),
        ("random_get", "ii"),
        ("sock_accept", "iii"),
        ("sock_recv", "iiiiii"),
        ("sock_send", "iiiii"),
        ("sock_shutdown", "ii"),
    ];
    assert_eq!(lowered.len(), WASI_PREVIEW1.len());
    lowered
        .into_iter()
        .map(|(name, params)| {
            let params = params
                .chars()
                .map(|kind| if kind == 'I' { "i64" } else { "i32" })
                .collect::<Vec<_>>()
                .join(" ");
            let results = if name == "proc_exit" { "" } else { "i32" };
            (name, params, results)
        })
        .collect()
}

#[test]
fn clocks_and_random_answer() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "clock_time_get"
        (func $time (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get"
        (func $random (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        ;; 0: realtime, 1: monotonic, 9: no such clock (EINVAL 28)
        (i32.store8 (i32.const 100) (call $time (i32.const 0) (i64.const 1) (i32.const 200)))
        (i32.store8 (i32.const 101) (call $time (i32.const 1) (i64.const 1) (i32.const 208)))
        (i32.store8 (i32.const 102) (call $time (i32.const 9) (i64.const 1) (i32.const 216)))
        (i32.store8 (i32.const 103) (call $random (i32.const 224) (i32.const 16)))
        (i32.store8 (i32.const 104) (call $random (i32.const 65530) (i32.const 16)))
        (i32.store (i32.const 0) (i32.const 100))
        (i32.store (i32.const 4) (i32.const 140))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let runtime = runtime();
    let function = compile(&runtime, wat);
    let first = function.execute(Bytes::new(), &Stop::new()).unwrap();
    let second = function.execute(Bytes::new(), &Stop::new()).unwrap();
    assert_eq!(&first[..5], &[0, 0, 28, 0, 21]);
    let realtime = u64::from_le_bytes(first[100..108].try_into().unwrap());
    // After 2020: a real clock.
    assert!(realtime > 1_577_836_800_000_000_000, "{realtime}");
    // 16 random bytes each time, different between executions.
    assert_ne!(first[124..140], second[124..140]);
}

#[test]
fn modules_that_cannot_run_are_refused_when_prepared() {
    let runtime = runtime();
    let refused = |code: Bytes| runtime.compile(&code).unwrap_err();
    let error = refused(Bytes::from_static(b"(module)"));
    assert!(error.contains("not a binary WebAssembly module"), "{error}");
    let error = refused(Bytes::from_static(b"\0asm\x01\0\0\0\x7f"));
    assert!(error.contains("does not compile"), "{error}");
    let error = refused(binary(r#"(module (func (export "run")))"#));
    assert!(error.contains("no `_start`"), "{error}");
    let error = refused(binary(r#"(module (func (export "_start") (param i32)))"#));
    assert!(error.contains("no `_start`"), "{error}");
    let error = refused(binary(
        r#"(module (import "env" "system" (func)) (func (export "_start")))"#,
    ));
    assert!(error.contains("cannot be linked"), "{error}");
    assert!(error.contains("system"), "{error}");
    let error = refused(binary(
        r#"(module (import "wasi_snapshot_preview1" "fd_read" (func)) (func (export "_start")))"#,
    ));
    assert!(error.contains("cannot be linked"), "{error}");
}

#[test]
fn a_wasi_call_without_memory_fails_saying_so() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (func (export "_start")
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let error = failure(run(wat, b""));
    assert!(error.contains("exports no memory"), "{error}");
}

#[tokio::test]
async fn a_function_defined_again_is_not_compiled_again() {
    let runtime = runtime();
    let function = Function {
        language: "wasm".into(),
        code: binary(ECHO),
        ..Default::default()
    };
    let first = runtime.compile(&function.code).unwrap();
    let again = runtime.compile(&function.code).unwrap();
    assert!(Module::same(
        first.compiled.pre.module(),
        again.compiled.pre.module()
    ));
    let prepared = runtime.prepare(&function).await.unwrap();
    assert_eq!(runtime.cached_modules(), 1);
    let out = prepared
        .run(Bytes::from_static(b"again"), Stop::new())
        .await;
    assert_eq!(out, Ok(Bytes::from_static(b"again")));
    runtime.compile(&binary(UPPERCASE)).unwrap();
    assert_eq!(runtime.cached_modules(), 2);
}

#[test]
fn more_executions_than_instance_slots_fail_to_start_saying_so() {
    let runtime = WasmRuntime::new(WasmConfig {
        max_instances: 1,
        ..WasmConfig::default()
    })
    .unwrap();
    // The host call runs while the execution holds the only slot: another
    // execution started from inside it finds none free.
    let echo = compile(&runtime, ECHO);
    let nested = echo.clone();
    let (sent, inner) = mpsc::channel();
    let outer = with_yield_hook(&runtime, move || {
        let _ = sent.send(nested.execute(Bytes::new(), &Stop::new()));
    });
    let yielding = r#"(module
        (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
        (func (export "_start") (drop (call $yield))))"#;
    assert_eq!(text(run_with(&outer, yielding, b"")), "");
    let error = inner.recv().unwrap().unwrap_err();
    assert!(error.contains("could not start"), "{error}");
    // Once the slot is free, executions start again.
    assert_eq!(
        text(echo.execute(Bytes::from_static(b"ok"), &Stop::new())),
        "ok"
    );
}

#[test]
fn every_example_passes_registration() {
    let languages = crate::languages::Languages::standard();
    for wat in [ECHO, UPPERCASE, SUM_AND_GREET, INFINITE_LOOP, MEMORY_HOG] {
        let (language, code) = languages
            .check("wasm", Bytes::copy_from_slice(wat.as_bytes()))
            .unwrap();
        assert_eq!(language, "wasm");
        assert!(runtime().compile(&code).is_ok());
    }
}

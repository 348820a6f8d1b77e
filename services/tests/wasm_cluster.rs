//! WebAssembly functions through the whole system: registration over HTTP
//! and gRPC, capability-aware dispatch between workers with different
//! runtimes, and the wasm runtime on real workers (timeouts, cancels and
//! limits while the worker keeps serving).

mod support;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use taskforge_proto::scheduler::{
    CancelExecutionRequest, GetClusterStatsRequest, RegisterFunctionRequest,
    TriggerExecutionRequest,
};
use taskforge_services::runtime::builtin::BuiltinRuntime;
use taskforge_services::runtime::wasm::{WasmConfig, WasmRuntime};
use taskforge_services::runtime::{Runtime, Runtimes};

use support::cluster::Running;
use support::watch::{Client, register, running, terminal, watch_until};

fn example(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn wasm_runtime() -> Arc<dyn Runtime> {
    Arc::new(WasmRuntime::new(WasmConfig::default()).expect("a wasmtime engine"))
}

fn builtin_and_wasm() -> Runtimes {
    Runtimes::new([
        Arc::new(BuiltinRuntime::new()) as Arc<dyn Runtime>,
        wasm_runtime(),
    ])
}

async fn start(workers: u32, pool_size: u32, runtimes: Runtimes) -> Running {
    Running::start("wasm-cluster", workers, pool_size, runtimes).await
}

async fn register_wasm(client: &mut Client, name: &str, code: &str, timeout_ms: u64) -> String {
    client
        .register_function(RegisterFunctionRequest {
            name: name.into(),
            language: "wasm".into(),
            code: Bytes::copy_from_slice(code.as_bytes()),
            timeout_ms,
            ..Default::default()
        })
        .await
        .expect("register a wasm function")
        .into_inner()
        .function_id
}

async fn trigger(client: &mut Client, request: TriggerExecutionRequest) -> String {
    client
        .trigger_execution(request)
        .await
        .expect("trigger")
        .into_inner()
        .execution_id
}

fn request(function_id: &str, payload: &str) -> TriggerExecutionRequest {
    TriggerExecutionRequest {
        function_id: function_id.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_execution_lands_on_a_worker_that_runs_its_runtime() {
    // The cluster's worker-1 runs builtins only; wasm-1 runs WebAssembly only.
    let mut c = start(1, 2, Runtimes::builtin()).await;
    c.add_worker("wasm-1", 2, Runtimes::new([wasm_runtime()]));
    c.workers_settle_at(2).await;
    let mut client = c.client();
    let builtin = register(&mut client, "echo").await;
    let wasm = register_wasm(&mut client, "echo", &example("echo.wat"), 0).await;

    let mut ids = Vec::new();
    for n in 0..10 {
        let payload = format!("\"{n}\"");
        ids.push((
            trigger(&mut client, request(&builtin, &payload)).await,
            "worker-1",
            payload.clone(),
        ));
        ids.push((
            trigger(&mut client, request(&wasm, &payload)).await,
            "wasm-1",
            payload,
        ));
    }
    for (id, worker, payload) in ids {
        let done = terminal(&mut client, &id).await;
        assert_eq!(done.status, "COMPLETED", "{id}: {}", done.error);
        assert_eq!(done.worker_id, worker, "{id} ran where its runtime is");
        assert_eq!(done.output, Bytes::from(payload));
    }
    let workers = c.workers().await;
    let runtimes: Vec<_> = workers
        .iter()
        .map(|w| (w.worker_id.as_str(), w.runtimes.clone()))
        .collect();
    assert!(
        runtimes.contains(&("worker-1", vec!["builtin".to_string()])),
        "{runtimes:?}"
    );
    assert!(
        runtimes.contains(&("wasm-1", vec!["wasm".to_string()])),
        "{runtimes:?}"
    );
}

#[tokio::test]
async fn the_seed_example_runs_as_webassembly_over_http() {
    let c = start(1, 2, builtin_and_wasm()).await;
    // WAT as `code`.
    let body = json!({"name": "greet", "language": "wasm", "code": example("sum_and_greet.wat")});
    let registered = c
        .call("POST", "/functions", &body.to_string())
        .await
        .ok(StatusCode::OK);
    let greet = registered["function_id"].as_str().unwrap().to_string();
    let done = c
        .call(
            "POST",
            &format!("/invoke/{greet}?wait=10s"),
            r#"{"name":"Ada","a":2,"b":3}"#,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["output"], json!({"message": "Hello Ada", "sum": 5}));

    // A binary module as `code_base64`.
    let binary = wat::parse_str(example("uppercase.wat")).unwrap();
    let body = json!({"name": "upper", "language": "wasm", "code_base64": BASE64.encode(&binary)});
    let registered = c
        .call("POST", "/functions", &body.to_string())
        .await
        .ok(StatusCode::OK);
    let upper = registered["function_id"].as_str().unwrap().to_string();
    let done = c
        .call("POST", &format!("/invoke/{upper}?wait=10s"), r#""hello""#)
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        done["output"], "HELLO",
        "the JSON string, uppercased: {done}"
    );

    // Modules no worker could run are refused at registration.
    for (code, expected) in [
        ("(module (func (export \"run\")))", "_start"),
        (
            "(module (import \"env\" \"f\" (func)) (func (export \"_start\")))",
            "WASI preview 1",
        ),
        ("(module (oops", "does not parse"),
    ] {
        let body = json!({"name": "bad", "language": "wasm", "code": code});
        let message = c
            .call("POST", "/functions", &body.to_string())
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_argument");
        assert!(message.contains(expected), "{code}: {message}");
    }
}

#[tokio::test]
async fn an_infinite_loop_times_out_while_the_worker_keeps_serving() {
    let c = start(1, 2, builtin_and_wasm()).await;
    let mut client = c.client();
    let looping = register_wasm(&mut client, "loop", &example("infinite_loop.wat"), 500).await;
    let sleep = register(&mut client, "sleep").await;
    let echo = register(&mut client, "echo").await;

    let stuck = trigger(&mut client, request(&looping, "null")).await;
    running(&mut client, &stuck).await;
    // The other slot keeps working while the module spins.
    let beside = trigger(&mut client, request(&sleep, "50")).await;
    assert_eq!(terminal(&mut client, &beside).await.status, "COMPLETED");

    let done = terminal(&mut client, &stuck).await;
    assert_eq!(done.status, "TIMED_OUT", "{}", done.error);
    assert_eq!(
        done.attempt, 1,
        "a timeout is the function's verdict, not a lost worker"
    );
    // The slot is free again and the worker is the same session.
    let after = trigger(&mut client, request(&echo, "\"still here\"")).await;
    let after = terminal(&mut client, &after).await;
    assert_eq!(after.status, "COMPLETED");
    let workers = c.workers().await;
    assert_eq!(workers.len(), 1);
    assert!(!workers[0].quarantined);
}

#[tokio::test]
async fn cancel_stops_a_running_module_and_frees_its_slot() {
    let c = start(1, 1, builtin_and_wasm()).await;
    let mut client = c.client();
    let looping = register_wasm(&mut client, "loop", &example("infinite_loop.wat"), 0).await;
    let stuck = trigger(&mut client, request(&looping, "null")).await;
    running(&mut client, &stuck).await;
    let echo = register(&mut client, "echo").await;
    let queued = trigger(&mut client, request(&echo, "\"next\"")).await;

    client
        .cancel_execution(CancelExecutionRequest {
            execution_id: stuck.clone(),
        })
        .await
        .unwrap();
    assert_eq!(terminal(&mut client, &stuck).await.status, "CANCELLED");
    // The only slot held the loop: the next execution runs once it stopped.
    let next = terminal(&mut client, &queued).await;
    assert_eq!(next.status, "COMPLETED");
    assert_eq!(next.output, Bytes::from_static(b"\"next\""));
}

#[tokio::test]
async fn a_memory_hog_fails_naming_the_limit() {
    let c = start(1, 1, builtin_and_wasm()).await;
    let mut client = c.client();
    let hog = register_wasm(&mut client, "hog", &example("memory_hog.wat"), 0).await;
    let id = trigger(&mut client, request(&hog, "null")).await;
    let done = terminal(&mut client, &id).await;
    assert_eq!(done.status, "FAILED");
    assert!(done.error.contains("memory"), "{}", done.error);
}

#[tokio::test]
async fn an_execution_no_worker_can_run_waits_then_fails_naming_the_runtime() {
    let c = start(1, 1, Runtimes::builtin()).await;
    let mut client = c.client();
    let wasm = register_wasm(&mut client, "echo", &example("echo.wat"), 0).await;
    let waiting = trigger(
        &mut client,
        TriggerExecutionRequest {
            schedule_to_start_timeout_ms: 300,
            ..request(&wasm, "null")
        },
    )
    .await;
    let stats = client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.queued_by_runtime.get("wasm"), Some(&1), "{stats:?}");
    let done = watch_until(
        &mut client,
        &waiting,
        "the end",
        support::watch::is_terminal,
    )
    .await;
    assert_eq!(done.status, "FAILED");
    assert!(
        done.error.contains("no connected worker runs wasm"),
        "{}",
        done.error
    );
    // Builtin work is not held up behind it.
    let echo = register(&mut client, "echo").await;
    let ran = trigger(&mut client, request(&echo, "1")).await;
    assert_eq!(terminal(&mut client, &ran).await.status, "COMPLETED");
}

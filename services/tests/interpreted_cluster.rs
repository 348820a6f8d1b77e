//! Python and JavaScript functions through the whole system: registered and
//! invoked over HTTP, run by real workers in real sandboxes, timed out and
//! cancelled while running, and dispatched only to workers that run their
//! language.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use taskforge_proto::scheduler::{
    CancelExecutionRequest, RegisterFunctionRequest, TriggerExecutionRequest,
};
use taskforge_services::runtime::builtin::BuiltinRuntime;
use taskforge_services::runtime::process::{Interpreter, Language, ProcessConfig, ProcessRuntime};
use taskforge_services::runtime::{Runtime, Runtimes};

use support::cluster::Running;
use support::watch::{Client, running, terminal};

async fn interpreted(language: Language) -> Arc<dyn Runtime> {
    let interpreter = Interpreter::find(language, language.default_command().as_ref())
        .unwrap_or_else(|error| panic!("these tests need {language}: {error}"));
    let config = ProcessConfig {
        warm: 1,
        ..ProcessConfig::new(env!("CARGO_BIN_EXE_taskforge").into())
    };
    Arc::new(
        ProcessRuntime::start(interpreter, config)
            .await
            .unwrap_or_else(|error| panic!("the {language} runtime: {error}")),
    )
}

async fn all_runtimes() -> Runtimes {
    Runtimes::new([
        Arc::new(BuiltinRuntime::new()) as Arc<dyn Runtime>,
        interpreted(Language::Python).await,
        interpreted(Language::JavaScript).await,
    ])
}

async fn start(workers: u32, pool_size: u32, runtimes: Runtimes) -> Running {
    Running::start("interpreted-cluster", workers, pool_size, runtimes).await
}

async fn register(client: &mut Client, language: &str, code: &str, timeout_ms: u64) -> String {
    client
        .register_function(RegisterFunctionRequest {
            name: format!("{language}-function"),
            language: language.into(),
            code: Bytes::copy_from_slice(code.as_bytes()),
            timeout_ms,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .function_id
}

async fn trigger(client: &mut Client, function_id: &str, payload: &str) -> String {
    client
        .trigger_execution(TriggerExecutionRequest {
            function_id: function_id.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        })
        .await
        .expect("trigger")
        .into_inner()
        .execution_id
}

fn example(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn the_seed_flow_over_http_in_python_and_javascript() {
    let c = start(2, 2, all_runtimes().await).await;
    for (language, file) in [("python", "hello.py"), ("javascript", "hello.js")] {
        let body = json!({"name": "hello", "language": language, "code": example(file)});
        let registered = c.call("POST", "/functions", &body.to_string()).await;
        let function_id = registered.ok(StatusCode::OK)["function_id"]
            .as_str()
            .unwrap()
            .to_string();
        let answer = c
            .call(
                "POST",
                &format!("/invoke/{function_id}?wait=30s"),
                r#"{"name":"Ada"}"#,
            )
            .await;
        let answer = answer.ok(StatusCode::OK);
        assert_eq!(answer["status"], "COMPLETED", "{language}: {answer}");
        assert_eq!(
            answer["output"],
            json!({"message": "Hello, Ada!"}),
            "{language}"
        );
        let id = answer["execution_id"].as_str().unwrap();
        let job = c
            .call("GET", &format!("/jobs/{id}"), "")
            .await
            .ok(StatusCode::OK);
        assert_eq!(job["logs"], "greeting Ada\n", "{language}: {job}");
    }
    // Registration refuses source with no handler, with a clear 400.
    let body = json!({"name": "x", "language": "python", "code": "def main(event):\n    pass\n"});
    let refused = c.call("POST", "/functions", &body.to_string()).await;
    let message = refused.error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(message.contains("defines no `handler`"), "{message}");
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_a_running_one_can_be_cancelled() {
    let c = start(1, 2, all_runtimes().await).await;
    let mut client = c.client();
    let looping_js = register(
        &mut client,
        "javascript",
        "exports.handler = () => { for (;;) {} };",
        1_000,
    )
    .await;
    let id = trigger(&mut client, &looping_js, "null").await;
    let done = terminal(&mut client, &id).await;
    assert_eq!(done.status, "TIMED_OUT", "{}", done.error);

    let looping_py = register(
        &mut client,
        "python",
        "def handler(event):\n    while True:\n        pass\n",
        600_000,
    )
    .await;
    let id = trigger(&mut client, &looping_py, "null").await;
    running(&mut client, &id).await;
    client
        .cancel_execution(CancelExecutionRequest {
            execution_id: id.clone(),
        })
        .await
        .expect("cancel");
    assert_eq!(terminal(&mut client, &id).await.status, "CANCELLED");

    // Both slots are free again, and the worker still runs functions.
    let hello = register(&mut client, "python", &example("hello.py"), 0).await;
    let ids = [
        trigger(&mut client, &hello, r#"{"name":"a"}"#).await,
        trigger(&mut client, &hello, r#"{"name":"b"}"#).await,
    ];
    for id in ids {
        let done = terminal(&mut client, &id).await;
        assert_eq!(done.status, "COMPLETED", "{}", done.error);
    }
}

#[tokio::test]
async fn a_worker_without_node_never_gets_javascript() {
    // worker-1 runs builtins and Python only; node-1 runs JavaScript too.
    let python_only = Runtimes::new([
        Arc::new(BuiltinRuntime::new()) as Arc<dyn Runtime>,
        interpreted(Language::Python).await,
    ]);
    let mut c = start(1, 2, python_only).await;
    c.add_worker("node-1", 2, all_runtimes().await);
    c.workers_settle_at(2).await;
    let mut client = c.client();
    let js = register(
        &mut client,
        "javascript",
        "exports.handler = (n) => n + 1;",
        0,
    )
    .await;
    let py = register(
        &mut client,
        "python",
        "def handler(n):\n    return n * 10\n",
        0,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push((
            trigger(&mut client, &js, &n.to_string()).await,
            json!(n + 1),
            Some("node-1"),
        ));
        ids.push((
            trigger(&mut client, &py, &n.to_string()).await,
            json!(n * 10),
            None,
        ));
    }
    let mut python_workers = std::collections::BTreeSet::new();
    for (id, expected, worker) in ids {
        let done = terminal(&mut client, &id).await;
        assert_eq!(done.status, "COMPLETED", "{id}: {}", done.error);
        let output: Value = serde_json::from_slice(&done.output).unwrap();
        assert_eq!(output, expected);
        match worker {
            Some(worker) => assert_eq!(done.worker_id, worker, "JavaScript ran where node is"),
            None => {
                python_workers.insert(done.worker_id);
            }
        }
    }
    assert!(python_workers.is_subset(&["node-1".to_string(), "worker-1".to_string()].into()));
}

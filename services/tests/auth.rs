//! Tokens on the real scheduler: the client API and the worker stream each
//! refuse a missing or wrong token with UNAUTHENTICATED (saying which token,
//! never the token), serve the right one, and keep serving the others; the
//! binaries refuse to listen beyond loopback unprotected.

mod support;

use std::process::Stdio;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use taskforge_proto::scheduler::{ListWorkersRequest, RegisterFunctionRequest};
use taskforge_services::auth::{self, Credentials, Token};
use taskforge_services::cluster::{Cluster, ClusterConfig};
use taskforge_services::runtime::Runtimes;
use taskforge_services::scheduler::SchedulerOptions;
use taskforge_services::worker::WorkerConfig;

use support::http::Call;
use support::processes::{TempDir, channel};

const API: &str = "api-token-for-tests";
const WORKERS: &str = "worker-token-for-tests";

async fn start(dir: &TempDir) -> Cluster {
    let api = Token::new(API).unwrap();
    let workers = Token::new(WORKERS).unwrap();
    let config = ClusterConfig {
        scheduler: SchedulerOptions {
            api_token: Some(api.clone()),
            worker_token: Some(workers.clone()),
            ..SchedulerOptions::default()
        },
        gateway: taskforge_services::gateway::GatewayConfig {
            api_token: Some(API.to_string()),
            ..Default::default()
        },
        worker: WorkerConfig {
            token: Some(workers),
            ..WorkerConfig::new("worker", 2)
        },
        ..support::cluster::loopback(dir, 1, 2)
    };
    Cluster::start(config).await.expect("start the cluster")
}

fn register() -> RegisterFunctionRequest {
    RegisterFunctionRequest {
        name: "echo".into(),
        language: "builtin".into(),
        code: Bytes::from_static(b"echo"),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_client_api_wants_its_token_and_never_echoes_one() {
    let dir = TempDir::new("auth-api");
    let cluster = start(&dir).await;
    let addr = cluster.grpc_addr;
    let client = |token: Option<&str>| {
        let token = token.map(|text| Token::new(text).unwrap());
        auth::scheduler_client(channel(addr), Credentials::new(token.as_ref()))
    };

    let missing = client(None)
        .register_function(register())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert!(
        missing.message().contains("requires the API token"),
        "{}",
        missing.message()
    );
    let wrong = client(Some("not-the-token"))
        .register_function(register())
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "wrong API token");
    // The worker token does not open the client API.
    let crossed = client(Some(WORKERS))
        .list_workers(ListWorkersRequest {})
        .await;
    assert_eq!(crossed.unwrap_err().code(), tonic::Code::Unauthenticated);

    let registered = client(Some(API)).register_function(register()).await;
    assert!(registered.is_ok(), "{registered:?}");

    // Through the gateway: its own check, and its calls carry the token on.
    let body = json!({"name": "echo", "language": "builtin", "code": "echo"}).to_string();
    let refused = Call::new("POST", "/functions")
        .json(body.clone())
        .send(cluster.http_addr)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let accepted = Call::new("POST", "/functions")
        .header("authorization", format!("Bearer {API}"))
        .json(body)
        .send(cluster.http_addr)
        .await;
    let function_id = accepted.ok(StatusCode::OK)["function_id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = Call::new("POST", format!("/invoke/{function_id}?wait=10s"))
        .header("authorization", format!("Bearer {API}"))
        .json(r#""hi""#)
        .send(cluster.http_addr)
        .await
        .ok(StatusCode::OK);
    assert_eq!(answer["status"], "COMPLETED", "{answer}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_worker_with_a_wrong_token_never_joins_and_the_others_keep_working() {
    let dir = TempDir::new("auth-worker");
    let cluster = start(&dir).await;
    let addr = cluster.grpc_addr;
    let api = Token::new(API).unwrap();
    let mut client = auth::scheduler_client(channel(addr), Credentials::new(Some(&api)));

    // A worker stream opened by hand with the wrong token is refused.
    let mut workers =
        taskforge_proto::worker::worker_service_client::WorkerServiceClient::with_interceptor(
            channel(addr),
            Credentials::new(Some(&Token::new("guess").unwrap())),
        );
    let hello = taskforge_proto::worker::WorkerMessage::default();
    let refused = workers
        .worker_stream(tokio_stream::iter([hello]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "wrong worker token");

    // A real worker with the wrong token keeps being refused; the cluster's
    // own worker (right token) is the only one listed and still runs work.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let intruder = WorkerConfig {
        token: Some(Token::new("guess").unwrap()),
        runtimes: Runtimes::builtin(),
        ..WorkerConfig::new("intruder", 2)
    };
    let intruding = tokio::spawn(taskforge_services::worker::run(
        intruder,
        channel(addr),
        taskforge_services::clock::system_clock(),
        async move {
            let _ = stopped.await;
        },
    ));
    let function_id = client
        .register_function(register())
        .await
        .unwrap()
        .into_inner()
        .function_id;
    for n in 0..5 {
        let id = client
            .trigger_execution(taskforge_proto::scheduler::TriggerExecutionRequest {
                function_id: function_id.clone(),
                payload: Bytes::from(format!("\"{n}\"")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .execution_id;
        let done =
            support::watch::watch_until(&mut client, &id, "done", support::watch::is_terminal)
                .await;
        assert_eq!(
            (done.status.as_str(), done.worker_id.as_str()),
            ("COMPLETED", "worker-1")
        );
    }
    let listed = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let ids: Vec<_> = listed.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["worker-1"]);
    let _ = stop.send(());
    intruding.await.unwrap().unwrap();
    cluster.shutdown().await;
}

#[test]
fn the_binaries_refuse_to_listen_beyond_loopback_unprotected() {
    let dir = TempDir::new("auth-exposure");
    let data = dir.path().to_str().unwrap();
    for args in [
        vec!["scheduler", "--grpc", "0.0.0.0:0", "--data-dir", data],
        vec![
            "scheduler",
            "--grpc",
            "0.0.0.0:0",
            "--data-dir",
            data,
            "--api-token",
            "a",
            "--worker-token",
            "b",
        ],
        vec!["gateway", "--http", "0.0.0.0:0"],
        vec![
            "up",
            "--grpc",
            "0.0.0.0:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--workers",
            "0",
        ],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskforge"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains("not loopback"), "{args:?}: {stderr}");
        assert!(stderr.contains("--insecure"), "{args:?}: {stderr}");
        assert!(stderr.contains("TLS"), "{args:?}: {stderr}");
    }
    // Without tokens the message names them too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskforge"))
        .args(["scheduler", "--grpc", "0.0.0.0:0", "--data-dir", data])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--api-token") && stderr.contains("--worker-token"),
        "{stderr}"
    );
    // A bad token is a clear error, not a start.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskforge"))
        .args([
            "scheduler",
            "--data-dir",
            data,
            "--worker-token",
            "has space",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--worker-token: the token may hold only printable ASCII"),
        "{stderr}"
    );
}

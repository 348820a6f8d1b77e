//! The whole cluster in one process on loopback — real scheduler, workers and
//! gateway over real TCP and gRPC, with the JSONL store on disk.

mod support;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use taskforge_proto::scheduler::{
    CancelExecutionRequest, GetClusterStatsRequest, GetExecutionStatusRequest, ListWorkersRequest,
};
use taskforge_services::cluster::Cluster;

use support::http::Call;
use support::processes::{TempDir, scheduler_client};
use support::watch::{Client, register, running, terminal, trigger};

struct Running {
    cluster: Cluster,
    _dir: TempDir,
}

async fn start(workers: u32, pool_size: u32) -> Running {
    let dir = TempDir::new("cluster");
    let config = support::cluster::loopback(&dir, workers, pool_size);
    let cluster = Cluster::start(config).await.expect("start the cluster");
    Running { cluster, _dir: dir }
}

impl Running {
    fn client(&self) -> Client {
        scheduler_client(self.cluster.grpc_addr)
    }

    async fn post(&self, path: &str, body: &str) -> support::http::Reply {
        Call::new("POST", path)
            .json(body)
            .send(self.cluster.http_addr)
            .await
    }

    async fn get(&self, path: &str) -> support::http::Reply {
        Call::new("GET", path).send(self.cluster.http_addr).await
    }
}

#[tokio::test]
async fn the_seed_flow_over_http() {
    let c = start(2, 4).await;
    let body = json!({"name": "greet", "language": "builtin", "code": "sum_and_greet"});
    let function_id = c
        .post("/functions", &body.to_string())
        .await
        .ok(StatusCode::OK)["function_id"]
        .as_str()
        .unwrap()
        .to_string();

    let accepted = c
        .post(
            &format!("/invoke/{function_id}"),
            r#"{"name":"Ada","a":2,"b":3}"#,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(accepted["status"], "ACCEPTED");
    let id = accepted["execution_id"].as_str().unwrap();

    let job = c
        .get(&format!("/jobs/{id}?wait=30s"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"], json!({"message": "Hello Ada", "sum": 5}));
    assert_eq!(job["attempt"], 1);

    // The same in one call.
    let job = c
        .post(
            &format!("/invoke/{function_id}?wait=30s"),
            r#"{"name":"Grace","a":40,"b":2}"#,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"message": "Hello Grace", "sum": 42}));
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn the_seed_flow_over_grpc() {
    let c = start(1, 2).await;
    let mut client = c.client();
    let function_id = register(&mut client, "sum_and_greet").await;
    let id = trigger(&mut client, &function_id, r#"{"name":"Ada","a":2,"b":3}"#).await;
    terminal(&mut client, &id).await;
    let status = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, "COMPLETED");
    let output: Value = serde_json::from_slice(&status.output).unwrap();
    assert_eq!(output, json!({"message": "Hello Ada", "sum": 5}));
    assert_eq!(status.error, "");

    let unknown = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: "0000000000000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.status, "NOT_FOUND", "as the seed answered");
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn a_failing_function_ends_failed_with_its_error() {
    let c = start(1, 1).await;
    let mut client = c.client();
    let function_id = register(&mut client, "fail").await;
    let id = trigger(&mut client, &function_id, r#""out of coffee""#).await;
    let info = terminal(&mut client, &id).await;
    assert_eq!(info.status, "FAILED");
    assert!(info.error.contains("out of coffee"), "{}", info.error);
    assert_eq!(info.attempt, 1, "a function's own failure is not retried");
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn an_attempt_past_its_timeout_ends_timed_out() {
    let c = start(1, 1).await;
    let mut client = c.client();
    let function_id = register(&mut client, "sleep").await;
    let request = taskforge_proto::scheduler::TriggerExecutionRequest {
        function_id,
        payload: Bytes::from_static(b"60000"),
        timeout_ms: 100,
        ..Default::default()
    };
    let id = client
        .trigger_execution(request)
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let info = terminal(&mut client, &id).await;
    assert_eq!(info.status, "TIMED_OUT");
    assert_eq!(info.error, "timed out after 100ms");
    assert_eq!(info.attempt, 1, "the function's verdict: not retried");
    let stats = client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.timed_out, 1);
    let page = c.get("/jobs?status=TIMED_OUT").await.ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["status"], "TIMED_OUT", "{page}");
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn workers_times_pool_size_run_at_once_and_the_next_one_waits() {
    let (workers, pool) = (2, 2);
    // No prefetch: the fifth execution waits in the scheduler's queue
    // rather than on a worker's.
    let dir = TempDir::new("cluster");
    let mut config = support::cluster::loopback(&dir, workers, pool);
    config.scheduler.core.prefetch = 0;
    let cluster = Cluster::start(config).await.expect("start the cluster");
    let c = Running { cluster, _dir: dir };
    let mut client = c.client();
    let sleep = register(&mut client, "sleep").await;
    let mut ids = Vec::new();
    for _ in 0..workers * pool + 1 {
        ids.push(trigger(&mut client, &sleep, "600000").await);
    }
    let (first, last) = ids.split_at(ids.len() - 1);
    for id in first {
        running(&mut client, id).await;
    }
    let stats = client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.capacity, stats.in_flight), (4, 4));
    assert_eq!((stats.running, stats.pending), (4, 1));
    // Least-loaded dispatch spread the work evenly.
    let listed = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    let loads: Vec<_> = listed.workers.iter().map(|w| w.in_flight).collect();
    assert_eq!(loads, [2, 2]);

    // Freeing one slot starts the one that waited.
    let cancelled = client
        .cancel_execution(CancelExecutionRequest {
            execution_id: first[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "CANCELLED");
    running(&mut client, &last[0]).await;

    for id in &ids[1..] {
        client
            .cancel_execution(CancelExecutionRequest {
                execution_id: id.clone(),
            })
            .await
            .unwrap();
    }
    for id in &ids {
        assert_eq!(terminal(&mut client, id).await.status, "CANCELLED");
    }
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn bad_input_to_the_real_scheduler_gets_clear_errors() {
    let c = start(1, 1).await;
    let cobol = json!({"name": "x", "language": "cobol", "code": "DISPLAY 'HI'."});
    let message = c
        .post("/functions", &cobol.to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(
        message.contains("builtin, javascript, python, wasm"),
        "lists the supported: {message}"
    );
    let no_handler = json!({"name": "x", "language": "python", "code": "print(1)"});
    let message = c
        .post("/functions", &no_handler.to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(message.contains("defines no `handler`"), "{message}");

    let unknown_handler = json!({"name": "x", "language": "builtin", "code": "teleport"});
    let message = c
        .post("/functions", &unknown_handler.to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(message.contains("echo"), "lists the handlers: {message}");

    c.post("/invoke/0123456789abcdef", "{}")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    c.get("/jobs/0123456789abcdef")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");

    let echo = json!({"name": "e", "language": "builtin", "code": "echo"});
    let function_id = c
        .post("/functions", &echo.to_string())
        .await
        .ok(StatusCode::OK)["function_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = c
        .post(&format!("/invoke/{function_id}?wait=30s"), r#"{"k":[1,2]}"#)
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"k": [1, 2]}));
    let id = job["execution_id"].as_str().unwrap();
    c.post(&format!("/jobs/{id}/cancel"), "")
        .await
        .error(StatusCode::CONFLICT, "failed_precondition");

    let mut client = c.client();
    let huge = Bytes::from(vec![b'1'; (1 << 20) + 1]);
    let refused = client
        .trigger_execution(taskforge_proto::scheduler::TriggerExecutionRequest {
            function_id: function_id.clone(),
            payload: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("limit"), "{}", refused.message());

    // Still serving.
    assert_eq!(c.get("/health").await.ok(StatusCode::OK)["status"], "ok");
    c.cluster.shutdown().await;
}

#[tokio::test]
async fn trigger_and_watch_follows_one_execution_in_one_call() {
    let c = start(1, 2).await;
    let mut client = c.client();
    let function_id = register(&mut client, "sum_and_greet").await;
    let request = taskforge_proto::scheduler::TriggerExecutionRequest {
        function_id: function_id.clone(),
        payload: Bytes::from_static(br#"{"name":"Ada","a":2,"b":3}"#),
        ..Default::default()
    };
    let mut stream = client
        .trigger_and_watch_execution(request)
        .await
        .expect("accepted")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(info) = stream.message().await.expect("a healthy stream") {
        seen.push(info);
    }
    let first = seen.first().expect("the accepted state");
    assert!(!first.execution_id.is_empty());
    assert!(
        seen.iter()
            .all(|info| info.execution_id == first.execution_id)
    );
    let last = seen.last().unwrap();
    assert_eq!(
        last.status, "COMPLETED",
        "the stream ends after the terminal state"
    );
    let output: Value = serde_json::from_slice(&last.output).unwrap();
    assert_eq!(output, json!({"message": "Hello Ada", "sum": 5}));
    let statuses: Vec<_> = seen.iter().map(|info| info.status.as_str()).collect();
    let mut deduped = statuses.clone();
    deduped.dedup();
    assert_eq!(statuses, deduped, "each state once: {statuses:?}");

    let unknown = taskforge_proto::scheduler::TriggerExecutionRequest {
        function_id: "0123456789abcdef".into(),
        ..Default::default()
    };
    let refused = client
        .trigger_and_watch_execution(unknown)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    c.cluster.shutdown().await;
}

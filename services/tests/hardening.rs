//! The defects an audit of v1 found, each reproduced against the whole cluster
//! in one process on loopback (real scheduler, workers and gateway over real
//! TCP, the JSONL store on disk) and shown fixed.

mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use taskforge_proto::scheduler::{
    DeleteFunctionRequest, GetClusterStatsRequest, GetExecutionStatusRequest,
    ListExecutionsRequest, ListFunctionsRequest, ListWorkersRequest, RegisterFunctionRequest,
    TriggerExecutionRequest, WatchExecutionRequest,
};
use taskforge_proto::worker::worker_message::Message;
use taskforge_proto::worker::{SchedulerMessage, WorkerHeartbeat, WorkerHello, WorkerMessage};
use taskforge_services::cluster::{Cluster, ClusterConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use support::http::Call;
use support::processes::{TempDir, scheduler_client, worker_client};
use support::watch::{Client, GUARD, is_terminal, register, running, terminal, trigger};

struct Running {
    cluster: Cluster,
    dir: TempDir,
}

fn config(dir: &TempDir, workers: u32, pool_size: u32) -> ClusterConfig {
    support::cluster::loopback(dir, workers, pool_size)
}

async fn start_with(dir: TempDir, config: ClusterConfig) -> Running {
    let cluster = Cluster::start(config).await.expect("start the cluster");
    Running { cluster, dir }
}

async fn start(workers: u32, pool_size: u32) -> Running {
    let dir = TempDir::new("hardening");
    let config = config(&dir, workers, pool_size);
    start_with(dir, config).await
}

impl Running {
    fn client(&self) -> Client {
        scheduler_client(self.cluster.grpc_addr)
    }

    async fn get(&self, path: &str) -> support::http::Reply {
        Call::new("GET", path).send(self.cluster.http_addr).await
    }

    async fn watchers(&self) -> u64 {
        let mut client = self.client();
        let stats = client.get_cluster_stats(GetClusterStatsRequest {}).await;
        stats.expect("stats").into_inner().watchers
    }

    /// Asks for the watch count until it is `wanted`: dropped watches are
    /// reported by their streams as they close, asynchronously.
    async fn watchers_settle_at(&self, wanted: u64) {
        let settle = async {
            while self.watchers().await != wanted {
                tokio::task::yield_now().await;
            }
        };
        if tokio::time::timeout(GUARD, settle).await.is_err() {
            panic!(
                "{} watches still open, expected {wanted}",
                self.watchers().await
            );
        }
    }
}

fn request(function_id: &str, payload: Bytes, key: &str) -> TriggerExecutionRequest {
    TriggerExecutionRequest {
        function_id: function_id.to_string(),
        payload,
        idempotency_key: key.to_string(),
        ..Default::default()
    }
}

/// A JSON string payload of `len` bytes in all.
fn big_json_string(len: usize) -> Bytes {
    Bytes::from(format!("\"{}\"", "x".repeat(len - 2)))
}

/// A worker speaking the protocol by hand: says hello, then heartbeats (if
/// asked) and never answers anything it is given.
struct FakeWorker {
    outbound: mpsc::Sender<WorkerMessage>,
    inbound: Streaming<SchedulerMessage>,
}

async fn fake_worker(c: &Running, id: &str, pool_size: u32) -> Result<FakeWorker, tonic::Status> {
    let (outbound, messages) = mpsc::channel(16);
    let hello = WorkerHello {
        worker_id: id.to_string(),
        pool_size,
        caches_functions: true,
        runtimes: vec![],
        holding: vec![],
    };
    outbound
        .send(WorkerMessage {
            message: Some(Message::Hello(hello)),
        })
        .await
        .unwrap();
    let mut client = worker_client(c.cluster.grpc_addr);
    let inbound = client
        .worker_stream(ReceiverStream::new(messages))
        .await?
        .into_inner();
    Ok(FakeWorker { outbound, inbound })
}

impl FakeWorker {
    /// Heartbeats every `every` and swallows whatever arrives, until dropped
    /// with the returned handle.
    fn black_hole(self, every: Duration) -> tokio::task::JoinHandle<()> {
        let FakeWorker {
            outbound,
            mut inbound,
        } = self;
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        let heartbeat = WorkerHeartbeat {
                            worker_id: "hole".into(),
                            running_tasks: 0,
                            queued_tasks: 0,
                        };
                        let message = WorkerMessage { message: Some(Message::Heartbeat(heartbeat)) };
                        if outbound.send(message).await.is_err() {
                            return;
                        }
                    }
                    message = inbound.message() => {
                        if !matches!(message, Ok(Some(_))) {
                            return;
                        }
                    }
                }
            }
        })
    }
}

// 1. Code is capped at registration; a function's code goes to a worker once
//    per stream, so a large function with a large payload no longer breaks the
//    worker's stream (and with it other clients' work).
#[tokio::test]
async fn large_code_with_a_large_payload_runs_without_harming_other_work() {
    let c = start(1, 8).await;
    let mut client = c.client();

    let too_big = RegisterFunctionRequest {
        name: "huge".into(),
        language: "builtin".into(),
        code: Bytes::from(format!("echo{}", " ".repeat(1 << 20))),
        ..Default::default()
    };
    let refused = client.register_function(too_big).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("code is 1048580 bytes; the limit is 1048576"),
        "{}",
        refused.message()
    );

    // The audit's case: 900 KB of code, a 300 KB payload, six sleeps running
    // beside it on the same worker.
    let large = RegisterFunctionRequest {
        name: "padded".into(),
        language: "builtin".into(),
        code: Bytes::from(format!("echo{}", " ".repeat(900_000))),
        ..Default::default()
    };
    let padded = client.register_function(large).await.unwrap().into_inner();
    let sleep = register(&mut client, "sleep").await;
    let mut sleeps = Vec::new();
    for _ in 0..6 {
        let id = trigger(&mut client, &sleep, "300").await;
        running(&mut client, &id).await;
        sleeps.push(id);
    }
    let payload = big_json_string(300_000);
    for _ in 0..2 {
        let id = client
            .trigger_execution(request(&padded.function_id, payload.clone(), ""))
            .await
            .unwrap()
            .into_inner()
            .execution_id;
        let done = terminal(&mut client, &id).await;
        assert_eq!(done.status, "COMPLETED", "{}", done.error);
        assert_eq!(done.output, payload);
    }
    for id in sleeps {
        let done = terminal(&mut client, &id).await;
        assert_eq!(done.status, "COMPLETED", "{}", done.error);
        assert_eq!(done.attempt, 1, "no worker was lost");
    }
}

// 2. Read routes work on legitimate data: outputs are carried once, listings
//    are paged by size as well as count, functions can be deleted.
#[tokio::test]
async fn large_outputs_stay_readable_and_listings_page_by_size() {
    let c = start(2, 4).await;
    let mut client = c.client();
    let echo = register(&mut client, "echo").await;
    let payload = big_json_string(600_000);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = client
            .trigger_execution(request(&echo, payload.clone(), ""))
            .await
            .unwrap()
            .into_inner()
            .execution_id;
        assert_eq!(terminal(&mut client, &id).await.status, "COMPLETED");
        ids.push(id);
    }
    ids.sort();

    let status = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.output, payload);
    assert!(status.info.unwrap().output.is_empty(), "carried once");
    let job = c.get(&format!("/jobs/{}", ids[0])).await.ok(StatusCode::OK);
    assert_eq!(job["output"].as_str().unwrap().len(), 600_000 - 2);

    // Two 600 KB outputs do not fit one response: pages of one, then done.
    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_executions(ListExecutionsRequest {
                limit: 100,
                after_execution_id: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.executions.len() <= 1,
            "{} in one page",
            page.executions.len()
        );
        listed.extend(page.executions.into_iter().map(|e| e.execution_id));
        if page.next_after_execution_id.is_empty() {
            break;
        }
        after = page.next_after_execution_id;
    }
    assert_eq!(listed, ids);
    let page = c.get("/jobs").await.ok(StatusCode::OK);
    assert!(page["next_after"].is_string(), "{page}");

    // Functions whose code totals over a response page: listed in pages too.
    for name in ["big-1", "big-2"] {
        let big = RegisterFunctionRequest {
            name: name.into(),
            language: "builtin".into(),
            code: Bytes::from(format!("echo{}", " ".repeat(700_000))),
            ..Default::default()
        };
        client.register_function(big).await.unwrap();
    }
    let mut functions = 0;
    let mut after = String::new();
    loop {
        let page = client
            .list_functions(ListFunctionsRequest {
                limit: 0,
                after_function_id: after.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        functions += page.functions.len();
        if page.next_after_function_id.is_empty() {
            break;
        }
        after = page.next_after_function_id;
    }
    assert_eq!(functions, 3);
    c.get("/functions").await.ok(StatusCode::OK);
}

#[tokio::test]
async fn a_function_is_deleted_only_once_nothing_of_it_is_live() {
    let c = start(1, 1).await;
    let mut client = c.client();
    let sleep = register(&mut client, "sleep").await;
    let id = trigger(&mut client, &sleep, "200").await;
    let delete = |function_id: &str| DeleteFunctionRequest {
        function_id: function_id.to_string(),
    };
    let refused = client.delete_function(delete(&sleep)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("1 executions pending or running")
    );
    assert_eq!(terminal(&mut client, &id).await.status, "COMPLETED");

    client.delete_function(delete(&sleep)).await.unwrap();
    let gone = client
        .trigger_execution(request(&sleep, Bytes::from_static(b"1"), ""))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client.delete_function(delete(&sleep)).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    // Its finished execution is still there to read.
    assert_eq!(terminal(&mut client, &id).await.status, "COMPLETED");
}

// 3. Dead watches are dropped as their clients go, and watches are capped.
#[tokio::test]
async fn abandoned_watches_do_not_pile_up() {
    let c = start(1, 1).await;
    let mut client = c.client();
    let sleep = register(&mut client, "sleep").await;
    // One long sleep holds the only slot and two more fill the worker's
    // prefetch (default 2): the next execution stays PENDING.
    for _ in 0..3 {
        trigger(&mut client, &sleep, "60000").await;
    }
    let pending = trigger(&mut client, &sleep, "1").await;

    let mut streams = Vec::new();
    for _ in 0..200 {
        let stream = client
            .watch_execution(WatchExecutionRequest {
                execution_id: pending.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    c.watchers_settle_at(200).await;
    drop(streams);
    c.watchers_settle_at(0).await;

    // The gateway's long polls that time out leave nothing behind either.
    for _ in 0..100 {
        let job = c
            .get(&format!("/jobs/{pending}?wait=1ms"))
            .await
            .ok(StatusCode::OK);
        assert_eq!(job["status"], "PENDING");
    }
    c.watchers_settle_at(0).await;
}

#[tokio::test]
async fn watches_beyond_the_limits_are_refused() {
    let dir = TempDir::new("hardening-watch-cap");
    let mut config = config(&dir, 1, 1);
    config.scheduler.max_watchers_per_execution = 3;
    let c = start_with(dir, config).await;
    let mut client = c.client();
    let sleep = register(&mut client, "sleep").await;
    let _busy = trigger(&mut client, &sleep, "60000").await;
    let pending = trigger(&mut client, &sleep, "1").await;
    let watch = || WatchExecutionRequest {
        execution_id: pending.clone(),
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(client.watch_execution(watch()).await.unwrap().into_inner());
    }
    let refused = client.watch_execution(watch()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let reply = c.get(&format!("/jobs/{pending}?wait=10s")).await;
    reply.error(StatusCode::TOO_MANY_REQUESTS, "too_many_watches");
    drop(open);
    c.watchers_settle_at(0).await;
    client.watch_execution(watch()).await.unwrap();
}

/// A trigger that asks to watch what it starts, with every watch taken, still
/// learns what it started: the first state (its id) comes, and the stream
/// ends after it; over HTTP, `POST /invoke?wait=` answers 202 with the id.
#[tokio::test]
async fn a_trigger_and_watch_at_the_watch_cap_still_names_its_execution() {
    let dir = TempDir::new("hardening-trigger-watch-cap");
    let mut config = config(&dir, 1, 1);
    config.scheduler.max_watchers = 2;
    let c = start_with(dir, config).await;
    let mut client = c.client();
    let sleep = register(&mut client, "sleep").await;
    let long = trigger(&mut client, &sleep, "60000").await;
    let watch = || WatchExecutionRequest {
        execution_id: long.clone(),
    };
    let _open = [
        client.watch_execution(watch()).await.unwrap().into_inner(),
        client.watch_execution(watch()).await.unwrap().into_inner(),
    ];
    let refused = client.watch_execution(watch()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    let request = TriggerExecutionRequest {
        function_id: sleep.clone(),
        payload: Bytes::from_static(b"60000"),
        ..Default::default()
    };
    let mut stream = client
        .trigger_and_watch_execution(request)
        .await
        .expect("accepted although no watch is free")
        .into_inner();
    let first = stream.message().await.unwrap().expect("the first state");
    assert!(!first.execution_id.is_empty());
    assert!(!is_terminal(&first), "{}", first.status);
    assert!(stream.message().await.unwrap().is_none(), "ends after it");

    let reply = Call::new("POST", format!("/invoke/{sleep}?wait=10s"))
        .json("60000")
        .send(c.cluster.http_addr)
        .await;
    let job = reply.ok(StatusCode::ACCEPTED);
    let id = job["execution_id"].as_str().expect("an id");
    assert_eq!(reply.headers["location"], format!("/jobs/{id}").as_str());
}

// 4. A worker that takes work and never answers: its attempts time out on
//    the scheduler's side, are retried on the real workers, and the black hole
//    is quarantined.
#[tokio::test]
async fn a_black_hole_worker_is_quarantined_and_its_work_finishes_elsewhere() {
    let dir = TempDir::new("hardening-black-hole");
    let mut config = config(&dir, 2, 4);
    config.scheduler.core.timeout_grace = Duration::from_millis(200);
    let c = start_with(dir, config).await;
    let mut client = c.client();
    let hole = fake_worker(&c, "hole", 4096).await.unwrap();
    let _hole = hole.black_hole(Duration::from_millis(100));
    let echo = client
        .register_function(RegisterFunctionRequest {
            name: "echo".into(),
            language: "builtin".into(),
            code: Bytes::from_static(b"echo"),
            timeout_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .function_id;
    // The black hole has by far the most free slots: it gets all of these.
    let mut ids = Vec::new();
    for n in 0..20 {
        let payload = Bytes::from(n.to_string());
        let id = client
            .trigger_execution(request(&echo, payload, ""))
            .await
            .unwrap()
            .into_inner()
            .execution_id;
        ids.push((id, n));
    }
    for (id, n) in &ids {
        let done = terminal(&mut client, id).await;
        assert_eq!(done.status, "COMPLETED", "{id}: {}", done.error);
        assert_eq!(done.output, Bytes::from(n.to_string()));
        assert_ne!(done.worker_id, "hole");
        assert!(done.attempt >= 2, "{id} ran first on the black hole");
    }
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let hole = workers.iter().find(|w| w.worker_id == "hole").unwrap();
    assert!(hole.quarantined, "{hole:?}");
    assert!(
        workers
            .iter()
            .filter(|w| w.worker_id != "hole")
            .all(|w| !w.quarantined)
    );
    let metrics = c.get("/metrics").await.text();
    assert!(
        metrics.contains("taskforge_worker_quarantined{worker=\"hole\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_second_live_connection_under_a_worker_id_is_refused() {
    let c = start(1, 1).await;
    let first = fake_worker(&c, "twin", 1).await.unwrap();
    let _first = first.black_hole(Duration::from_millis(100));
    let refused = fake_worker(&c, "twin", 1).await.err().expect("refused");
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(
        refused.message().contains("already connected"),
        "{}",
        refused.message()
    );
}

// 7. Worker ids that would need escaping anywhere are refused at hello.
#[tokio::test]
async fn worker_ids_cannot_inject_metrics() {
    let c = start(1, 1).await;
    let evil = "evil\"} 1\ntaskforge_injected_total 1337";
    let refused = fake_worker(&c, evil, 1).await.err().expect("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let metrics = c.get("/metrics").await.text();
    assert!(!metrics.contains("taskforge_injected_total"));
}

// 8a. A retried trigger with the same idempotency key returns the same
//     execution, across a restart too; a reused key for another request is
//     refused.
#[tokio::test]
async fn idempotency_keys_make_retries_safe_across_a_restart() {
    let c = start(1, 2).await;
    let mut client = c.client();
    let echo = register(&mut client, "echo").await;
    let payload = Bytes::from_static(b"{\"order\":42}");
    let first = client
        .trigger_execution(request(&echo, payload.clone(), "order-42"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let retry = client
        .trigger_execution(request(&echo, payload.clone(), "order-42"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    assert_eq!(first, retry);
    let other = client
        .trigger_execution(request(
            &echo,
            Bytes::from_static(b"{\"order\":43}"),
            "order-42",
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    assert!(is_terminal(&terminal(&mut client, &first).await));

    // Over HTTP, with the header.
    let http = Call::new("POST", format!("/invoke/{echo}"))
        .json(r#"{"order":42}"#)
        .header("idempotency-key", "order-42")
        .send(c.cluster.http_addr)
        .await
        .ok(StatusCode::OK);
    assert_eq!(http["execution_id"], json!(first));

    let Running { cluster, dir } = c;
    cluster.shutdown().await;
    let config = config(&dir, 1, 2);
    let c = start_with(dir, config).await;
    let mut client = c.client();
    let after_restart = client
        .trigger_execution(request(&echo, payload, "order-42"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    assert_eq!(after_restart, first, "the key survives a restart");
}

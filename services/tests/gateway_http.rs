//! The HTTP gateway end to end over real loopback sockets: a fake in-memory
//! `SchedulerService` served by tonic, the gateway's router in front of it, and
//! a plain HTTP/1.1 client (hyper's connection API).
//!
//! The fake decides each execution's fate from its function's `code`: `echo`
//! returns the payload, `text` returns UTF-8 text, `binary` returns bytes that
//! are not UTF-8, `huge` returns more than the gateway's client may decode,
//! `fail` fails, and `hang` stays PENDING for ever. Its watch sends PENDING,
//! RUNNING, then the final state (or, for `hang`, PENDING and nothing more).
//! It can be switched to answer every call with RESOURCE_EXHAUSTED or
//! UNAVAILABLE, or to refuse only watches.
//!
//! Like today's scheduler, it answers GetExecutionStatus with the output and
//! error at the top level only (or, switched, in `info` only, as an older
//! one might); it honours idempotency keys, refuses to delete a function with
//! live executions, and pages listings by `limit` and by a page bound that
//! stands in for the scheduler's size and scan bounds.
//!
//! Nothing here sleeps or measures time: a wait that must run out waits on an
//! execution that never finishes.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header;
use serde_json::{Value, json};
use support::http::{Call, Reply};
use taskforge_proto::common::{ExecutionInfo, Function};
use taskforge_proto::scheduler::scheduler_service_client::SchedulerServiceClient;
use taskforge_proto::scheduler::scheduler_service_server::{
    SchedulerService, SchedulerServiceServer,
};
use taskforge_proto::scheduler::{
    CancelExecutionRequest, CancelExecutionResponse, ClusterStats, DeleteFunctionRequest,
    DeleteFunctionResponse, GetClusterStatsRequest, GetExecutionStatusRequest,
    GetExecutionStatusResponse, GetFunctionRequest, ListExecutionsRequest, ListExecutionsResponse,
    ListFunctionsRequest, ListFunctionsResponse, ListWorkersRequest, ListWorkersResponse,
    RegisterFunctionRequest, RegisterFunctionResponse, TriggerExecutionRequest,
    TriggerExecutionResponse, WatchExecutionRequest, WorkerInfo,
};
use taskforge_services::gateway::{self, GatewayConfig};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

// ---------------------------------------------------------------------------
// The fake scheduler.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Normal,
    QueueFull,
    Down,
}

/// Where GetExecutionStatus puts the output and error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum StatusShape {
    /// Top-level `output`/`error` only; `info`'s left empty (today's scheduler).
    #[default]
    TopLevel,
    /// In `info` only, top level empty.
    InfoOnly,
}

/// How the fake refuses watches (while everything else works).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WatchRefusal {
    /// The call itself fails.
    AtCall,
    /// The stream opens, then fails before its first state.
    InStream,
}

const WATCH_REFUSAL: &str = "too many watches: 64 open on this execution";

/// What the fake remembers of a trigger with an idempotency key.
#[derive(Debug)]
struct Keyed {
    function_id: String,
    payload: Bytes,
    execution_id: String,
}

#[derive(Debug, Default)]
struct FakeState {
    mode: Mode,
    functions: BTreeMap<String, Function>,
    /// Function ids handed out so far (deleted ones are not reused).
    functions_registered: usize,
    executions: BTreeMap<String, ExecutionInfo>,
    /// Every trigger the fake accepted, as received.
    triggers: Vec<TriggerExecutionRequest>,
    /// Executions started under an idempotency key.
    keys: HashMap<String, Keyed>,
    /// GetExecutionStatus calls: `?wait=` must not poll.
    status_calls: usize,
    status_shape: StatusShape,
    watch_refusal: Option<WatchRefusal>,
    /// Every ListFunctions request, as received.
    function_lists: Vec<ListFunctionsRequest>,
    /// Most items a listing looks at per page, whatever the `limit`: a page
    /// may end short, or empty, with a cursor.
    page_bound: Option<usize>,
    /// Workers listed after the two regular ones.
    extra_workers: Vec<WorkerInfo>,
}

#[derive(Clone, Debug, Default)]
struct Fake(Arc<Mutex<FakeState>>);

const BUILTINS: [&str; 6] = ["echo", "text", "binary", "huge", "fail", "hang"];
const TEXT_OUTPUT: &[u8] = b"hello, world";
const BINARY_OUTPUT: &[u8] = &[0xff, 0xfe, 0x00, 0x01];
/// Over the 4 MiB a tonic client decodes by default.
const HUGE_OUTPUT_BYTES: usize = 5 << 20;

fn is_live(info: &ExecutionInfo) -> bool {
    matches!(info.status.as_str(), "PENDING" | "RUNNING")
}

/// A page of `candidates` (in id order, after the cursor): up to `limit`
/// items that pass `keep`, looking at no more than `bound` candidates. The
/// cursor is the last candidate looked at, when any candidate left would pass.
fn fake_page<T: Clone>(
    candidates: impl Iterator<Item = (String, T)>,
    keep: impl Fn(&T) -> bool,
    limit: u32,
    bound: Option<usize>,
) -> (Vec<T>, String) {
    let limit = if limit == 0 { 100 } else { limit as usize };
    let bound = bound.unwrap_or(usize::MAX);
    let mut candidates = candidates.peekable();
    let (mut items, mut looked_at, mut last) = (Vec::new(), 0, String::new());
    while items.len() < limit && looked_at < bound {
        let Some((id, item)) = candidates.next() else {
            break;
        };
        looked_at += 1;
        last = id;
        if keep(&item) {
            items.push(item);
        }
    }
    let more = candidates.any(|(_, item)| keep(&item));
    (items, if more { last } else { String::new() })
}

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    /// Fails the call if the fake has been told to.
    fn gate(&self) -> Result<std::sync::MutexGuard<'_, FakeState>, Status> {
        let state = self.state();
        match state.mode {
            Mode::Normal => Ok(state),
            Mode::QueueFull => Err(Status::resource_exhausted(
                "queue full: 100 executions are waiting",
            )),
            Mode::Down => Err(Status::unavailable("the scheduler is restarting")),
        }
    }
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<ExecutionInfo, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for Fake {
    async fn register_function(
        &self,
        request: Request<RegisterFunctionRequest>,
    ) -> Result<Response<RegisterFunctionResponse>, Status> {
        let mut state = self.gate()?;
        let request = request.into_inner();
        if request.language != "builtin" {
            return Err(Status::invalid_argument(format!(
                "unsupported language {:?}; supported: builtin",
                request.language
            )));
        }
        let code = String::from_utf8_lossy(&request.code).into_owned();
        if !BUILTINS.contains(&code.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown builtin {code:?}; known: {}",
                BUILTINS.join(", ")
            )));
        }
        state.functions_registered += 1;
        let function_id = format!("f-{:04}", state.functions_registered);
        state.functions.insert(
            function_id.clone(),
            Function {
                function_id: function_id.clone(),
                name: request.name,
                language: request.language,
                code: request.code,
                timeout_ms: request.timeout_ms,
                max_attempts: request.max_attempts,
            },
        );
        Ok(Response::new(RegisterFunctionResponse { function_id }))
    }

    async fn trigger_execution(
        &self,
        request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<TriggerExecutionResponse>, Status> {
        let mut state = self.gate()?;
        let request = request.into_inner();
        let Some(function) = state.functions.get(&request.function_id) else {
            return Err(Status::not_found(format!(
                "no function with id {:?}",
                request.function_id
            )));
        };
        if let Some(keyed) = state.keys.get(&request.idempotency_key) {
            if keyed.function_id != request.function_id || keyed.payload != request.payload {
                return Err(Status::already_exists(format!(
                    "idempotency key {:?} was used for another function or payload",
                    request.idempotency_key
                )));
            }
            let execution_id = keyed.execution_id.clone();
            state.triggers.push(request);
            return Ok(Response::new(TriggerExecutionResponse {
                execution_id,
                status: "ACCEPTED".into(),
            }));
        }
        let execution_id = format!("e-{:04}", state.executions.len() + 1);
        let mut info = ExecutionInfo {
            execution_id: execution_id.clone(),
            function_id: request.function_id.clone(),
            status: "COMPLETED".into(),
            attempt: 1,
            worker_id: "w-1".into(),
            created_at_us: 1_000_000,
            started_at_us: 1_000_500,
            finished_at_us: 1_002_000,
            ..ExecutionInfo::default()
        };
        match &*function.code {
            b"echo" => info.output = request.payload.clone(),
            b"text" => info.output = Bytes::from_static(TEXT_OUTPUT),
            b"binary" => info.output = Bytes::from_static(BINARY_OUTPUT),
            b"huge" => info.output = Bytes::from(vec![b'x'; HUGE_OUTPUT_BYTES]),
            b"fail" => {
                info.status = "FAILED".into();
                info.error = "boom".into();
            }
            _ => {
                info.status = "PENDING".into();
                info.attempt = 0;
                info.worker_id = String::new();
                info.started_at_us = 0;
                info.finished_at_us = 0;
            }
        }
        state.executions.insert(execution_id.clone(), info);
        if !request.idempotency_key.is_empty() {
            let keyed = Keyed {
                function_id: request.function_id.clone(),
                payload: request.payload.clone(),
                execution_id: execution_id.clone(),
            };
            state.keys.insert(request.idempotency_key.clone(), keyed);
        }
        state.triggers.push(request);
        Ok(Response::new(TriggerExecutionResponse {
            execution_id,
            status: "ACCEPTED".into(),
        }))
    }

    async fn get_execution_status(
        &self,
        request: Request<GetExecutionStatusRequest>,
    ) -> Result<Response<GetExecutionStatusResponse>, Status> {
        let mut state = self.gate()?;
        state.status_calls += 1;
        let id = request.into_inner().execution_id;
        match state.executions.get(&id) {
            Some(info) => {
                let mut response = GetExecutionStatusResponse {
                    status: info.status.clone(),
                    info: Some(info.clone()),
                    ..GetExecutionStatusResponse::default()
                };
                if state.status_shape == StatusShape::TopLevel {
                    response.output = info.output.clone();
                    response.error = info.error.clone();
                    response.info = Some(ExecutionInfo {
                        output: Bytes::new(),
                        error: String::new(),
                        ..info.clone()
                    });
                }
                Ok(Response::new(response))
            }
            // The seed's way of saying "unknown".
            None if id.starts_with("seed-") => Ok(Response::new(GetExecutionStatusResponse {
                status: "NOT_FOUND".into(),
                ..GetExecutionStatusResponse::default()
            })),
            None => Err(Status::not_found(format!("no execution with id {id:?}"))),
        }
    }

    type TriggerAndWatchExecutionStream = InfoStream;

    /// The gateway does not use it.
    async fn trigger_and_watch_execution(
        &self,
        _request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type WatchExecutionStream = InfoStream;

    async fn watch_execution(
        &self,
        request: Request<WatchExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        let state = self.gate()?;
        let id = request.into_inner().execution_id;
        match state.watch_refusal {
            Some(WatchRefusal::AtCall) => return Err(Status::resource_exhausted(WATCH_REFUSAL)),
            Some(WatchRefusal::InStream) => {
                let refused = tokio_stream::iter([Err(Status::resource_exhausted(WATCH_REFUSAL))]);
                return Ok(Response::new(Box::pin(refused)));
            }
            None => {}
        }
        let Some(info) = state.executions.get(&id).cloned() else {
            return Err(Status::not_found(format!("no execution with id {id:?}")));
        };
        let pending = ExecutionInfo {
            status: "PENDING".into(),
            output: Bytes::new(),
            error: String::new(),
            attempt: 0,
            worker_id: String::new(),
            started_at_us: 0,
            finished_at_us: 0,
            ..info.clone()
        };
        if info.status == "PENDING" || info.status == "RUNNING" {
            // Never finishes: the current state, then silence.
            let stream = tokio_stream::StreamExt::chain(
                tokio_stream::iter([Ok(pending)]),
                tokio_stream::pending(),
            );
            return Ok(Response::new(Box::pin(stream)));
        }
        let running = ExecutionInfo {
            status: "RUNNING".into(),
            attempt: 1,
            worker_id: "w-1".into(),
            started_at_us: info.started_at_us,
            ..pending.clone()
        };
        let states = [Ok(pending), Ok(running), Ok(info)];
        Ok(Response::new(Box::pin(tokio_stream::iter(states))))
    }

    async fn list_functions(
        &self,
        request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let mut state = self.gate()?;
        let request = request.into_inner();
        let after = request.after_function_id.clone();
        let candidates = state
            .functions
            .values()
            .filter(|function| function.function_id > after)
            .map(|function| (function.function_id.clone(), function.clone()));
        let (functions, next) = fake_page(candidates, |_| true, request.limit, state.page_bound);
        state.function_lists.push(request);
        Ok(Response::new(ListFunctionsResponse {
            functions,
            next_after_function_id: next,
        }))
    }

    async fn delete_function(
        &self,
        request: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        let mut state = self.gate()?;
        let id = request.into_inner().function_id;
        if !state.functions.contains_key(&id) {
            return Err(Status::not_found(format!("function {id:?} not found")));
        }
        let live = state
            .executions
            .values()
            .filter(|info| info.function_id == id && is_live(info))
            .count();
        if live > 0 {
            return Err(Status::failed_precondition(format!(
                "function {id:?} has {live} execution(s) still pending or running"
            )));
        }
        state.functions.remove(&id);
        Ok(Response::new(DeleteFunctionResponse {}))
    }

    async fn get_function(
        &self,
        request: Request<GetFunctionRequest>,
    ) -> Result<Response<Function>, Status> {
        let state = self.gate()?;
        let id = request.into_inner().function_id;
        state
            .functions
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no function with id {id:?}")))
    }

    async fn list_executions(
        &self,
        request: Request<ListExecutionsRequest>,
    ) -> Result<Response<ListExecutionsResponse>, Status> {
        let state = self.gate()?;
        let request = request.into_inner();
        let candidates = state
            .executions
            .values()
            .filter(|info| info.execution_id > request.after_execution_id)
            .map(|info| (info.execution_id.clone(), info.clone()));
        let keep = |info: &ExecutionInfo| {
            (request.status.is_empty() || info.status == request.status)
                && (request.function_id.is_empty() || info.function_id == request.function_id)
        };
        let (executions, next) = fake_page(candidates, keep, request.limit, state.page_bound);
        Ok(Response::new(ListExecutionsResponse {
            executions,
            next_after_execution_id: next,
        }))
    }

    async fn cancel_execution(
        &self,
        request: Request<CancelExecutionRequest>,
    ) -> Result<Response<CancelExecutionResponse>, Status> {
        let mut state = self.gate()?;
        let id = request.into_inner().execution_id;
        let Some(info) = state.executions.get_mut(&id) else {
            return Err(Status::not_found(format!("no execution with id {id:?}")));
        };
        if matches!(info.status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED") {
            return Err(Status::failed_precondition(format!(
                "execution {id} has already finished ({})",
                info.status
            )));
        }
        info.status = "CANCELLED".into();
        Ok(Response::new(CancelExecutionResponse {
            status: "CANCELLED".into(),
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let state = self.gate()?;
        let regular = [
            WorkerInfo {
                worker_id: "w-1".into(),
                pool_size: 4,
                in_flight: 3,
                reported_running: 2,
                draining: false,
                connected_at_us: 5,
                last_heartbeat_at_us: 6,
                ..WorkerInfo::default()
            },
            WorkerInfo {
                worker_id: "w-2".into(),
                pool_size: 8,
                in_flight: 0,
                reported_running: 0,
                draining: true,
                connected_at_us: 7,
                last_heartbeat_at_us: 0,
                quarantined: true,
                timeouts_in_a_row: 3,
                runtimes: vec!["builtin".into(), "wasm".into()],
            },
        ];
        let workers = regular
            .into_iter()
            .chain(state.extra_workers.iter().cloned());
        Ok(Response::new(ListWorkersResponse {
            workers: workers.collect(),
        }))
    }

    async fn get_cluster_stats(
        &self,
        _request: Request<GetClusterStatsRequest>,
    ) -> Result<Response<ClusterStats>, Status> {
        let _state = self.gate()?;
        Ok(Response::new(ClusterStats {
            workers: 2,
            capacity: 12,
            in_flight: 3,
            queued: 5,
            pending: 5,
            running: 3,
            completed: 40,
            failed: 2,
            timed_out: 4,
            cancelled: 1,
            queue_limit: 100,
            watchers: 7,
            quarantined_workers: 1,
            queued_by_runtime: [("builtin".to_string(), 5)].into_iter().collect(),
        }))
    }
}

// ---------------------------------------------------------------------------
// Harness: fake scheduler + gateway on loopback, and an HTTP/1.1 client.

struct Harness {
    gateway: SocketAddr,
    scheduler: SocketAddr,
    fake: Fake,
}

async fn start(config: GatewayConfig) -> Harness {
    let fake = Fake::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheduler = listener.local_addr().unwrap();
    let server = Server::builder()
        .add_service(SchedulerServiceServer::new(fake.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let gateway = start_gateway(scheduler, config).await;
    Harness {
        gateway,
        scheduler,
        fake,
    }
}

/// A gateway whose scheduler is at `scheduler`.
async fn start_gateway(scheduler: SocketAddr, config: GatewayConfig) -> SocketAddr {
    let channel = Endpoint::from_shared(format!("http://{scheduler}"))
        .unwrap()
        .connect_lazy();
    let router = gateway::router(SchedulerServiceClient::new(channel), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve(listener, router, std::future::pending()));
    addr
}

fn test_config() -> GatewayConfig {
    GatewayConfig {
        body_limit: 16 * 1024,
        ..GatewayConfig::default()
    }
}

impl Harness {
    async fn get(&self, path: &str) -> Reply {
        Call::new("GET", path).send(self.gateway).await
    }

    async fn post(&self, path: &str, body: &str) -> Reply {
        Call::new("POST", path).json(body).send(self.gateway).await
    }

    async fn register(&self, code: &str) -> String {
        let body = json!({"name": format!("{code}-fn"), "language": "builtin", "code": code});
        let reply = self.post("/functions", &body.to_string()).await;
        reply.ok(StatusCode::OK)["function_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn invoke(&self, function_id: &str, payload: &str) -> String {
        let reply = self.post(&format!("/invoke/{function_id}"), payload).await;
        let body = reply.ok(StatusCode::OK);
        assert_eq!(body["status"], "ACCEPTED");
        body["execution_id"].as_str().unwrap().to_string()
    }

    /// The gateway still answers normal requests.
    async fn assert_serving(&self) {
        let reply = self.get("/health").await;
        assert_eq!(reply.ok(StatusCode::OK), json!({"status": "ok"}));
    }
}

// ---------------------------------------------------------------------------
// The seed's flow.

#[tokio::test]
async fn seed_flow_register_invoke_get_job() {
    let h = start(test_config()).await;
    h.assert_serving().await;

    let function_id = h.register("echo").await;
    let payload = r#"{"name": "Ada", "a": 2, "b": 3, "big": 12345678901234567890123}"#;
    let execution_id = h.invoke(&function_id, payload).await;
    // The payload reaches the scheduler byte for byte.
    assert_eq!(h.fake.state().triggers[0].payload, payload.as_bytes());

    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["execution_id"], execution_id);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"]["name"], "Ada");
    assert_eq!(job["output"]["a"], 2);
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["function_id"], function_id);
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["worker_id"], "w-1");
    assert_eq!(job["created_at_us"], 1_000_000);
    assert_eq!(job["finished_at_us"], 1_002_000);
    assert!(job.get("output_encoding").is_none());
}

#[tokio::test]
async fn empty_invoke_body_is_the_null_payload() {
    let h = start(test_config()).await;
    let function_id = h.register("echo").await;
    let reply = Call::new("POST", format!("/invoke/{function_id}"))
        .send(h.gateway)
        .await;
    let execution_id = reply.ok(StatusCode::OK)["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.fake.state().triggers[0].payload, "null".as_bytes());
    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], Value::Null);
}

#[tokio::test]
async fn invoke_options_and_function_options_reach_the_scheduler() {
    let h = start(test_config()).await;
    let body =
        r#"{"name":"slow","language":"builtin","code":"echo","timeout_ms":2500,"max_attempts":5}"#;
    let function_id = h.post("/functions", body).await.ok(StatusCode::OK)["function_id"]
        .as_str()
        .unwrap()
        .to_string();
    let function = h
        .get(&format!("/functions/{function_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        function,
        json!({"function_id": function_id, "name": "slow", "language": "builtin",
               "code": "echo", "timeout_ms": 2500, "max_attempts": 5})
    );

    h.post(
        &format!("/invoke/{function_id}?timeout_ms=100&max_attempts=2"),
        "{}",
    )
    .await
    .ok(StatusCode::OK);
    let state = h.fake.state();
    assert_eq!(state.triggers[0].timeout_ms, 100);
    assert_eq!(state.triggers[0].max_attempts, 2);
}

// ---------------------------------------------------------------------------
// ?wait=

#[tokio::test]
async fn invoke_with_wait_answers_the_finished_job() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let fail = h.register("fail").await;

    let reply = h
        .post(&format!("/invoke/{echo}?wait=30s"), r#"{"x": [1, 2]}"#)
        .await;
    let job = reply.ok(StatusCode::OK);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"], json!({"x": [1, 2]}));
    assert!(job["execution_id"].as_str().unwrap().starts_with("e-"));

    let job = h
        .post(&format!("/invoke/{fail}?wait=30s"), "{}")
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"], "boom");
    assert_eq!(job["output"], Value::Null);

    // Waiting rides on the watch stream: the status RPC was never called.
    assert_eq!(h.fake.state().status_calls, 0);

    // Both end-to-end latencies were observed (2 ms each, from the timestamps).
    let metrics = h.get("/metrics").await.text();
    for line in [
        "taskforge_gateway_execution_latency_seconds_count{status=\"COMPLETED\"} 1",
        "taskforge_gateway_execution_latency_seconds_count{status=\"FAILED\"} 1",
        "taskforge_gateway_execution_latency_seconds_sum{status=\"COMPLETED\"} 0.002",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn invoke_with_a_wait_that_runs_out_answers_202_with_the_current_state() {
    let h = start(test_config()).await;
    let hang = h.register("hang").await;
    let reply = h.post(&format!("/invoke/{hang}?wait=20ms"), "1").await;
    let job = reply.ok(StatusCode::ACCEPTED);
    assert_eq!(job["status"], "PENDING");
    let execution_id = job["execution_id"].as_str().unwrap();
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/jobs/{execution_id}")
    );
    assert_eq!(job["finished_at_us"], Value::Null);
}

#[tokio::test]
async fn get_job_with_wait_long_polls_until_terminal() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, r#""hi""#).await;
    let stuck = h.invoke(&hang, "{}").await;

    // The watch sends PENDING and RUNNING before COMPLETED.
    let job = h
        .get(&format!("/jobs/{done}?wait=30s"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"], "hi");

    let job = h
        .get(&format!("/jobs/{stuck}?wait=10ms"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["execution_id"], stuck);

    // `0s` answers at once with the current state.
    let job = h
        .get(&format!("/jobs/{stuck}?wait=0s"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");

    assert_eq!(h.fake.state().status_calls, 0);
}

#[tokio::test]
async fn waits_are_capped_at_max_wait() {
    let h = start(GatewayConfig {
        max_wait: Duration::from_millis(20),
        ..test_config()
    })
    .await;
    let hang = h.register("hang").await;
    let stuck = h.invoke(&hang, "{}").await;
    // An hour, capped to 20 ms: answers with the current state.
    let job = h
        .get(&format!("/jobs/{stuck}?wait=1h"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
    let reply = h.post(&format!("/invoke/{hang}?wait=1h"), "{}").await;
    assert_eq!(reply.ok(StatusCode::ACCEPTED)["status"], "PENDING");
}

#[tokio::test]
async fn bad_wait_values_are_400() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let done = h.invoke(&echo, "{}").await;
    for wait in ["soon", "500", "5d", "-1s", ""] {
        let message = h
            .get(&format!("/jobs/{done}?wait={wait}"))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(message.contains("`wait`"), "{message}");
        let message = h
            .post(&format!("/invoke/{echo}?wait={wait}"), "{}")
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(message.contains("`wait`"), "{message}");
    }
    // Nothing was triggered by the refused invokes.
    assert_eq!(h.fake.state().triggers.len(), 1);
}

// ---------------------------------------------------------------------------
// Output decoding.

#[tokio::test]
async fn outputs_are_decoded_as_json_text_or_base64() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let text = h.register("text").await;
    let binary = h.register("binary").await;

    let job = h
        .post(
            &format!("/invoke/{echo}?wait=30s"),
            r#"{"message":"Hello Ada","sum":5}"#,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"message": "Hello Ada", "sum": 5}));
    assert!(job.get("output_encoding").is_none());

    let job = h
        .post(&format!("/invoke/{text}?wait=30s"), "{}")
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], "hello, world");
    assert!(job.get("output_encoding").is_none());

    let execution_id = h.invoke(&binary, "{}").await;
    let job = h
        .get(&format!("/jobs/{execution_id}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(job["output"], "//4AAQ==");
    assert_eq!(job["output_encoding"], "base64");
}

// ---------------------------------------------------------------------------
// Beyond the seed.

#[tokio::test]
async fn listing_inspection_and_cancellation() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let e1 = h.invoke(&echo, "1").await;
    let e2 = h.invoke(&echo, "2").await;
    let stuck = h.invoke(&hang, "3").await;

    let functions = h.get("/functions").await.ok(StatusCode::OK);
    let names: Vec<&str> = functions["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo-fn", "hang-fn"]);
    assert_eq!(functions["next_after"], Value::Null);
    let function = h
        .get(&format!("/functions/{hang}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(function["code"], "hang");
    assert_eq!(function["timeout_ms"], Value::Null);

    // Filtered and paged.
    let page = h
        .get(&format!(
            "/jobs?status=completed&function_id={echo}&limit=1"
        ))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"].as_array().unwrap().len(), 1);
    assert_eq!(page["executions"][0]["execution_id"], e1);
    assert_eq!(page["next_after"], e1);
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=1&after={e1}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], e2);
    assert_eq!(page["executions"][0]["output"], 2);
    assert_eq!(page["next_after"], Value::Null);
    let page = h.get("/jobs?status=PENDING").await.ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], stuck);

    // Cancel a pending execution; cancelling it again conflicts.
    let reply = Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await;
    assert_eq!(
        reply.ok(StatusCode::OK),
        json!({"execution_id": stuck, "status": "CANCELLED"})
    );
    let message = Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await
        .error(StatusCode::CONFLICT, "failed_precondition");
    assert!(message.contains("already finished"), "{message}");

    let workers = h.get("/workers").await.ok(StatusCode::OK);
    assert_eq!(
        workers["workers"][0],
        json!({"worker_id": "w-1", "pool_size": 4, "in_flight": 3, "reported_running": 2,
               "draining": false, "quarantined": false, "timeouts_in_a_row": 0,
               "runtimes": null, "connected_at_us": 5, "last_heartbeat_at_us": 6})
    );
    assert_eq!(workers["workers"][1]["draining"], true);
    assert_eq!(workers["workers"][1]["quarantined"], true);
    assert_eq!(workers["workers"][1]["timeouts_in_a_row"], 3);
    assert_eq!(workers["workers"][1]["last_heartbeat_at_us"], Value::Null);
    assert_eq!(
        workers["workers"][1]["runtimes"],
        json!(["builtin", "wasm"])
    );

    let stats = json!({"workers": 2, "capacity": 12, "in_flight": 3, "queued": 5,
        "queued_by_runtime": {"builtin": 5}, "queue_limit": 100, "quarantined_workers": 1,
        "watchers": 7, "executions": {"pending": 5, "running": 3, "completed": 40,
        "failed": 2, "timed_out": 4, "cancelled": 1}});
    assert_eq!(h.get("/stats").await.ok(StatusCode::OK), stats);
    assert_eq!(
        h.get("/ready").await.ok(StatusCode::OK),
        json!({"status": "ready", "stats": stats})
    );
}

#[tokio::test]
async fn metrics_expose_cluster_and_gateway_series() {
    let h = start(test_config()).await;
    h.get("/health").await;
    h.get("/jobs/e-missing").await;
    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = reply.text();
    for line in [
        "taskforge_scheduler_up 1",
        "taskforge_workers 2",
        "taskforge_capacity_slots 12",
        "taskforge_in_flight 3",
        "taskforge_queue_depth 5",
        "taskforge_queue_limit 100",
        "taskforge_executions{state=\"COMPLETED\"} 40",
        "taskforge_executions{state=\"PENDING\"} 5",
        "taskforge_worker_pool_size{worker=\"w-1\"} 4",
        "taskforge_worker_pool_size{worker=\"w-2\"} 8",
        "taskforge_worker_in_flight{worker=\"w-1\"} 3",
        "taskforge_worker_reported_running{worker=\"w-1\"} 2",
        "taskforge_worker_draining{worker=\"w-2\"} 1",
        "taskforge_worker_quarantined{worker=\"w-1\"} 0",
        "taskforge_worker_quarantined{worker=\"w-2\"} 1",
        "taskforge_quarantined_workers 1",
        "taskforge_watchers 7",
        "taskforge_worker_ids_rejected 0",
        "taskforge_gateway_http_request_duration_seconds_count{method=\"GET\",route=\"/health\",status=\"2xx\"} 1",
        "taskforge_gateway_http_request_duration_seconds_count{method=\"GET\",route=\"/jobs/{execution_id}\",status=\"4xx\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_valid_exposition(&text);
}

#[tokio::test]
async fn delete_function_is_204_then_404_and_409_while_executions_live() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    h.invoke(&echo, "{}").await;
    let stuck = h.invoke(&hang, "{}").await;

    // Finished executions do not hold a function.
    let reply = Call::new("DELETE", format!("/functions/{echo}"))
        .send(h.gateway)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    assert!(!reply.headers.contains_key(header::CONTENT_TYPE));
    h.get(&format!("/functions/{echo}"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let message = Call::new("DELETE", format!("/functions/{echo}"))
        .send(h.gateway)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains(&echo), "{message}");

    // A pending execution does: 409 with the scheduler's reason.
    let message = Call::new("DELETE", format!("/functions/{hang}"))
        .send(h.gateway)
        .await
        .error(StatusCode::CONFLICT, "failed_precondition");
    assert!(message.contains("still pending or running"), "{message}");
    assert!(h.fake.state().functions.contains_key(&hang));

    Call::new("POST", format!("/jobs/{stuck}/cancel"))
        .send(h.gateway)
        .await
        .ok(StatusCode::OK);
    let reply = Call::new("DELETE", format!("/functions/{hang}"))
        .send(h.gateway)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(h.fake.state().functions.is_empty());
}

#[tokio::test]
async fn function_listing_pages_by_limit_and_cursor() {
    let h = start(test_config()).await;
    let ids = [
        h.register("echo").await,
        h.register("text").await,
        h.register("fail").await,
    ];
    let page_ids = |page: &Value| -> Vec<String> {
        page["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function_id"].as_str().unwrap().to_string())
            .collect()
    };

    let page = h.get("/functions?limit=2").await.ok(StatusCode::OK);
    assert_eq!(page_ids(&page), ids[..2]);
    assert_eq!(page["next_after"], ids[1]);
    let page = h
        .get(&format!("/functions?limit=2&after={}", ids[1]))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page_ids(&page), ids[2..]);
    assert_eq!(page["next_after"], Value::Null);

    // Parameters reach the scheduler as given; absent ones are its defaults.
    h.get("/functions").await.ok(StatusCode::OK);
    {
        let state = h.fake.state();
        let sent: Vec<(u32, &str)> = state
            .function_lists
            .iter()
            .map(|r| (r.limit, r.after_function_id.as_str()))
            .collect();
        assert_eq!(sent, [(2, ""), (2, ids[1].as_str()), (0, "")]);
    }

    // A page the scheduler ends early (by size) is shorter than the limit
    // and still has its cursor; following it reaches every function.
    h.fake.state().page_bound = Some(1);
    let mut seen = Vec::new();
    let mut url = "/functions?limit=10".to_string();
    loop {
        let page = h.get(&url).await.ok(StatusCode::OK);
        let got = page_ids(&page);
        assert_eq!(got.len(), 1, "{page}");
        seen.extend(got);
        match page["next_after"].as_str() {
            Some(next) => url = format!("/functions?limit=10&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn job_listing_passes_short_and_empty_pages_with_their_cursor() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let first = h.invoke(&echo, "1").await;
    let stuck = h.invoke(&hang, "2").await;
    let last = h.invoke(&echo, "3").await;

    // The scheduler looks at one execution per page: the page after the
    // first holds no COMPLETED one, but the listing is not over.
    h.fake.state().page_bound = Some(1);
    let page = h
        .get("/jobs?status=COMPLETED&limit=10")
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], first);
    assert_eq!(page["next_after"], first);
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=10&after={first}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page, json!({"executions": [], "next_after": stuck}));
    let page = h
        .get(&format!("/jobs?status=COMPLETED&limit=10&after={stuck}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["executions"][0]["execution_id"], last);
    assert_eq!(page["next_after"], Value::Null);
}

#[tokio::test]
async fn job_output_and_error_come_from_the_top_level_status_fields() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let fail = h.register("fail").await;
    let done = h.invoke(&echo, r#"{"sum": 5}"#).await;
    let failed = h.invoke(&fail, "{}").await;

    // Today's scheduler: `info` has no output or error, the top level has.
    let job = h.get(&format!("/jobs/{done}")).await.ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"sum": 5}));
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["worker_id"], "w-1");
    let job = h.get(&format!("/jobs/{failed}")).await.ok(StatusCode::OK);
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["error"], "boom");

    // A scheduler that fills only `info`: its copies are used.
    h.fake.state().status_shape = StatusShape::InfoOnly;
    let job = h.get(&format!("/jobs/{done}")).await.ok(StatusCode::OK);
    assert_eq!(job["output"], json!({"sum": 5}));
    let job = h.get(&format!("/jobs/{failed}")).await.ok(StatusCode::OK);
    assert_eq!(job["error"], "boom");
}

#[tokio::test]
async fn an_answer_too_large_to_read_is_502_not_400() {
    let h = start(test_config()).await;
    let huge = h.register("huge").await;
    let execution_id = h.invoke(&huge, "{}").await;
    for path in [
        format!("/jobs/{execution_id}"),
        format!("/jobs/{execution_id}?wait=30s"),
    ] {
        let message = h
            .get(&path)
            .await
            .error(StatusCode::BAD_GATEWAY, "scheduler_error");
        assert!(
            message.contains("the scheduler's answer could not be read"),
            "{path}: {message}"
        );
    }
    // The execution was triggered, so invoke still answers 202 with its id.
    let reply = h.post(&format!("/invoke/{huge}?wait=30s"), "{}").await;
    let job = reply.ok(StatusCode::ACCEPTED);
    assert!(job["execution_id"].as_str().unwrap().starts_with("e-"));
    h.assert_serving().await;
}

#[tokio::test]
async fn idempotency_key_reaches_the_scheduler_and_conflicts_are_409() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let text = h.register("text").await;
    let key = "order-42:attempt_1.x";
    let keyed = |function_id: &str, payload: &str| {
        Call::new("POST", format!("/invoke/{function_id}"))
            .header("idempotency-key", key)
            .json(payload.to_string())
    };

    let first = keyed(&echo, r#"{"n": 1}"#).send(h.gateway).await;
    let first = first.ok(StatusCode::OK)["execution_id"].clone();
    // A retry gets the same execution.
    let again = keyed(&echo, r#"{"n": 1}"#).send(h.gateway).await;
    assert_eq!(again.ok(StatusCode::OK)["execution_id"], first);
    // The longest key allowed passes; no header is no key.
    let longest = "K".repeat(128);
    Call::new("POST", format!("/invoke/{echo}"))
        .header("idempotency-key", longest.clone())
        .json("{}")
        .send(h.gateway)
        .await
        .ok(StatusCode::OK);
    h.invoke(&echo, "{}").await;
    {
        let state = h.fake.state();
        let sent: Vec<&str> = state
            .triggers
            .iter()
            .map(|t| t.idempotency_key.as_str())
            .collect();
        assert_eq!(sent, [key, key, longest.as_str(), ""]);
    }

    // The key reused for another payload, or another function: 409.
    for (function_id, payload) in [(&echo, r#"{"n": 2}"#), (&text, r#"{"n": 1}"#)] {
        let message = keyed(function_id, payload)
            .send(h.gateway)
            .await
            .error(StatusCode::CONFLICT, "already_exists");
        assert!(message.contains("another function or payload"), "{message}");
    }
    // With ?wait= too: the refusal comes before any watch.
    let reply = Call::new("POST", format!("/invoke/{text}?wait=1s"))
        .header("idempotency-key", key)
        .json("{}")
        .send(h.gateway)
        .await;
    reply.error(StatusCode::CONFLICT, "already_exists");
    assert_eq!(h.fake.state().triggers.len(), 4);
}

#[tokio::test]
async fn a_refused_watch_is_429_not_a_hang_or_5xx() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, "{}").await;
    let stuck = h.invoke(&hang, "{}").await;

    for refusal in [WatchRefusal::AtCall, WatchRefusal::InStream] {
        h.fake.state().watch_refusal = Some(refusal);
        for id in [&done, &stuck] {
            let reply = h.get(&format!("/jobs/{id}?wait=30s")).await;
            let message = reply.error(StatusCode::TOO_MANY_REQUESTS, "too_many_watches");
            assert_eq!(message, WATCH_REFUSAL, "{refusal:?}");
            assert_eq!(reply.headers[header::RETRY_AFTER], "1");
        }

        // Invoke: the trigger went through, so the answer is the 202 that
        // says where to look, never an error that would invite a second
        // trigger.
        let triggers = h.fake.state().triggers.len();
        let reply = h.post(&format!("/invoke/{echo}?wait=30s"), "{}").await;
        let job = reply.ok(StatusCode::ACCEPTED);
        assert_eq!(job["status"], "ACCEPTED", "{refusal:?}");
        let execution_id = job["execution_id"].as_str().unwrap();
        assert_eq!(
            reply.headers[header::LOCATION],
            format!("/jobs/{execution_id}")
        );
        assert_eq!(h.fake.state().triggers.len(), triggers + 1);
        // Reading without a wait needs no watch.
        let job = h
            .get(&format!("/jobs/{execution_id}"))
            .await
            .ok(StatusCode::OK);
        assert_eq!(job["status"], "COMPLETED");
    }

    // A trigger refused as RESOURCE_EXHAUSTED (queue full) is 429 on invoke,
    // wait or not: nothing was started.
    h.fake.set_mode(Mode::QueueFull);
    for path in [
        format!("/invoke/{echo}"),
        format!("/invoke/{echo}?wait=30s"),
    ] {
        let message = h
            .post(&path, "{}")
            .await
            .error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
        assert!(message.contains("queue full"), "{path}: {message}");
    }
}

#[tokio::test]
async fn metrics_never_turn_a_worker_id_into_injected_lines() {
    let h = start(test_config()).await;
    let evil = "evil\"} 1\ntaskforge_injected_total 1337";
    h.fake.state().extra_workers = vec![
        WorkerInfo {
            worker_id: evil.into(),
            pool_size: 1,
            ..WorkerInfo::default()
        },
        WorkerInfo {
            worker_id: "w-3\n".into(),
            pool_size: 1,
            ..WorkerInfo::default()
        },
        WorkerInfo {
            worker_id: "host-7.rack:2".into(),
            pool_size: 16,
            ..WorkerInfo::default()
        },
    ];
    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.text();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("taskforge_injected_total")),
        "{text}"
    );
    assert!(!text.contains("evil"), "{text}");
    for line in [
        "taskforge_worker_pool_size{worker=\"host-7.rack:2\"} 16",
        "taskforge_worker_pool_size{worker=\"w-1\"} 4",
        "taskforge_worker_ids_rejected 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_valid_exposition(&text);

    // The JSON listing shows the id as it is (JSON escapes it).
    let workers = h.get("/workers").await.ok(StatusCode::OK);
    assert_eq!(workers["workers"][2]["worker_id"], evil);
}

/// Checks an OpenMetrics exposition line by line: comments are `# HELP`,
/// `# TYPE` or `# UNIT`; every sample is `taskforge_<name>{label="value",...}
/// <number>` with label values free of quotes, backslashes and line breaks;
/// it ends with a single `# EOF`.
fn assert_valid_exposition(text: &str) {
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let (kind, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad comment {line:?}"
            );
            let metric = rest.split(' ').next().unwrap_or("");
            assert!(
                metric.starts_with("taskforge_") && is_name(metric),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.starts_with("taskforge_") && is_name(name),
            "bad name in {line:?}"
        );
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(key), "bad label name in {line:?}");
            let (value, after) = after
                .split_once('"')
                .unwrap_or_else(|| panic!("unclosed label value in {line:?}"));
            assert!(!value.contains('\\'), "escape in {line:?}");
            rest = after.strip_prefix(',').unwrap_or(after);
            assert!(
                rest.is_empty() || after.starts_with(','),
                "junk after a label in {line:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Bad input on every route.

#[tokio::test]
async fn bad_input_gets_json_errors_on_every_route() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let hang = h.register("hang").await;
    let done = h.invoke(&echo, "{}").await;
    let invoke = format!("/invoke/{echo}");
    let oversized = format!("\"{}\"", "x".repeat(20 * 1024));

    // (call, status, code, a word the message must contain)
    let cases: Vec<(Call, StatusCode, &str, &str)> = vec![
        // POST /functions
        (
            Call::new("POST", "/functions").json(r#"{"name": "#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "JSON",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": 5, "language": "builtin", "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`name`",
        ),
        (
            Call::new("POST", "/functions").json(r#"{"name": "a", "language": "builtin"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`code`",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": ["builtin"], "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`language`",
        ),
        (
            Call::new("POST", "/functions").json(
                r#"{"name": "a", "language": "builtin", "code": "echo", "timeout_ms": "10"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`timeout_ms`",
        ),
        (
            Call::new("POST", "/functions").json(
                r#"{"name": "a", "language": "builtin", "code": "echo", "max_attempts": -1}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`max_attempts`",
        ),
        (
            Call::new("POST", "/functions").json("[1, 2]"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "object",
        ),
        (
            Call::new("POST", "/functions"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "empty",
        ),
        (
            Call::new("POST", "/functions")
                .header("content-type", "text/plain")
                .raw(r#"{"name": "a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            Call::new("POST", "/functions").raw(r#"{"name": "a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            Call::new("POST", "/functions").json(oversized.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "16384",
        ),
        (
            Call::new("POST", "/functions")
                .json(r#"{"name": "a", "language": "cobol", "code": "echo"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "unsupported language \"cobol\"",
        ),
        (
            Call::new("PUT", "/functions"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "PUT",
        ),
        // GET /functions/{id}
        (
            Call::new("GET", "/functions/f-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("PUT", "/functions/f-0001"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "PUT",
        ),
        // DELETE /functions/{id}
        (
            Call::new("DELETE", "/functions/f-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("DELETE", "/functions/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "path",
        ),
        // GET /functions
        (
            Call::new("GET", "/functions?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=1001"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=ten"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/functions?limit=-1&after=f-0001"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        // POST /invoke/{id}
        (
            Call::new("POST", &invoke).json("{\"a\": }"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "JSON",
        ),
        (
            Call::new("POST", &invoke)
                .header("content-type", "text/plain")
                .raw("hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            Call::new("POST", &invoke).json(oversized.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "limit",
        ),
        (
            Call::new("POST", "/invoke/f-nope").json("{}"),
            StatusCode::NOT_FOUND,
            "not_found",
            "f-nope",
        ),
        (
            Call::new("POST", format!("{invoke}?timeout_ms=abc")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`timeout_ms`",
        ),
        (
            Call::new("POST", format!("{invoke}?max_attempts=-1")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`max_attempts`",
        ),
        (
            Call::new("POST", format!("{invoke}?max_attempts=99999999999")).json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`max_attempts`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "k".repeat(129))
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "two words")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "k\u{e9}y")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("POST", &invoke)
                .header("idempotency-key", "a")
                .header("idempotency-key", "b")
                .json("{}"),
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Idempotency-Key`",
        ),
        (
            Call::new("GET", &invoke),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET",
        ),
        // GET /jobs/{id}
        (
            Call::new("GET", "/jobs/e-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("GET", "/jobs/seed-nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "seed-nope",
        ),
        (
            Call::new("GET", "/jobs/e-nope?wait=1s"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("GET", "/jobs/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "path",
        ),
        (
            Call::new("DELETE", format!("/jobs/{done}")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
        // GET /jobs
        (
            Call::new("GET", "/jobs?status=DONE"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`status`",
        ),
        (
            Call::new("GET", "/jobs?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("GET", "/jobs?limit=many"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "`limit`",
        ),
        (
            Call::new("POST", "/jobs").json("{}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        // POST /jobs/{id}/cancel
        (
            Call::new("POST", "/jobs/e-nope/cancel"),
            StatusCode::NOT_FOUND,
            "not_found",
            "e-nope",
        ),
        (
            Call::new("POST", format!("/jobs/{done}/cancel")),
            StatusCode::CONFLICT,
            "failed_precondition",
            "finished",
        ),
        (
            Call::new("GET", format!("/jobs/{done}/cancel")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET",
        ),
        // Cluster routes and unknown routes.
        (
            Call::new("POST", "/health"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("POST", "/ready"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("DELETE", "/workers"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
        (
            Call::new("POST", "/stats"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("POST", "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST",
        ),
        (
            Call::new("GET", "/nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            "/nope",
        ),
        (
            Call::new("GET", "/"),
            StatusCode::NOT_FOUND,
            "not_found",
            "no route",
        ),
        (
            Call::new("GET", "/jobs/"),
            StatusCode::NOT_FOUND,
            "not_found",
            "no route",
        ),
    ];
    for (call, status, code, needle) in cases {
        let what = format!("{} {}", call.method, call.path);
        let reply = call.send(h.gateway).await;
        let message = reply.error(status, code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                reply.headers.contains_key(header::ALLOW),
                "{what}: no Allow"
            );
        }
    }

    // Still serving, and nothing stray reached the scheduler.
    h.assert_serving().await;
    assert_eq!(h.fake.state().triggers.len(), 1);
    let hang_run = h.invoke(&hang, "{}").await;
    let job = h.get(&format!("/jobs/{hang_run}")).await.ok(StatusCode::OK);
    assert_eq!(job["status"], "PENDING");
}

// ---------------------------------------------------------------------------
// Scheduler refusals and failures.

#[tokio::test]
async fn queue_full_is_429_then_recovers() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    h.fake.set_mode(Mode::QueueFull);
    let reply = h.post(&format!("/invoke/{echo}"), "{}").await;
    let message = reply.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
    assert!(message.contains("queue full"), "{message}");
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    let reply = h.post(&format!("/invoke/{echo}?wait=1s"), "{}").await;
    reply.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");

    h.fake.set_mode(Mode::Normal);
    h.invoke(&echo, "{}").await;
}

#[tokio::test]
async fn scheduler_answering_unavailable_is_503() {
    let h = start(test_config()).await;
    let echo = h.register("echo").await;
    let done = h.invoke(&echo, "{}").await;
    h.fake.set_mode(Mode::Down);
    assert_unavailable(&h, &echo, &done).await;
    h.fake.set_mode(Mode::Normal);
    h.invoke(&echo, "{}").await;
}

#[tokio::test]
async fn unreachable_scheduler_is_503() {
    // A port that is bound but not listening: connections are refused, and
    // no other test can take the port while `socket` lives.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = socket.local_addr().unwrap();
    let h = Harness {
        gateway: start_gateway(dead, test_config()).await,
        scheduler: dead,
        fake: Fake::default(),
    };
    assert_unavailable(&h, "f-0001", "e-0001").await;
}

/// Every route that needs the scheduler answers 503; the gateway itself stays
/// healthy and keeps answering.
async fn assert_unavailable(h: &Harness, function_id: &str, execution_id: &str) {
    let body = r#"{"name": "a", "language": "builtin", "code": "echo"}"#;
    let calls = [
        Call::new("POST", "/functions").json(body),
        Call::new("GET", "/functions"),
        Call::new("GET", "/functions/f-0001"),
        Call::new("DELETE", "/functions/f-0001"),
        Call::new("POST", "/invoke/f-0001").json("{}"),
        Call::new("GET", "/jobs"),
        Call::new("POST", "/jobs/e-0001/cancel"),
        Call::new("GET", "/workers"),
        Call::new("GET", "/stats"),
    ];
    for call in calls {
        let what = format!("{} {}", call.method, call.path);
        let message = call
            .send(h.gateway)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(message.contains("unavailable"), "{what}: {message}");
    }
    h.post(&format!("/invoke/{function_id}?wait=1s"), "{}")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get(&format!("/jobs/{execution_id}"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get(&format!("/jobs/{execution_id}?wait=1s"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    h.get("/ready")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    let metrics = h.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    assert!(
        text.lines().any(|l| l == "taskforge_scheduler_up 0"),
        "{text}"
    );
    assert!(!text.contains("taskforge_queue_depth"), "{text}");
    h.assert_serving().await;
}

// ---------------------------------------------------------------------------
// Auth.

#[tokio::test]
async fn bearer_token_guards_every_route_but_the_probes() {
    let h = start(GatewayConfig {
        api_token: Some("s3cret".into()),
        ..test_config()
    })
    .await;
    // Probes need no token.
    h.assert_serving().await;
    h.get("/ready").await.ok(StatusCode::OK);

    let body = r#"{"name": "a", "language": "builtin", "code": "echo"}"#;
    let refused = [
        (None, "missing"),
        (Some("Bearer nope"), "wrong"),
        (Some("Bearer s3cre"), "wrong"),
        (Some("Basic s3cret"), "Bearer"),
        (Some("s3cret"), "Bearer"),
    ];
    for (authorization, needle) in refused {
        for (method, path) in [
            ("POST", "/functions"),
            ("GET", "/functions"),
            ("GET", "/jobs/e-0001"),
            ("GET", "/metrics"),
            ("GET", "/nope"),
        ] {
            let mut call = Call::new(method, path).json(body);
            if let Some(value) = authorization {
                call = call.header("authorization", value);
            }
            let reply = call.send(h.gateway).await;
            let message = reply.error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(message.contains(needle), "{method} {path}: {message}");
            assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    assert!(h.fake.state().functions.is_empty());

    let reply = Call::new("POST", "/functions")
        .json(body)
        .header("authorization", "Bearer s3cret")
        .send(h.gateway)
        .await;
    reply.ok(StatusCode::OK);
    Call::new("GET", "/nope")
        .header("authorization", "Bearer s3cret")
        .send(h.gateway)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------
// Serving.

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let h = start(test_config()).await;
    let channel = Endpoint::from_shared(format!("http://{}", h.scheduler))
        .unwrap()
        .connect_lazy();
    let router = gateway::router(SchedulerServiceClient::new(channel), test_config());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let reply = Call::new("GET", "/health").send(addr).await;
    assert_eq!(reply.ok(StatusCode::OK), json!({"status": "ok"}));
    stop.send(()).unwrap();
    // Stops accepting, closes the idle keep-alive connection, and returns.
    server.await.unwrap().unwrap();
}

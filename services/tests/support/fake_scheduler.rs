//! An in-process fake `SchedulerService`, served by tonic on loopback, and a
//! harness that puts the HTTP gateway's router in front of it, for the
//! gateway tests (`gateway_routes`, `gateway_watch`, `gateway_errors`).
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use taskforge_proto::common::{ExecutionInfo, Function};
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
use taskforge_services::auth::{self, Credentials};
use taskforge_services::gateway::{self, GatewayConfig};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

use super::http::{Call, Reply};

// ---------------------------------------------------------------------------
// The fake scheduler.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Normal,
    QueueFull,
    Down,
}

/// Where GetExecutionStatus puts the output and error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusShape {
    /// Top-level `output`/`error` only; `info`'s left empty (today's scheduler).
    #[default]
    TopLevel,
    /// In `info` only, top level empty.
    InfoOnly,
}

/// How the fake refuses watches (while everything else works).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchRefusal {
    /// The call itself fails.
    AtCall,
    /// The stream opens, then fails before its first state.
    InStream,
}

pub const WATCH_REFUSAL: &str = "too many watches: 64 open on this execution";

/// What the fake remembers of a trigger with an idempotency key.
#[derive(Debug)]
struct Keyed {
    function_id: String,
    payload: Bytes,
    execution_id: String,
}

#[derive(Debug, Default)]
pub struct FakeState {
    mode: Mode,
    pub functions: BTreeMap<String, Function>,
    /// Function ids handed out so far (deleted ones are not reused).
    functions_registered: usize,
    executions: BTreeMap<String, ExecutionInfo>,
    /// Every trigger the fake accepted, as received.
    pub triggers: Vec<TriggerExecutionRequest>,
    /// Executions started under an idempotency key.
    keys: HashMap<String, Keyed>,
    /// GetExecutionStatus calls: `?wait=` must not poll.
    pub status_calls: usize,
    pub status_shape: StatusShape,
    pub watch_refusal: Option<WatchRefusal>,
    /// Every ListFunctions request, as received.
    pub function_lists: Vec<ListFunctionsRequest>,
    /// Most items a listing looks at per page, whatever the `limit`: a page
    /// may end short, or empty, with a cursor.
    pub page_bound: Option<usize>,
    /// Workers listed after the two regular ones.
    pub extra_workers: Vec<WorkerInfo>,
}

#[derive(Clone, Debug, Default)]
pub struct Fake(Arc<Mutex<FakeState>>);

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
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    pub fn set_mode(&self, mode: Mode) {
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
                max_memory_bytes: request.max_memory_bytes,
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

    /// A trigger, then the watch of what it started. As the scheduler does,
    /// a refused watch still sends the first state (naming the execution),
    /// and the stream ends after it.
    async fn trigger_and_watch_execution(
        &self,
        request: Request<TriggerExecutionRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        let id = self
            .trigger_execution(request)
            .await?
            .into_inner()
            .execution_id;
        let first_only = {
            let state = self.gate()?;
            match state.watch_refusal {
                None => None,
                Some(_) => state.executions.get(&id).map(|info| ExecutionInfo {
                    status: "PENDING".into(),
                    output: Bytes::new(),
                    error: String::new(),
                    ..info.clone()
                }),
            }
        };
        if let Some(first) = first_only {
            return Ok(Response::new(Box::pin(tokio_stream::iter([Ok(first)]))));
        }
        let watch = WatchExecutionRequest { execution_id: id };
        self.watch_execution(Request::new(watch)).await
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
            accepted_by_runtime: [
                ("builtin".to_string(), 45),
                ("wasm".to_string(), 6),
                ("evil\"} 1\nx".to_string(), 1),
            ]
            .into_iter()
            .collect(),
        }))
    }
}

// ---------------------------------------------------------------------------
// Harness: fake scheduler + gateway on loopback, and an HTTP/1.1 client.

pub struct Harness {
    pub gateway: SocketAddr,
    pub scheduler: SocketAddr,
    pub fake: Fake,
}

pub async fn start(config: GatewayConfig) -> Harness {
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
pub async fn start_gateway(scheduler: SocketAddr, config: GatewayConfig) -> SocketAddr {
    let channel = Endpoint::from_shared(format!("http://{scheduler}"))
        .unwrap()
        .connect_lazy();
    let router = gateway::router(auth::scheduler_client(channel, Credentials::none()), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve(listener, router, std::future::pending()));
    addr
}

pub fn test_config() -> GatewayConfig {
    GatewayConfig {
        body_limit: 16 * 1024,
        ..GatewayConfig::default()
    }
}

impl Harness {
    pub async fn get(&self, path: &str) -> Reply {
        Call::new("GET", path).send(self.gateway).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        Call::new("POST", path).json(body).send(self.gateway).await
    }

    pub async fn register(&self, code: &str) -> String {
        let body = json!({"name": format!("{code}-fn"), "language": "builtin", "code": code});
        let reply = self.post("/functions", &body.to_string()).await;
        reply.ok(StatusCode::OK)["function_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn invoke(&self, function_id: &str, payload: &str) -> String {
        let reply = self.post(&format!("/invoke/{function_id}"), payload).await;
        let body = reply.ok(StatusCode::OK);
        assert_eq!(body["status"], "ACCEPTED");
        body["execution_id"].as_str().unwrap().to_string()
    }

    /// The gateway still answers normal requests.
    pub async fn assert_serving(&self) {
        let reply = self.get("/health").await;
        assert_eq!(reply.ok(StatusCode::OK), json!({"status": "ok"}));
    }
}

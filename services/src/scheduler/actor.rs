//! The one task that owns the scheduler's state.
//!
//! Each turn of its loop takes whatever is ready — commands from gRPC handlers
//! and worker streams, a due deadline, a commit report — feeds it to the core,
//! then carries out the core's outputs: executions onto worker streams, state
//! changes to watchers, records to the store. At the end of the turn the records
//! go to the committer as one batch.
//!
//! Durability rules kept here: a trigger is answered ACCEPTED only once its record
//! is durable (dispatch does not wait for that; it overlaps the fsync), and a
//! terminal state is shown to nobody — watchers, status queries, listings —
//! before its record is durable. Until then clients see the state it had before.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use taskforge_core::scheduler::{
    CancelError, ConnectError, Dispatch, LossReason, Output, Prior, Scheduler, SubmitError,
};
use taskforge_core::{
    ExecutionId, Instant, Outcome, SessionId, Status as ExecStatus, Submission, Terminal, WorkerId,
};
use taskforge_proto::common::{ExecutionInfo, ExecutionRequest, Function};
use taskforge_proto::scheduler::{
    ClusterStats, ListExecutionsRequest, ListExecutionsResponse, ListFunctionsRequest,
    ListFunctionsResponse, RegisterFunctionRequest, TriggerExecutionRequest, WorkerInfo,
};
use taskforge_proto::worker::worker_message::Message as FromWorker;
use taskforge_proto::worker::{
    CancelRequest, ForgetFunction, SchedulerMessage, WorkerHello, scheduler_message,
};

use super::SchedulerOptions;
use super::committer::{Commit, Committer};
use super::convert::{check_size, parse_execution_id, resolve_policy};
use super::observer::SchedulerEvent;
use super::paging::Page;
use super::streams::Outbox;
use crate::clock::WallClock;
use crate::functions::Builtin;
use crate::store::{ExecutionRecord, FinishedRecord, FunctionRecord, Record, Recovered, Store};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// Everything the actor can be asked.
#[derive(Debug)]
pub(crate) enum Command {
    Register {
        request: RegisterFunctionRequest,
        reply: Reply<String>,
    },
    Trigger {
        request: TriggerExecutionRequest,
        reply: Reply<String>,
    },
    /// Trigger, then follow: the updates start with the accepted state.
    TriggerAndWatch {
        request: TriggerExecutionRequest,
        reply: Reply<mpsc::UnboundedReceiver<ExecutionInfo>>,
    },
    /// `None` when the execution is unknown.
    Status {
        id: String,
        reply: Reply<Option<ExecutionInfo>>,
    },
    Watch {
        id: String,
        reply: Reply<mpsc::UnboundedReceiver<ExecutionInfo>>,
    },
    ListFunctions {
        request: ListFunctionsRequest,
        reply: Reply<ListFunctionsResponse>,
    },
    DeleteFunction {
        id: String,
        reply: Reply<()>,
    },
    GetFunction {
        id: String,
        reply: Reply<Function>,
    },
    ListExecutions {
        request: ListExecutionsRequest,
        reply: Reply<ListExecutionsResponse>,
    },
    Cancel {
        id: String,
        reply: Reply<String>,
    },
    ListWorkers {
        reply: Reply<Vec<WorkerInfo>>,
    },
    Stats {
        reply: Reply<ClusterStats>,
    },
    WorkerJoined {
        hello: WorkerHello,
        outbox: Outbox,
        reply: Reply<SessionId>,
    },
    FromWorker {
        session: SessionId,
        message: FromWorker,
    },
    WorkerLeft {
        session: SessionId,
    },
    /// End every worker stream and watch; refuse new workers.
    Shutdown,
}

/// Most executions one page of a listing returns.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// Largest pool size a worker may announce.
const MAX_POOL_SIZE: u32 = 4096;
/// Furthest back the core's clock can place a restored execution's end (see
/// [`Actor::now`]); retention ages beyond it count from this far back.
const MAX_EPOCH: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Commands taken per turn before outputs are carried out and records flushed.
const COMMANDS_PER_TURN: usize = 256;

#[derive(Debug)]
struct RegisteredFunction {
    /// Shared with every execution of the function.
    key: Arc<str>,
    proto: Function,
    /// Executions of it that are not terminal yet: it cannot be deleted
    /// while there are any.
    live: u32,
}

/// What the service remembers of an execution beyond the core's state.
#[derive(Debug)]
struct Meta {
    created_at_us: u64,
    started_at_us: u64,
    finished_at_us: u64,
    worker_id: Option<Arc<str>>,
    /// The last non-terminal status clients were shown.
    shown: ExecStatus,
}

#[derive(Debug)]
struct Session {
    worker_id: Arc<str>,
    outbox: Outbox,
    /// Seed workers do not announce a pool size and know no cancel message.
    understands_cancel: bool,
    /// It keeps function definitions for the rest of the stream: each is sent
    /// once, and executions carry only the function's id.
    caches_functions: bool,
    /// Functions defined on this stream so far.
    defined: BTreeSet<Arc<str>>,
}

/// Something held back until a batch of records is durable.
#[derive(Debug)]
enum Durable {
    Accepted {
        reply: Reply<String>,
        id: ExecutionId,
    },
    /// A trigger that also follows its execution: once it is durably
    /// accepted, the caller gets a watch that starts from its state then.
    AcceptedWatched {
        reply: Reply<mpsc::UnboundedReceiver<ExecutionInfo>>,
        id: ExecutionId,
    },
    Registered {
        reply: Reply<String>,
        function_id: String,
    },
    Finished {
        id: ExecutionId,
    },
    Cancelled {
        reply: Reply<String>,
    },
    FunctionDeleted {
        reply: Reply<()>,
    },
}

/// Stamps of the result being applied, for the record of its execution's end.
#[derive(Clone, Copy, Debug)]
struct Stamps {
    id: ExecutionId,
    started_at_us: u64,
    finished_at_us: u64,
}

pub(crate) struct Actor {
    options: SchedulerOptions,
    core: Scheduler,
    clock: WallClock,
    origin: tokio::time::Instant,
    inbox: mpsc::Receiver<Command>,
    commits: mpsc::UnboundedReceiver<Commit>,
    committer: Committer,
    /// Records of this turn, flushed as one batch.
    log: Vec<Record>,
    waiting: VecDeque<(u64, Durable)>,
    /// Terminal in the core but not yet durable: the status clients still see.
    unpublished: FxHashMap<ExecutionId, ExecStatus>,
    /// Terminal states whose batch failed to sync: shown to nobody until a
    /// later sync succeeds (the store's next sync rewrites what failed).
    stalled: Vec<ExecutionId>,
    functions: BTreeMap<String, RegisteredFunction>,
    meta: FxHashMap<ExecutionId, Meta>,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    watchers: FxHashMap<ExecutionId, Vec<mpsc::UnboundedSender<ExecutionInfo>>>,
    stamps: Option<Stamps>,
    /// Offset of the core's clock from `origin` (see [`Actor::now`]).
    epoch: Duration,
    ids: SmallRng,
    shutting_down: bool,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("stats", &self.core.stats())
            .finish_non_exhaustive()
    }
}

impl Actor {
    pub(crate) fn new(
        options: SchedulerOptions,
        store: Box<dyn Store>,
        clock: WallClock,
        inbox: mpsc::Receiver<Command>,
        recovered: Recovered,
    ) -> std::io::Result<Actor> {
        let (reports, commits) = mpsc::unbounded_channel();
        let committer = Committer::start(store, options.store_runner, reports)?;
        // Mix what was recovered into the id seed, so a restart with the same
        // configured seed does not replay the ids of the previous run.
        let recovered_mix = recovered
            .executions
            .iter()
            .fold(recovered.executions.len() as u64, |acc, e| {
                acc.rotate_left(5) ^ e.record.id.0
            });
        let mut actor = Actor {
            epoch: options.core.retention.max_age.min(MAX_EPOCH),
            core: Scheduler::new(options.core.clone()),
            ids: SmallRng::seed_from_u64(options.id_seed ^ recovered_mix),
            options,
            clock,
            origin: tokio::time::Instant::now(),
            inbox,
            commits,
            committer,
            log: Vec::new(),
            waiting: VecDeque::new(),
            unpublished: FxHashMap::default(),
            stalled: Vec::new(),
            functions: BTreeMap::new(),
            meta: FxHashMap::default(),
            sessions: BTreeMap::new(),
            next_session: 1,
            watchers: FxHashMap::default(),
            stamps: None,
            shutting_down: false,
        };
        actor.restore(recovered);
        Ok(actor)
    }

    fn restore(&mut self, recovered: Recovered) {
        let now = self.now();
        for function in recovered.functions {
            let proto = Function {
                function_id: function.function_id.clone(),
                name: function.name,
                language: function.language,
                code: function.code,
                timeout_ms: function.timeout_ms,
                max_attempts: function.max_attempts,
            };
            let key = Arc::from(function.function_id.as_str());
            let registered = RegisteredFunction {
                key,
                proto,
                live: 0,
            };
            self.functions.insert(function.function_id, registered);
        }
        let (mut pending, mut finished) = (0usize, 0usize);
        for execution in recovered.executions {
            let record = execution.record;
            let id = record.id;
            let function = self
                .functions
                .get(&record.function_id)
                .map_or_else(|| Arc::from(record.function_id.as_str()), |f| f.key.clone());
            let submission = Submission {
                id,
                function,
                payload: record.payload,
                policy: record.policy,
            };
            let mut meta = Meta {
                created_at_us: record.created_at_us,
                started_at_us: 0,
                finished_at_us: 0,
                worker_id: None,
                shown: ExecStatus::Pending,
            };
            let prior = match execution.finished {
                Some(done) => {
                    let ago = self.clock_now_us().saturating_sub(done.finished_at_us);
                    let finished_at = now.saturating_sub(Duration::from_micros(ago));
                    meta.started_at_us = done.started_at_us;
                    meta.finished_at_us = done.finished_at_us;
                    meta.worker_id = (!done.worker_id.is_empty()).then(|| done.worker_id.into());
                    finished += 1;
                    Prior::Finished {
                        terminal: done.terminal,
                        attempt: done.attempt,
                        finished_at,
                    }
                }
                None => {
                    pending += 1;
                    if let Some(function) = self.functions.get_mut(&record.function_id) {
                        function.live += 1;
                    }
                    Prior::Pending {
                        attempts_started: execution.attempts_started,
                    }
                }
            };
            match self.core.restore(now, submission, prior) {
                Ok(()) => {
                    self.meta.insert(id, meta);
                }
                Err(error) => tracing::warn!(%id, %error, "skipped a recovered execution"),
            }
        }
        if pending + finished > 0 || !self.functions.is_empty() {
            tracing::info!(
                functions = self.functions.len(),
                pending,
                finished,
                "recovered from the store"
            );
        }
        self.carry_out();
        self.flush();
    }

    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.core.poll_timeout().map(|at| self.tokio_instant(at));
            tokio::select! {
                biased;
                Some(commit) = self.commits.recv() => self.on_commit(commit),
                command = self.inbox.recv() => {
                    let Some(command) = command else { break };
                    self.handle(command);
                    for _ in 1..COMMANDS_PER_TURN {
                        match self.inbox.try_recv() {
                            Ok(command) => self.handle(command),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
            self.carry_out();
            self.flush();
        }
        // Every sender is gone: wait for what is still on its way to disk.
        while !self.waiting.is_empty() {
            match self.commits.recv().await {
                Some(commit) => self.on_commit(commit),
                None => break,
            }
        }
    }

    fn observe(&self, event: &SchedulerEvent<'_>) {
        if let Some(observer) = &self.options.observer {
            observer.observe(event);
        }
    }

    /// The core's clock: time since `origin`, shifted by `epoch` so that an
    /// execution restored from a run that ended up to one retention age ago
    /// still gets its true finishing time (instants cannot be negative).
    fn now(&self) -> Instant {
        Instant::from_elapsed(self.origin.elapsed() + self.epoch)
    }

    /// When a core instant falls on tokio's clock.
    fn tokio_instant(&self, at: Instant) -> tokio::time::Instant {
        self.origin + at.elapsed().saturating_sub(self.epoch)
    }

    fn clock_now_us(&self) -> u64 {
        (self.clock)()
    }

    /// Wall-clock micros of a core instant.
    fn wall_of(&self, at: Instant) -> u64 {
        let ago = self.now().saturating_duration_since(at);
        (self.clock)().saturating_sub(ago.as_micros() as u64)
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { request, reply } => match self.register(request) {
                Ok(function_id) => self.hold(Durable::Registered { reply, function_id }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::Trigger { request, reply } => match self.trigger(request) {
                Ok(id) => self.hold(Durable::Accepted { reply, id }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::TriggerAndWatch { request, reply } => match self.trigger(request) {
                Ok(id) => self.hold(Durable::AcceptedWatched { reply, id }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::Status { id, reply } => {
                let info = match id.as_str() {
                    "" => Err(Status::invalid_argument("execution_id is required")),
                    text => Ok(ExecutionId::parse(text).and_then(|id| self.info(id))),
                };
                let _ = reply.send(info);
            }
            Command::Watch { id, reply } => {
                let _ = reply.send(self.watch(&id));
            }
            Command::ListFunctions { request, reply } => {
                let _ = reply.send(Ok(self.list_functions(&request)));
            }
            Command::DeleteFunction { id, reply } => match self.delete_function(&id) {
                Ok(()) => self.hold(Durable::FunctionDeleted { reply }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::GetFunction { id, reply } => {
                let found = self.functions.get(&id).map(|f| f.proto.clone());
                let _ =
                    reply
                        .send(found.ok_or_else(|| {
                            Status::not_found(format!("function {id:?} not found"))
                        }));
            }
            Command::ListExecutions { request, reply } => {
                let _ = reply.send(self.list_executions(&request));
            }
            Command::Cancel { id, reply } => match self.cancel(&id) {
                Ok(()) => self.hold(Durable::Cancelled { reply }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::ListWorkers { reply } => {
                let _ = reply.send(Ok(self.list_workers()));
            }
            Command::Stats { reply } => {
                let _ = reply.send(Ok(self.stats()));
            }
            Command::WorkerJoined {
                hello,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.worker_joined(hello, outbox));
            }
            Command::FromWorker { session, message } => self.on_worker_message(session, message),
            Command::WorkerLeft { session } => {
                let now = self.now();
                self.core.worker_disconnected(now, session);
            }
            Command::Shutdown => {
                self.shutting_down = true;
                // Dropping the outboxes ends the streams; the workers' own
                // disconnects follow as WorkerLeft.
                self.sessions.clear();
                self.watchers.clear();
            }
        }
    }

    /// Holds `what` until the batch being gathered this turn is durable.
    fn hold(&mut self, what: Durable) {
        self.waiting.push_back((self.committer.next_seq(), what));
    }

    fn register(&mut self, request: RegisterFunctionRequest) -> Result<String, Status> {
        if request.name.trim().is_empty() || request.name.len() > 256 {
            return Err(Status::invalid_argument("name must be 1 to 256 characters"));
        }
        check_size("code", &request.code, self.options.max_code_bytes)?;
        Builtin::resolve(&request.language, &request.code)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        resolve_policy(
            &self.options.default_policy,
            (request.timeout_ms, request.max_attempts),
            (0, 0, 0),
        )?;
        let function_id = loop {
            let id = format!("{:016x}", self.ids.random::<u64>());
            if !self.functions.contains_key(&id) {
                break id;
            }
        };
        let proto = Function {
            function_id: function_id.clone(),
            name: request.name,
            language: request.language,
            code: request.code,
            timeout_ms: request.timeout_ms,
            max_attempts: request.max_attempts,
        };
        self.log.push(Record::Function(FunctionRecord {
            function_id: function_id.clone(),
            name: proto.name.clone(),
            language: proto.language.clone(),
            code: proto.code.clone(),
            timeout_ms: proto.timeout_ms,
            max_attempts: proto.max_attempts,
            created_at_us: (self.clock)(),
        }));
        let key = Arc::from(function_id.as_str());
        let registered = RegisteredFunction {
            key,
            proto,
            live: 0,
        };
        self.functions.insert(function_id.clone(), registered);
        Ok(function_id)
    }

    fn delete_function(&mut self, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("function_id is required"));
        }
        let function = self
            .functions
            .get(id)
            .ok_or_else(|| Status::not_found(format!("function {id:?} not found")))?;
        if function.live > 0 {
            return Err(Status::failed_precondition(format!(
                "function {id:?} has {} executions pending or running; \
                 it can be deleted once they finish (or are cancelled)",
                function.live
            )));
        }
        if let Some(function) = self.functions.remove(id) {
            let forget = || SchedulerMessage {
                message: Some(scheduler_message::Message::Forget(ForgetFunction {
                    function_id: id.to_string(),
                })),
            };
            for session in self.sessions.values_mut() {
                if session.defined.remove(&function.key) {
                    let _ = session.outbox.send(Ok(forget()));
                }
            }
        }
        self.log.push(Record::FunctionDeleted {
            function_id: id.to_string(),
        });
        Ok(())
    }

    fn list_functions(&self, request: &ListFunctionsRequest) -> ListFunctionsResponse {
        use std::ops::Bound;
        let limit = match request.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let from = match request.after_function_id.as_str() {
            "" => Bound::Unbounded,
            after => Bound::Excluded(after),
        };
        let candidates = self
            .functions
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, function)| function.proto.clone());
        let page = Page::fill(candidates, limit, self.options.response_budget());
        let next_after_function_id = match (page.more, page.items.last()) {
            (true, Some(last)) => last.function_id.clone(),
            _ => String::new(),
        };
        ListFunctionsResponse {
            functions: page.items,
            next_after_function_id,
        }
    }

    fn trigger(&mut self, request: TriggerExecutionRequest) -> Result<ExecutionId, Status> {
        if request.function_id.is_empty() {
            return Err(Status::invalid_argument("function_id is required"));
        }
        let now = self.now();
        let function = self
            .functions
            .get_mut(&request.function_id)
            .ok_or_else(|| {
                Status::not_found(format!("function {:?} not found", request.function_id))
            })?;
        check_size("payload", &request.payload, self.options.max_payload_bytes)?;
        let policy = resolve_policy(
            &self.options.default_policy,
            (function.proto.timeout_ms, function.proto.max_attempts),
            (
                request.timeout_ms,
                request.max_attempts,
                request.schedule_to_start_timeout_ms,
            ),
        )?;
        let id = loop {
            let id = ExecutionId(self.ids.random());
            if self.core.execution(id).is_none() {
                break id;
            }
        };
        let submission = Submission {
            id,
            function: function.key.clone(),
            payload: request.payload.clone(),
            policy,
        };
        self.core
            .submit(now, submission)
            .map_err(|error| match error {
                SubmitError::QueueFull { .. } => Status::resource_exhausted(error.to_string()),
                SubmitError::Duplicate(_) | SubmitError::InvalidPolicy(_) => {
                    Status::invalid_argument(error.to_string())
                }
            })?;
        function.live += 1;
        let created_at_us = (self.clock)();
        self.meta.insert(
            id,
            Meta {
                created_at_us,
                started_at_us: 0,
                finished_at_us: 0,
                worker_id: None,
                shown: ExecStatus::Pending,
            },
        );
        self.log.push(Record::Accepted(ExecutionRecord {
            id,
            function_id: request.function_id,
            payload: request.payload,
            policy,
            created_at_us,
        }));
        Ok(id)
    }

    fn cancel(&mut self, id: &str) -> Result<(), Status> {
        let id = parse_execution_id(id)?;
        if self.unpublished.contains_key(&id) {
            return Err(Status::failed_precondition(format!(
                "execution {id} already finished"
            )));
        }
        let now = self.now();
        match self.core.cancel(now, id) {
            Ok(_) => Ok(()),
            Err(error @ CancelError::NotFound(_)) => Err(Status::not_found(error.to_string())),
            Err(error @ CancelError::AlreadyFinished { .. }) => {
                Err(Status::failed_precondition(error.to_string()))
            }
        }
    }

    fn watch(&mut self, id: &str) -> Result<mpsc::UnboundedReceiver<ExecutionInfo>, Status> {
        let id = parse_execution_id(id)?;
        self.follow(id)
    }

    /// A watch on `id`: its current state, then every change until a terminal one.
    fn follow(
        &mut self,
        id: ExecutionId,
    ) -> Result<mpsc::UnboundedReceiver<ExecutionInfo>, Status> {
        let info = self
            .info(id)
            .ok_or_else(|| Status::not_found(format!("execution {id} not found")))?;
        let terminal = ExecStatus::parse(&info.status).is_some_and(ExecStatus::is_terminal);
        let (updates, receiver) = mpsc::unbounded_channel();
        let _ = updates.send(info);
        if !terminal && !self.shutting_down {
            self.watchers.entry(id).or_default().push(updates);
        }
        Ok(receiver)
    }

    fn worker_joined(&mut self, hello: WorkerHello, outbox: Outbox) -> Result<SessionId, Status> {
        if self.shutting_down {
            return Err(Status::unavailable("the scheduler is shutting down"));
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let pool_size = match hello.pool_size {
            0 => self.options.default_pool_size,
            n => n.min(MAX_POOL_SIZE),
        };
        let worker_id: Arc<str> = hello.worker_id.into();
        let now = self.now();
        self.core
            .worker_connected(now, session, WorkerId::new(worker_id.clone()), pool_size)
            .map_err(|error| match error {
                ConnectError::IdInUse { .. } => Status::already_exists(error.to_string()),
                ConnectError::NoSlots | ConnectError::SessionInUse(_) => {
                    Status::invalid_argument(error.to_string())
                }
            })?;
        tracing::info!(worker = %worker_id, %session, pool_size, "worker joined");
        self.observe(&SchedulerEvent::WorkerJoined {
            session,
            worker: &worker_id,
            pool_size,
        });
        self.sessions.insert(
            session,
            Session {
                worker_id,
                outbox,
                understands_cancel: hello.pool_size != 0,
                caches_functions: hello.caches_functions,
                defined: BTreeSet::new(),
            },
        );
        Ok(session)
    }

    fn on_worker_message(&mut self, session: SessionId, message: FromWorker) {
        let now = self.now();
        match message {
            FromWorker::Heartbeat(beat) => {
                let running = u32::try_from(beat.running_tasks).unwrap_or(0);
                self.core.heartbeat(now, session, running);
            }
            FromWorker::Result(result) => {
                let Some(id) = ExecutionId::parse(&result.execution_id) else {
                    tracing::debug!(%session, id = %result.execution_id, "result for a malformed execution id");
                    return;
                };
                // A seed worker does not echo attempts: it means the one it runs.
                let attempt = match result.attempt {
                    0 => self
                        .core
                        .in_flight(session)
                        .iter()
                        .find(|(held, _)| *held == id)
                        .map_or(0, |&(_, attempt)| attempt),
                    n => n,
                };
                let outcome = if result.output.len() > self.options.max_output_bytes {
                    Outcome::Failure {
                        error: format!(
                            "output is {} bytes; the limit is {}",
                            result.output.len(),
                            self.options.max_output_bytes
                        ),
                        output: Bytes::new(),
                    }
                } else if result.success {
                    Outcome::Success(result.output)
                } else {
                    Outcome::Failure {
                        error: result.error,
                        output: result.output,
                    }
                };
                self.stamps = Some(Stamps {
                    id,
                    started_at_us: result.started_at_us,
                    finished_at_us: result.finished_at_us,
                });
                let disposition = self.core.result(now, session, id, attempt, outcome);
                self.observe(&SchedulerEvent::Result {
                    session,
                    execution: id,
                    attempt,
                    disposition,
                });
                self.carry_out();
                self.stamps = None;
            }
            FromWorker::Draining(_) => {
                if self.core.worker_draining(now, session) {
                    if let Some(s) = self.sessions.get(&session) {
                        tracing::info!(worker = %s.worker_id, %session, "worker draining");
                    }
                }
            }
            FromWorker::Hello(_) => {
                tracing::debug!(%session, "ignored a second hello on a worker stream");
            }
        }
    }

    /// Carries out everything the core asked for.
    fn carry_out(&mut self) {
        while let Some(output) = self.core.poll_output() {
            self.observe(&SchedulerEvent::Output(&output));
            match output {
                Output::Dispatch(dispatch) => self.dispatch(dispatch),
                Output::Abort {
                    session,
                    execution,
                    attempt,
                } => {
                    if let Some(s) = self.sessions.get(&session) {
                        if s.understands_cancel {
                            let cancel = CancelRequest {
                                execution_id: execution.to_string(),
                                attempt,
                            };
                            let _ = s.outbox.send(Ok(SchedulerMessage {
                                message: Some(scheduler_message::Message::Cancel(cancel)),
                            }));
                        }
                    }
                }
                Output::Requeued { execution, .. } => {
                    if let Some(meta) = self.meta.get_mut(&execution) {
                        meta.shown = ExecStatus::Pending;
                    }
                    self.notify(execution);
                }
                Output::Finished {
                    execution,
                    terminal,
                } => self.finished(execution, terminal),
                Output::WorkerLost {
                    session,
                    worker,
                    reason,
                } => {
                    // Dropping the outbox closes the stream if it is still open.
                    self.sessions.remove(&session);
                    match reason {
                        LossReason::Disconnected => {
                            tracing::info!(%worker, %session, "worker left");
                        }
                        LossReason::HeartbeatTimeout | LossReason::Replaced => {
                            tracing::warn!(%worker, %session, %reason, "worker lost");
                        }
                    }
                }
                Output::Quarantined { session, worker } => {
                    tracing::warn!(
                        %worker,
                        %session,
                        "worker quarantined: its attempts keep ending with no result; \
                         it gets no new work until it answers for what it holds"
                    );
                }
                Output::QuarantineLifted { session, worker } => {
                    tracing::info!(%worker, %session, "worker out of quarantine: it answered for all it held");
                }
                Output::Evicted { execution } => {
                    self.meta.remove(&execution);
                    self.watchers.remove(&execution);
                    self.log.push(Record::Evicted { id: execution });
                }
            }
        }
    }

    /// Sends an attempt to its worker (with the function's definition first,
    /// if the worker caches definitions and has not had this one). A message
    /// too large to send fails that one attempt, never the worker's stream.
    fn dispatch(&mut self, dispatch: Dispatch) {
        let started_at_us = (self.clock)();
        let Some(session) = self.sessions.get_mut(&dispatch.session) else {
            return;
        };
        let worker_id = session.worker_id.clone();
        let function = self.functions.get(&*dispatch.function).map(|f| &f.proto);
        let define = match function {
            Some(function) if session.caches_functions => session
                .defined
                .insert(dispatch.function.clone())
                .then(|| scheduler_message::Message::Define(function.clone())),
            _ => None,
        };
        let request = ExecutionRequest {
            execution_id: dispatch.execution.to_string(),
            function_id: dispatch.function.to_string(),
            payload: dispatch.payload,
            attempt: dispatch.attempt,
            timeout_ms: dispatch.timeout.as_millis() as u64,
            function: function.filter(|_| !session.caches_functions).cloned(),
        };
        let messages = define
            .into_iter()
            .chain([scheduler_message::Message::Execute(request)])
            .map(|message| SchedulerMessage {
                message: Some(message),
            });
        let limit = self.options.message_limit();
        let mut too_large = None;
        for message in messages {
            let size = message.encoded_len();
            if size > limit {
                too_large = Some(match message.message {
                    Some(scheduler_message::Message::Define(_)) => {
                        session.defined.remove(&dispatch.function);
                        format!(
                            "the function's definition is {size} bytes encoded, over the \
                             {limit}-byte message limit; register it again with smaller code"
                        )
                    }
                    _ => format!(
                        "the execution request is {size} bytes encoded, over the \
                         {limit}-byte message limit"
                    ),
                });
                break;
            }
            // A closed outbox means the stream is ending; its disconnect will
            // re-queue this attempt.
            let _ = session.outbox.send(Ok(message));
        }
        self.log.push(Record::Started {
            id: dispatch.execution,
            attempt: dispatch.attempt,
            worker_id: worker_id.to_string(),
            started_at_us,
        });
        if let Some(meta) = self.meta.get_mut(&dispatch.execution) {
            meta.started_at_us = started_at_us;
            meta.worker_id = Some(worker_id);
            meta.shown = ExecStatus::Running;
        }
        self.notify(dispatch.execution);
        if let Some(error) = too_large {
            // Nothing was sent: answer for the worker, so the slot frees and
            // only this execution fails.
            let now = self.now();
            let outcome = Outcome::Failure {
                error,
                output: Bytes::new(),
            };
            self.core.result(
                now,
                dispatch.session,
                dispatch.execution,
                dispatch.attempt,
                outcome,
            );
        }
    }

    fn finished(&mut self, id: ExecutionId, terminal: Terminal) {
        if let Some(view) = self.core.execution(id) {
            if let Some(function) = self.functions.get_mut(&**view.function) {
                function.live = function.live.saturating_sub(1);
            }
        }
        let stamps = self.stamps.filter(|s| s.id == id);
        let now_us = (self.clock)();
        let attempt = self.core.execution(id).map_or(0, |view| view.attempt);
        let Some(meta) = self.meta.get_mut(&id) else {
            return;
        };
        if let Some(stamps) = stamps {
            if stamps.started_at_us != 0 {
                meta.started_at_us = stamps.started_at_us;
            }
        }
        meta.finished_at_us = stamps
            .map(|s| s.finished_at_us)
            .filter(|&at| at != 0)
            .unwrap_or(now_us);
        self.log.push(Record::Finished {
            id,
            finished: FinishedRecord {
                terminal,
                attempt,
                worker_id: meta.worker_id.as_deref().unwrap_or_default().to_string(),
                started_at_us: meta.started_at_us,
                finished_at_us: meta.finished_at_us,
            },
        });
        self.unpublished.insert(id, meta.shown);
        self.hold(Durable::Finished { id });
    }

    /// Sends the batch gathered this turn to the committer.
    fn flush(&mut self) {
        let expects_batch = self
            .waiting
            .back()
            .is_some_and(|&(seq, _)| seq == self.committer.next_seq());
        if !self.log.is_empty() || expects_batch {
            self.committer.submit(std::mem::take(&mut self.log));
        }
    }

    fn on_commit(&mut self, commit: Commit) {
        let (through, failure) = match commit {
            Commit::Durable(seq) => (seq, None),
            Commit::Failed { through, error } => {
                tracing::error!(%error, "the store failed to make records durable");
                (through, Some(error))
            }
        };
        if failure.is_none() {
            for id in std::mem::take(&mut self.stalled) {
                self.unpublished.remove(&id);
                self.notify(id);
            }
        }
        while self.waiting.front().is_some_and(|&(seq, _)| seq <= through) {
            let Some((_, what)) = self.waiting.pop_front() else {
                break;
            };
            let failed = || {
                let error = failure.clone().unwrap_or_default();
                Status::unavailable(format!("the store failed: {error}"))
            };
            match what {
                Durable::Accepted { reply, id } => {
                    let _ = reply.send(match failure {
                        None => Ok(id.to_string()),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::AcceptedWatched { reply, id } => {
                    // Its terminal state, if any, is published by a later
                    // entry: the record comes after the acceptance in the log.
                    let _ = reply.send(match failure {
                        None => self.follow(id),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::Registered { reply, function_id } => {
                    let _ = reply.send(match failure {
                        None => Ok(function_id),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::FunctionDeleted { reply } => {
                    let _ = reply.send(match failure {
                        None => Ok(()),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::Cancelled { reply } => {
                    let _ = reply.send(match failure {
                        None => Ok(ExecStatus::Cancelled.as_str().to_string()),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::Finished { id } if failure.is_some() => self.stalled.push(id),
                Durable::Finished { id } => {
                    self.unpublished.remove(&id);
                    self.notify(id);
                }
            }
        }
    }

    /// The execution as clients may see it now.
    fn info(&self, id: ExecutionId) -> Option<ExecutionInfo> {
        let view = self.core.execution(id)?;
        let meta = self.meta.get(&id);
        let mut info = ExecutionInfo {
            execution_id: id.to_string(),
            function_id: view.function.to_string(),
            status: view.status.as_str().to_string(),
            attempt: view.attempt,
            worker_id: meta
                .and_then(|m| m.worker_id.as_deref())
                .unwrap_or_default()
                .to_string(),
            created_at_us: meta.map_or(0, |m| m.created_at_us),
            started_at_us: meta.map_or(0, |m| m.started_at_us),
            ..Default::default()
        };
        if let Some(shown) = self.unpublished.get(&id) {
            info.status = shown.as_str().to_string();
        } else if let Some(terminal) = view.terminal {
            info.output = terminal.output().clone();
            info.error = terminal.error().to_string();
            info.finished_at_us = meta.map_or(0, |m| m.finished_at_us);
        }
        Some(info)
    }

    /// Sends the execution's current state to its watchers; a terminal state
    /// ends their streams.
    fn notify(&mut self, id: ExecutionId) {
        if !self.watchers.contains_key(&id) {
            return;
        }
        let Some(info) = self.info(id) else {
            self.watchers.remove(&id);
            return;
        };
        let terminal = ExecStatus::parse(&info.status).is_some_and(ExecStatus::is_terminal);
        if terminal {
            for watcher in self.watchers.remove(&id).unwrap_or_default() {
                let _ = watcher.send(info.clone());
            }
        } else if let Some(watchers) = self.watchers.get_mut(&id) {
            watchers.retain(|watcher| watcher.send(info.clone()).is_ok());
        }
    }

    fn list_executions(
        &self,
        request: &ListExecutionsRequest,
    ) -> Result<ListExecutionsResponse, Status> {
        let status = match request.status.as_str() {
            "" => None,
            text => Some(ExecStatus::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status {text:?} is not one of PENDING, RUNNING, COMPLETED, FAILED, CANCELLED"
                ))
            })?),
        };
        let after = match request.after_execution_id.as_str() {
            "" => None,
            text => Some(ExecutionId::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "after_execution_id {text:?} is not an execution id"
                ))
            })?),
        };
        let limit = match request.limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut ids: Vec<ExecutionId> = self
            .core
            .executions()
            .filter(|view| after.is_none_or(|after| view.id > after))
            .filter(|view| {
                request.function_id.is_empty() || *view.function.as_ref() == request.function_id
            })
            .filter(|view| {
                let shown = self
                    .unpublished
                    .get(&view.id)
                    .copied()
                    .unwrap_or(view.status);
                status.is_none_or(|wanted| shown == wanted)
            })
            .map(|view| view.id)
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let next_after_execution_id = match (more, ids.last()) {
            (true, Some(last)) => last.to_string(),
            _ => String::new(),
        };
        Ok(ListExecutionsResponse {
            executions: ids.into_iter().filter_map(|id| self.info(id)).collect(),
            next_after_execution_id,
        })
    }

    fn list_workers(&self) -> Vec<WorkerInfo> {
        self.core
            .workers()
            .map(|worker| WorkerInfo {
                worker_id: worker.id.to_string(),
                pool_size: worker.pool_size,
                in_flight: worker.in_flight,
                reported_running: worker.reported_running,
                draining: worker.draining,
                quarantined: worker.quarantined,
                timeouts_in_a_row: worker.timeouts_in_a_row,
                connected_at_us: self.wall_of(worker.connected_at),
                last_heartbeat_at_us: self.wall_of(worker.last_heard),
            })
            .collect()
    }

    fn stats(&self) -> ClusterStats {
        let stats = self.core.stats();
        // Executions finished but not yet durable still count where clients see them.
        let (mut pending, mut running) = (stats.pending as u64, stats.running as u64);
        let (mut completed, mut failed, mut cancelled) = (
            stats.completed as u64,
            stats.failed as u64,
            stats.cancelled as u64,
        );
        for (id, shown) in &self.unpublished {
            if let Some(view) = self.core.execution(*id) {
                match view.status {
                    ExecStatus::Completed => completed -= 1,
                    ExecStatus::Failed => failed -= 1,
                    ExecStatus::Cancelled => cancelled -= 1,
                    ExecStatus::Pending | ExecStatus::Running => continue,
                }
                match shown {
                    ExecStatus::Running => running += 1,
                    _ => pending += 1,
                }
            }
        }
        ClusterStats {
            workers: stats.workers as u32,
            capacity: stats.capacity as u32,
            in_flight: stats.in_flight as u32,
            queued: stats.pending as u32,
            pending,
            running,
            completed,
            failed,
            cancelled,
            queue_limit: stats.queue_limit as u32,
            watchers: self.watchers.values().map(|w| w.len() as u64).sum(),
            quarantined_workers: stats.quarantined as u32,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

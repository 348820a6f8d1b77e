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

mod durability;
mod listings;
mod outputs;
mod watch;
mod workers;

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
    ClusterStats, ListExecutionsRequest, ListFunctionsRequest, ListFunctionsResponse,
    RegisterFunctionRequest, TriggerExecutionRequest, WorkerInfo,
};
use taskforge_proto::worker::worker_message::Message as FromWorker;
use taskforge_proto::worker::{
    CancelRequest, ForgetFunction, SchedulerMessage, WorkerHello, scheduler_message,
};

use super::SchedulerOptions;
use super::committer::{Commit, Committer};
use super::convert::{check_size, parse_execution_id, resolve_policy};
use super::idempotency::{self, IdempotencyKeys, check_key};
use super::observer::SchedulerEvent;
use super::paging::Page;
use super::streams::Outbox;
use super::watchers::Watchers;
use crate::clock::WallClock;
use crate::store::{
    ExecutionRecord, FinishedRecord, FunctionRecord, IdempotencyKey, Location, Record, Recovered,
    Store,
};
pub(crate) use listings::Listing;
pub(crate) use watch::{AtTheCaps, Watch};

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
        reply: Reply<Watch>,
    },
    /// `None` when the execution is unknown.
    Status {
        id: String,
        reply: Reply<Option<Found>>,
    },
    Watch {
        id: String,
        reply: Reply<Watch>,
    },
    /// A watch's stream ended: drop the execution's watches whose client
    /// has gone.
    Unwatched {
        id: ExecutionId,
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
        reply: Reply<Listing>,
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

/// An execution as the actor finds it: live ones as clients may see them
/// now; finished ones as where their record is, for the caller to read (the
/// actor never waits for a disk).
#[derive(Debug)]
pub(crate) enum Found {
    Live(ExecutionInfo),
    Filed { id: ExecutionId, location: Location },
}

/// Most executions one page of a listing returns.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
/// Largest pool size a worker may announce.
const MAX_POOL_SIZE: u32 = 4096;
/// A language as a runtime name: what workers announce (see `Runtimes`).
fn runtime_of(language: &str) -> Arc<str> {
    Arc::from(language.trim().to_ascii_lowercase())
}

/// Random bits below an execution id's millisecond: 16.7 million ids per
/// millisecond before the draw has to retry.
const ID_RANDOM_BITS: u32 = 24;

/// An execution id that sorts by the millisecond it was made in (the low
/// 40 bits of the Unix milliseconds, wrapping every 34 years) above
/// `ID_RANDOM_BITS` random bits. Listings come out oldest first, and the
/// id-ordered index only ever grows at its end and shrinks at its start, as
/// retention forgets the oldest: with a long history, random ids would
/// touch a different part of it for every execution.
fn time_ordered_id(now_us: u64, random: u64) -> ExecutionId {
    let millis = (now_us / 1_000) & ((1 << (64 - ID_RANDOM_BITS)) - 1);
    ExecutionId((millis << ID_RANDOM_BITS) | (random & ((1 << ID_RANDOM_BITS) - 1)))
}

/// Bounds on a function's own memory limit: one WebAssembly page, and the
/// most a 32-bit module can address.
const MIN_FUNCTION_MEMORY: u64 = 64 << 10;
const MAX_FUNCTION_MEMORY: u64 = 4 << 30;

/// Furthest back the core's clock can place a restored execution's end (see
/// [`Actor::now`]); retention ages beyond it count from this far back.
const MAX_EPOCH: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Commands taken per turn before outputs are carried out and records flushed.
const COMMANDS_PER_TURN: usize = 256;

#[derive(Debug)]
struct RegisteredFunction {
    /// Shared with every execution of the function.
    key: Arc<str>,
    /// Its language, the runtime a worker needs to run it (normalised:
    /// trimmed, lower case, as workers announce theirs).
    runtime: Arc<str>,
    proto: Function,
    /// Executions of it that are not terminal yet: it cannot be deleted
    /// while there are any.
    live: u32,
    /// How long its executions take from dispatch to result, smoothed;
    /// `None` until one has ended. Quick ones get the commit delay.
    round_trip_us: Option<u64>,
}

impl RegisteredFunction {
    /// Folds one execution's dispatch-to-result time into the estimate
    /// (an exponential average: 1/8 new, 7/8 what it was).
    fn took(&mut self, micros: u64) {
        self.round_trip_us = Some(match self.round_trip_us {
            Some(was) => (was * 7 + micros) / 8,
            None => micros,
        });
    }

    /// Whether its result is likely back within `delay` of its dispatch
    /// (unmeasured counts as quick: the delay bounds what a wrong guess costs).
    fn is_quick(&self, delay: Duration) -> bool {
        self.round_trip_us
            .is_none_or(|micros| micros <= delay.as_micros() as u64)
    }
}

/// What the service remembers of an execution beyond the core's state, from
/// its acceptance until the history holds it (then its summary is in
/// `Actor::listed` and the rest on disk).
#[derive(Debug)]
struct Meta {
    created_at_us: u64,
    started_at_us: u64,
    finished_at_us: u64,
    worker_id: Option<Arc<str>>,
    /// The last non-terminal status clients were shown.
    shown: ExecStatus,
    /// The client's idempotency key, freed when the execution is forgotten.
    idempotency_key: Option<Box<str>>,
    /// The batch that holds its acceptance record (0: restored, durable).
    accepted_in: u64,
    /// Its acceptance never became durable and it was failed (see
    /// `Actor::abandon`): a retry that found it through its key before that
    /// gets UNAVAILABLE too.
    abandoned: bool,
    /// The tail of what its last attempt printed, once it finished (only
    /// runtimes that capture output have any).
    logs: Option<Box<str>>,
    /// How it ended, kept until it is filed in the history.
    terminal: Option<Terminal>,
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
    /// The runtimes it announced; empty = anything (a seed worker).
    runtimes: Vec<String>,
}

/// Something held back until a batch of records is durable.
#[derive(Debug)]
enum Durable {
    Accepted {
        reply: Reply<String>,
        trigger: Triggered,
    },
    /// A trigger that also follows its execution: once it is durably
    /// accepted, the caller gets a watch that starts from its state then.
    AcceptedWatched {
        reply: Reply<Watch>,
        trigger: Triggered,
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

/// What a trigger amounted to.
#[derive(Clone, Copy, Debug)]
struct Triggered {
    id: ExecutionId,
    /// False for a retry that found an earlier execution by its idempotency
    /// key: that one's acceptance was settled by its own batch.
    fresh: bool,
}

/// Stamps of the result being applied, for the record of its execution's end.
#[derive(Clone, Debug)]
struct Stamps {
    id: ExecutionId,
    started_at_us: u64,
    finished_at_us: u64,
    logs: String,
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
    /// Commits that failed in a row (logged once per outage).
    failed_commits: u64,
    /// The last batch the committer has answered for.
    committed_through: u64,
    /// Quick executions dispatched before their acceptance was durable, by
    /// the batch holding it: their results are due, and the committer may
    /// wait for them (the commit delay, see `committer`).
    results_due: FxHashMap<ExecutionId, u64>,
    functions: BTreeMap<String, RegisteredFunction>,
    meta: FxHashMap<ExecutionId, Meta>,
    keys: IdempotencyKeys,
    /// Executions accepted since start, by runtime (a counter for metrics).
    accepted_by_runtime: BTreeMap<String, u64>,
    /// Every execution held, in id order: listings page through it from a
    /// cursor instead of sorting everything per call. Finished executions
    /// filed in the history have their location here, and nothing in
    /// `meta`: this and the core's few bytes are all that memory holds of
    /// them.
    listed: BTreeMap<ExecutionId, Option<Location>>,
    /// Idempotency keys of filed executions, to free when retention forgets
    /// them.
    filed_keys: FxHashMap<ExecutionId, Box<str>>,
    /// The store answers for the history itself (`HistorySearch`): a filed
    /// execution is forgotten here at once (its key aside), and anything
    /// not held here may be in the history.
    history_in_store: bool,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    watchers: Watchers,
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
        let history_in_store = store.history().search().is_some();
        let committer =
            Committer::start(store, options.store_runner, options.commit_delay, reports)?;
        // Mix what was recovered into the id seed, so a restart with the same
        // configured seed does not replay the ids of the previous run.
        let recovered_ids = recovered.executions.iter().map(|e| e.record.id);
        let recovered_ids = recovered_ids.chain(recovered.history.iter().map(|f| f.id));
        let recovered_mix = recovered_ids.fold(
            (recovered.executions.len() + recovered.history.len()) as u64,
            |acc, id| acc.rotate_left(5) ^ id.0,
        );
        let watchers = Watchers::new(options.max_watchers_per_execution, options.max_watchers);
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
            failed_commits: 0,
            committed_through: 0,
            results_due: FxHashMap::default(),
            functions: BTreeMap::new(),
            meta: FxHashMap::default(),
            keys: IdempotencyKeys::default(),
            accepted_by_runtime: BTreeMap::new(),
            listed: BTreeMap::new(),
            filed_keys: FxHashMap::default(),
            history_in_store,
            sessions: BTreeMap::new(),
            next_session: 1,
            watchers,
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
                max_memory_bytes: function.max_memory_bytes,
            };
            let key = Arc::from(function.function_id.as_str());
            let registered = RegisteredFunction {
                key,
                runtime: runtime_of(&proto.language),
                proto,
                live: 0,
                round_trip_us: None,
            };
            self.functions.insert(function.function_id, registered);
        }
        let pending = recovered.executions.len();
        for execution in recovered.executions {
            let record = execution.record;
            let id = record.id;
            // Deletion waits for a function's executions to finish, so its
            // function is known; should it not be, the execution waits for
            // a runtime no worker runs and fails at its start deadline.
            let (function, runtime) = self.functions.get(&record.function_id).map_or_else(
                || (Arc::from(record.function_id.as_str()), Arc::from("")),
                |f| (f.key.clone(), f.runtime.clone()),
            );
            let submission = Submission {
                id,
                function,
                runtime,
                payload: record.payload,
                policy: record.policy,
            };
            let prior = Prior::Pending {
                attempts_started: execution.attempts_started,
            };
            if let Err(error) = self.core.restore(now, submission, prior) {
                tracing::warn!(%id, %error, "skipped a recovered execution");
                continue;
            }
            if let Some(function) = self.functions.get_mut(&record.function_id) {
                function.live += 1;
            }
            if let Some(claim) = &record.idempotency {
                self.keys.claim(claim.key.clone(), id, claim.digest);
            }
            // Running if its attempt may still run on a worker (orphaned).
            let shown = self
                .core
                .execution(id)
                .map_or(ExecStatus::Pending, |view| view.status);
            let meta = Meta {
                accepted_in: 0,
                created_at_us: record.created_at_us,
                started_at_us: 0,
                finished_at_us: 0,
                worker_id: None,
                shown,
                idempotency_key: record.idempotency.map(|claim| claim.key.into()),
                abandoned: false,
                logs: None,
                terminal: None,
            };
            self.meta.insert(id, meta);
            self.listed.insert(id, None);
        }
        let finished = recovered.history.len();
        let clock_now_us = self.clock_now_us();
        self.core.reserve_finished(finished);
        // Never dispatched again: they need no runtime.
        let no_runtime: Arc<str> = Arc::from("");
        // The listing index is built at once from all of them: far faster
        // than a million inserts at random places.
        let mut filed_entries = Vec::with_capacity(finished);
        for filed in recovered.history {
            let id = filed.id;
            if self.history_in_store {
                // The store holds it; only a key to recognise retries is kept.
                if let Some(claim) = filed.idempotency {
                    self.keys.claim(claim.key.clone(), id, claim.digest);
                    self.filed_keys.insert(id, claim.key.into());
                }
                continue;
            }
            let ago = clock_now_us.saturating_sub(filed.finished_at_us);
            let submission = Submission {
                id,
                function: filed.function_id,
                runtime: no_runtime.clone(),
                payload: Bytes::new(),
                policy: taskforge_core::Policy::default(),
            };
            let prior = Prior::Finished {
                status: filed.status,
                attempt: filed.attempt,
                finished_at: now.saturating_sub(Duration::from_micros(ago)),
            };
            if let Err(error) = self.core.restore(now, submission, prior) {
                tracing::warn!(%id, %error, "skipped a filed execution");
                continue;
            }
            if let Some(claim) = filed.idempotency {
                self.keys.claim(claim.key.clone(), id, claim.digest);
                self.filed_keys.insert(id, claim.key.into());
            }
            filed_entries.push((id, Some(filed.location)));
        }
        filed_entries.extend(std::mem::take(&mut self.listed));
        self.listed = filed_entries.into_iter().collect();
        if pending + finished > 0 || !self.functions.is_empty() {
            tracing::info!(
                functions = self.functions.len(),
                pending,
                finished,
                "restored into the scheduler"
            );
        }
        self.carry_out();
        self.flush();
    }

    pub(crate) async fn run(mut self) {
        while self.turn().await {}
        // Every sender is gone: wait for what is still on its way to disk.
        while !self.waiting.is_empty() {
            match self.commits.recv().await {
                Some(commit) => self.on_commit(commit),
                None => break,
            }
        }
    }

    /// One turn of the loop: whatever woke it (a commit report, up to
    /// COMMANDS_PER_TURN commands, a deadline), then every deadline that is
    /// due, then the outputs and the batch of records. False once every
    /// command sender is gone.
    async fn turn(&mut self) -> bool {
        let deadline = self.core.poll_timeout().map(|at| self.tokio_instant(at));
        tokio::select! {
            biased;
            Some(commit) = self.commits.recv() => self.on_commit(commit),
            command = self.inbox.recv() => {
                let Some(command) = command else { return false };
                self.handle(command);
                for _ in 1..COMMANDS_PER_TURN {
                    match self.inbox.try_recv() {
                        Ok(command) => self.handle(command),
                        Err(_) => break,
                    }
                }
            }
            () = sleep_until(deadline) => {}
        }
        // Deadlines are checked every turn, not only when the timer branch
        // wins: under a steady stream of commands it never would, and
        // heartbeat and attempt timeouts would wait for a quiet moment.
        let now = self.now();
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
        self.carry_out();
        self.flush();
        true
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
                Ok(trigger) => self.hold(Durable::Accepted { reply, trigger }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::TriggerAndWatch { request, reply } => match self.trigger(request) {
                Ok(trigger) => self.hold(Durable::AcceptedWatched { reply, trigger }),
                Err(status) => drop(reply.send(Err(status))),
            },
            Command::Status { id, reply } => {
                let info = match id.as_str() {
                    "" => Err(Status::invalid_argument("execution_id is required")),
                    text => Ok(ExecutionId::parse(text).and_then(|id| self.find(id))),
                };
                let _ = reply.send(info);
            }
            Command::Watch { id, reply } => {
                let _ = reply.send(self.watch(&id));
            }
            Command::Unwatched { id } => self.watchers.sweep(id),
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
        let (language, code) = self
            .options
            .languages
            .check(&request.language, request.code)
            .map_err(Status::invalid_argument)?;
        resolve_policy(
            &self.options.default_policy,
            (request.timeout_ms, request.max_attempts),
            (0, 0, 0),
        )?;
        if request.max_memory_bytes != 0
            && !(MIN_FUNCTION_MEMORY..=MAX_FUNCTION_MEMORY).contains(&request.max_memory_bytes)
        {
            return Err(Status::invalid_argument(format!(
                "max_memory_bytes {} is not between {MIN_FUNCTION_MEMORY} (64 KiB, one \
                 WebAssembly page) and {MAX_FUNCTION_MEMORY} (4 GiB); 0 means the worker's limit",
                request.max_memory_bytes
            )));
        }
        let function_id = loop {
            let id = format!("{:016x}", self.ids.random::<u64>());
            if !self.functions.contains_key(&id) {
                break id;
            }
        };
        let proto = Function {
            function_id: function_id.clone(),
            name: request.name,
            language,
            code,
            timeout_ms: request.timeout_ms,
            max_attempts: request.max_attempts,
            max_memory_bytes: request.max_memory_bytes,
        };
        self.log.push(Record::Function(FunctionRecord {
            function_id: function_id.clone(),
            name: proto.name.clone(),
            language: proto.language.clone(),
            code: proto.code.clone(),
            timeout_ms: proto.timeout_ms,
            max_attempts: proto.max_attempts,
            max_memory_bytes: proto.max_memory_bytes,
            created_at_us: (self.clock)(),
        }));
        let key = Arc::from(function_id.as_str());
        let registered = RegisteredFunction {
            key,
            runtime: runtime_of(&proto.language),
            proto,
            live: 0,
            round_trip_us: None,
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

    fn trigger(&mut self, request: TriggerExecutionRequest) -> Result<Triggered, Status> {
        if request.function_id.is_empty() {
            return Err(Status::invalid_argument("function_id is required"));
        }
        let idempotency = match request.idempotency_key.as_str() {
            "" => None,
            key => {
                check_key(key)?;
                let digest = idempotency::digest(&request.function_id, &request.payload);
                // A retry: the same execution, answered once its acceptance
                // is durable (it is, or it is in a batch before this one).
                if let Some(existing) = self.keys.find(key, digest)? {
                    return Ok(Triggered {
                        id: existing,
                        fresh: false,
                    });
                }
                Some(IdempotencyKey {
                    key: key.to_string(),
                    digest,
                })
            }
        };
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
        let now_us = (self.clock)();
        let id = loop {
            let id = time_ordered_id(now_us, self.ids.random());
            if self.core.execution(id).is_none() {
                break id;
            }
        };
        let submission = Submission {
            id,
            function: function.key.clone(),
            runtime: function.runtime.clone(),
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
        match self.accepted_by_runtime.get_mut(&function.proto.language) {
            Some(count) => *count += 1,
            None => {
                let language = function.proto.language.clone();
                self.accepted_by_runtime.insert(language, 1);
            }
        }
        let created_at_us = now_us;
        if let Some(claim) = &idempotency {
            self.keys.claim(claim.key.clone(), id, claim.digest);
        }
        self.listed.insert(id, None);
        self.meta.insert(
            id,
            Meta {
                accepted_in: self.committer.next_seq(),
                created_at_us,
                started_at_us: 0,
                finished_at_us: 0,
                worker_id: None,
                shown: ExecStatus::Pending,
                idempotency_key: idempotency.as_ref().map(|claim| claim.key.as_str().into()),
                abandoned: false,
                logs: None,
                terminal: None,
            },
        );
        self.log.push(Record::Accepted(ExecutionRecord {
            id,
            function_id: request.function_id,
            payload: request.payload,
            policy,
            created_at_us,
            idempotency,
        }));
        Ok(Triggered { id, fresh: true })
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
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

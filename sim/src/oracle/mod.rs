//! What must be true of every run, checked against its trace.
//!
//! The oracle knows the plan (what each request asked for, each worker's pool
//! size) and watches the trace as it is written. Safety properties are checked
//! the moment an entry could break them; liveness and the right answers are
//! checked once the run is over and every fault has healed:
//!
//! - **Liveness**: every execution a client saw ACCEPTED reaches a terminal
//!   state, and a status query finds it (an ACCEPTED execution is never lost,
//!   not even by a scheduler crash that took unsynced writes with it).
//! - **Terminal states never change**: once a client saw one (on a watch or in
//!   a status query), every later observation shows that same state — so the
//!   watch stream and status queries agree, and duplicates are never visible.
//! - **Right answers**: a terminal state is what the function computes from
//!   the payload (see [`Expected`]), or a failure that says the attempts ran
//!   out — and then the trace shows that many dispatches.
//! - **Runtimes**: every dispatch goes to a worker that runs the runtime the
//!   execution's function was registered in (what each worker id runs is in
//!   the plan, from where the run built it). An execution never dispatched
//!   whose runtime no surviving worker runs (none ever did, or every one that
//!   did crashed for good) must fail once its schedule-to-start limit passes,
//!   saying that no connected worker runs it; any other execution must end
//!   as its function says, however long its runtime had no worker.
//! - **Pool size, counted on the worker side**: no incarnation of a worker
//!   ever holds more tasks at once than its pool size. The scheduler's own
//!   count (what it has in flight on a session) stays within pool size plus
//!   prefetch.
//! - **Attempts**: no dispatch carries an attempt number beyond the
//!   execution's `max_attempts`, and workers start an execution at most
//!   `max_attempts` times — plus one per scheduler crash, since a dispatch may
//!   overlap the fsync of its `started` record and a crash can lose it.
//! - **Fencing**: the scheduler accepts a result only for the attempt it has
//!   in flight on that very session, while the session is alive; it drops
//!   every other (late, duplicated, from a lost or replaced session) — and
//!   never drops the current one.
//! - **Silence is noticed**: when a worker's link to the scheduler goes quiet
//!   (partitioned, held, or the worker died silently), the scheduler declares
//!   the worker's session lost by heartbeat timeout within that timeout —
//!   nothing else can tell it.
//! - **No attempt outlives its deadline**: an attempt with no result by its
//!   timeout plus the grace is given up on (counted lost and retried, or the
//!   execution fails once its attempts are used up) — a worker that heartbeats
//!   but never answers cannot keep an execution forever.
//! - **Quarantine**: a session is quarantined by the timeout that makes
//!   [`QUARANTINE_AFTER`] in a row (and not before); a quarantined session is
//!   sent nothing until the quarantine is lifted, and that happens only once
//!   it holds nothing.
//! - **What the black hole took finishes elsewhere**: an execution dispatched
//!   to the black hole ends as its function says, unless its `max_attempts`
//!   is within what the run could take from it — [`QUARANTINE_AFTER`] per
//!   black-hole session, plus one per loss of another session it was running
//!   on, plus one per scheduler restart.
//! - **Adoption**: an attempt a reconnecting worker reports still holding
//!   is adopted only while it is its execution's latest dispatch and the
//!   execution has not finished; it then counts as in flight on that session
//!   (pool size, fencing and deadlines as for a dispatch).
//! - **A live worker's id is not taken**: a real worker's session is never
//!   lost as replaced while its link has stayed healthy since it joined —
//!   its heartbeats, every [`HEARTBEAT_INTERVAL`], keep it heard from well
//!   within [`TAKEOVER_AFTER`].

mod end;
mod strikes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use taskforge_core::scheduler::{AbortReason, LossReason, ResultDisposition};
use taskforge_core::{ExecutionId, SessionId};
use taskforge_services::worker::TaskEvent;

use crate::cluster::{
    self, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, QUARANTINE_AFTER, RuntimeName, RuntimeSet,
    SCHEDULER, TAKEOVER_AFTER, TIMEOUT_GRACE, worker_host,
};
use crate::faults::Fault;
use crate::rogue::{BLACK_HOLE, IMPOSTOR_POOL_SIZE, Rogue, RogueEvent};
use crate::trace::{Decision, Entry, Event, Incarnation, Observation, View, WorkerIndex};
use crate::workload::{Expected, Function, Request, RequestId};

/// Something the oracle found wrong.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Simulated time of the entry that showed it (or of the end of the run).
    pub at: Duration,
    pub execution: Option<ExecutionId>,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.as_micros();
        write!(
            f,
            "at {}.{:06}s: {}",
            at / 1_000_000,
            at % 1_000_000,
            self.what
        )
    }
}

/// What the oracle is told about the plan of a run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub requests: Vec<Request>,
    /// Pool size of `worker-1`, `worker-2`, ...
    pub pool_sizes: Vec<u32>,
    /// What each worker id runs (the scheduler's observer does not say what a
    /// hello announced).
    pub runtimes: BTreeMap<String, RuntimeSet>,
    pub prefetch: u32,
    /// A black hole joins the cluster (and must be quarantined).
    pub black_hole: bool,
}

/// How late after the heartbeat timeout a silent worker may still be declared
/// lost: the timer fires in the step it is due, plus a little.
const LOSS_SLACK: Duration = Duration::from_millis(100);

/// How long a real worker's link must have been left alone before a session
/// it opens counts as surely heard from: a hello sent before a crash, bounce
/// or hold may still arrive after it, for a session nobody heartbeats.
const SETTLED_FOR: Duration = Duration::from_secs(2);

/// Slower links than this (the most a message may take) leave too little of
/// [`TAKEOVER_AFTER`] after a heartbeat interval to call a worker heard from.
const AUDIBLE_LATENCY: Duration = Duration::from_millis(200);

/// A timeout may be observed this much before the deadline the oracle
/// computes from the trace's timestamps.
const EARLY_SLACK: Duration = Duration::from_millis(5);

// A heartbeat sent up to AUDIBLE_LATENCY late still lands within
// TAKEOVER_AFTER of the one before it.
const _: () = assert!(
    HEARTBEAT_INTERVAL.as_millis() + AUDIBLE_LATENCY.as_millis() < TAKEOVER_AFTER.as_millis()
);

#[derive(Debug, Default)]
pub struct Oracle {
    plan: Plan,
    violations: Vec<Violation>,
    workers: BTreeMap<WorkerIndex, WorkerTasks>,
    scheduler: SchedulerShadow,
    scheduler_restarts: u32,
    silences: Vec<Silence>,
    executions: BTreeMap<ExecutionId, Execution>,
    /// Sessions the black hole opened, over the whole run.
    black_hole_sessions: u32,
    black_hole_quarantined: bool,
    /// When each real worker's link (or the worker) was last disturbed.
    disturbed: BTreeMap<String, Duration>,
    /// Real workers whose link to the scheduler is partitioned or held now.
    quiet: BTreeSet<String>,
    /// A latency change made links too slow to count on heartbeats.
    slow: bool,
    /// Each registered function's id: which function, in which runtime.
    functions: BTreeMap<String, (Function, RuntimeName)>,
    /// Workers crashed for good, by id.
    crashed: BTreeSet<String>,
}

/// A worker whose link to the scheduler went quiet while it had a session.
#[derive(Debug)]
struct Silence {
    worker: String,
    session: SessionId,
    incarnation: Incarnation,
    /// By then the session must have been declared lost.
    deadline: Duration,
}

/// The tasks the latest incarnation of a worker holds.
#[derive(Debug, Default)]
struct WorkerTasks {
    incarnation: Incarnation,
    running: BTreeSet<(ExecutionId, u32)>,
}

/// What the current incarnation of the scheduler holds, rebuilt from its
/// decisions alone.
#[derive(Debug, Default)]
struct SchedulerShadow {
    incarnation: Incarnation,
    sessions: BTreeMap<SessionId, Session>,
    /// The attempt in flight for each running execution.
    current: BTreeMap<ExecutionId, Current>,
    finished: BTreeSet<ExecutionId>,
    /// An attempt on this session just timed out: if that made it
    /// [`QUARANTINE_AFTER`] in a row, the next decision must quarantine it.
    strike: Option<SessionId>,
}

#[derive(Debug)]
struct Session {
    worker: String,
    pool_size: u32,
    in_flight: u32,
    /// Attempts in a row the scheduler timed out on it.
    timeouts_in_a_row: u32,
    quarantined: bool,
    black_hole: bool,
    /// A real worker's session, heard from at its hello and surely every
    /// heartbeat since: its link has been left alone all along.
    audible: bool,
    /// What its worker runs (`None`: a worker id the plan does not know).
    runtimes: Option<RuntimeSet>,
}

/// An attempt in flight.
#[derive(Debug)]
struct Current {
    session: SessionId,
    attempt: u32,
    dispatched_at: Duration,
    /// Already reported as outliving its deadline.
    overdue: bool,
}

impl Current {
    fn is(&self, session: SessionId, attempt: u32) -> bool {
        (self.session, self.attempt) == (session, attempt)
    }
}

/// Everything seen of one execution, over the whole run.
#[derive(Debug, Default)]
struct Execution {
    request: Option<RequestId>,
    /// The highest attempt number dispatched, and how many dispatches.
    highest_attempt: u32,
    dispatches: u32,
    /// Starts on workers (and attempts the black hole took).
    starts: u32,
    /// Dispatched to the black hole at least once.
    black_holed: bool,
    /// Attempts lost with a session other than the black hole's, or timed
    /// out on one.
    other_losses: u32,
    /// The first terminal state a client saw, and when.
    terminal: Option<(View, Duration)>,
    /// A status query answered with this terminal state.
    confirmed: bool,
    gave_up: bool,
}

impl Oracle {
    pub fn new(plan: Plan) -> Oracle {
        Oracle {
            plan,
            ..Oracle::default()
        }
    }

    /// Violations found so far.
    pub fn violations(&self) -> usize {
        self.violations.len()
    }

    /// Tasks the latest incarnation of `worker` holds.
    pub fn running_on(&self, worker: WorkerIndex) -> usize {
        self.workers.get(&worker).map_or(0, |w| w.running.len())
    }

    /// A worker's link to the scheduler went quiet at `at`.
    fn silence(&mut self, at: Duration, worker: &str) {
        if self.silences.iter().any(|s| s.worker == worker) {
            return;
        }
        let live = self
            .scheduler
            .sessions
            .iter()
            .find(|(_, session)| session.worker == worker);
        if let Some((&session, _)) = live {
            self.silences.push(Silence {
                worker: worker.to_string(),
                session,
                incarnation: self.scheduler.incarnation,
                deadline: at + HEARTBEAT_TIMEOUT + LOSS_SLACK,
            });
        }
    }

    /// The silent sessions the scheduler should have declared lost by `at`.
    fn overdue_silences(&mut self, at: Duration) {
        let incarnation = self.scheduler.incarnation;
        let mut overdue = Vec::new();
        self.silences.retain(|silence| {
            if silence.incarnation != incarnation {
                return false; // the scheduler restarted: every session is gone
            }
            if at > silence.deadline {
                overdue.push(format!(
                    "{} ({}) went silent but was not declared lost within the heartbeat \
                     timeout ({HEARTBEAT_TIMEOUT:?})",
                    silence.worker, silence.session
                ));
                return false;
            }
            true
        });
        for what in overdue {
            self.violation(at, None, what);
        }
    }

    fn fault(&mut self, at: Duration, fault: &Fault) {
        let worker_link = |a: &str, b: &str| match (a, b) {
            (SCHEDULER, worker) | (worker, SCHEDULER) if worker.starts_with("worker-") => {
                Some(worker.to_string())
            }
            _ => None,
        };
        match fault {
            Fault::Partition(a, b) | Fault::Hold(a, b) => {
                if let Some(worker) = worker_link(a, b) {
                    self.silence(at, &worker);
                    self.disturb(at, &worker);
                    self.quiet.insert(worker);
                }
            }
            Fault::Repair(a, b) | Fault::Release(a, b) => {
                if let Some(worker) = worker_link(a, b) {
                    self.silences.retain(|s| s.worker != worker);
                    self.disturb(at, &worker);
                    self.quiet.remove(&worker);
                }
            }
            Fault::CrashWorker { worker, silent } => {
                if *silent {
                    self.silence(at, &worker_host(*worker));
                }
                self.disturb(at, &worker_host(*worker));
                self.crashed.insert(worker_host(*worker));
            }
            Fault::BounceWorker { worker } => self.disturb(at, &worker_host(*worker)),
            // A crashed scheduler forgets every session, silent or not, and
            // times nothing out while it is down.
            Fault::CrashScheduler => {
                self.silences.clear();
                self.scheduler.current.clear();
            }
            Fault::MaxLatency(latency) => {
                self.slow = *latency >= AUDIBLE_LATENCY;
                if self.slow {
                    for session in self.scheduler.sessions.values_mut() {
                        session.audible = false;
                    }
                }
            }
            Fault::RestartScheduler | Fault::PowerCut { .. } => {}
        }
    }

    /// Something happened to `worker` or its link: its sessions can no longer
    /// be counted on to be heard from.
    fn disturb(&mut self, at: Duration, worker: &str) {
        self.disturbed.insert(worker.to_string(), at);
        for session in self.scheduler.sessions.values_mut() {
            if session.worker == worker {
                session.audible = false;
            }
        }
    }

    /// Whether a session `worker` opens now will surely be heard from every
    /// heartbeat interval for as long as nothing disturbs it.
    fn settled(&self, at: Duration, worker: &str, pool_size: u32) -> bool {
        let real = (1..=self.plan.pool_sizes.len()).any(|index| worker_host(index) == worker)
            && pool_size != IMPOSTOR_POOL_SIZE;
        let left_alone = self
            .disturbed
            .get(worker)
            .is_none_or(|&since| at >= since + SETTLED_FOR);
        real && left_alone && !self.quiet.contains(worker) && !self.slow
    }

    fn violation(&mut self, at: Duration, execution: Option<ExecutionId>, what: String) {
        self.violations.push(Violation {
            at,
            execution,
            what,
        });
    }

    fn request(&self, id: RequestId) -> Option<&Request> {
        self.plan.requests.get(id as usize)
    }

    /// Checks what can be checked the moment `entry` is written.
    pub fn observe(&mut self, entry: &Entry) {
        let at = entry.at;
        self.overdue_silences(at);
        self.overdue_attempts(at);
        match &entry.event {
            Event::Fault(fault) => self.fault(at, fault),
            Event::Note(_) | Event::WorkerStarted { .. } => {}
            Event::SchedulerStarted { incarnation } => {
                if *incarnation > 1 {
                    self.scheduler_restarts += 1;
                }
                self.scheduler = SchedulerShadow {
                    incarnation: *incarnation,
                    ..SchedulerShadow::default()
                };
            }
            Event::Scheduler {
                incarnation,
                decision,
            } => {
                if *incarnation == self.scheduler.incarnation {
                    self.decision(at, decision);
                }
            }
            Event::Task {
                worker,
                incarnation,
                event,
            } => self.task(at, *worker, *incarnation, *event),
            Event::Client { observation, .. } => self.observation(at, observation),
            Event::Rogue { rogue, event } => self.rogue(*rogue, event),
        }
    }

    fn rogue(&mut self, rogue: Rogue, event: &RogueEvent) {
        if let (Rogue::BlackHole, &RogueEvent::Took { execution, .. }) = (rogue, event) {
            // Taken and never to be answered for, but an attempt all the same.
            self.executions.entry(execution).or_default().starts += 1;
        }
    }

    fn task(
        &mut self,
        at: Duration,
        worker: WorkerIndex,
        incarnation: Incarnation,
        event: TaskEvent,
    ) {
        let pool_size = self.plan.pool_sizes.get(worker - 1).copied().unwrap_or(0);
        let tasks = self.workers.entry(worker).or_default();
        if incarnation < tasks.incarnation {
            return; // a task of a crashed incarnation, dropped with it
        }
        if incarnation > tasks.incarnation {
            *tasks = WorkerTasks {
                incarnation,
                running: BTreeSet::new(),
            };
        }
        match event {
            TaskEvent::Started { execution, attempt } => {
                let fresh = tasks.running.insert((execution, attempt));
                let running = tasks.running.len();
                self.executions.entry(execution).or_default().starts += 1;
                if !fresh {
                    self.violation(
                        at,
                        Some(execution),
                        format!(
                            "worker-{worker} started {execution}/{attempt} while already running it"
                        ),
                    );
                }
                if running > pool_size as usize {
                    self.violation(
                        at,
                        Some(execution),
                        format!(
                            "worker-{worker} runs {running} tasks at once; its pool size is {pool_size}"
                        ),
                    );
                }
            }
            TaskEvent::Ended { execution, attempt } => {
                tasks.running.remove(&(execution, attempt));
            }
        }
    }

    fn decision(&mut self, at: Duration, decision: &Decision) {
        self.check_strike(at, decision);
        match decision {
            Decision::WorkerJoined {
                session,
                worker,
                pool_size,
            } => self.joined(at, *session, worker, *pool_size),
            Decision::WorkerLost {
                session,
                worker,
                reason,
            } => self.lost(at, *session, worker, *reason),
            Decision::Dispatch {
                session,
                execution,
                attempt,
                function,
            } => self.dispatched(at, *session, *execution, *attempt, function),
            &Decision::Result {
                session,
                execution,
                attempt,
                disposition,
            } => self.result(at, session, execution, attempt, disposition),
            &Decision::Abort {
                session,
                execution,
                attempt,
                reason: AbortReason::NoResult,
            } => self.aborted(at, session, execution, attempt),
            // A reconnecting worker held an attempt not wanted any more: it
            // holds the slot until the worker reports it.
            &Decision::Abort {
                session,
                reason: AbortReason::NotAdopted,
                ..
            } => {
                if let Some(s) = self.scheduler.sessions.get_mut(&session) {
                    s.in_flight += 1;
                }
            }
            // The execution ended while this attempt ran (here only an
            // acceptance whose sync failed: clients never cancel).
            Decision::Abort { .. } => {}
            &Decision::Adopted {
                session,
                execution,
                attempt,
            } => self.adopted(at, session, execution, attempt),
            Decision::Requeued { execution, .. } => {
                self.scheduler.current.remove(execution);
            }
            Decision::Finished { execution, .. } => {
                self.scheduler.current.remove(execution);
                if !self.scheduler.finished.insert(*execution) {
                    self.violation(at, Some(*execution), format!("{execution} finished twice"));
                }
            }
            &Decision::Quarantined { session, lifted } => self.quarantined(at, session, lifted),
            Decision::Evicted { .. } => {}
        }
    }

    fn joined(&mut self, at: Duration, session: SessionId, worker: &str, pool_size: u32) {
        let black_hole = worker == BLACK_HOLE;
        self.black_hole_sessions += u32::from(black_hole);
        let audible = self.settled(at, worker, pool_size);
        self.scheduler.sessions.insert(
            session,
            Session {
                worker: worker.to_string(),
                pool_size,
                in_flight: 0,
                timeouts_in_a_row: 0,
                quarantined: false,
                black_hole,
                audible,
                runtimes: self.plan.runtimes.get(worker).copied(),
            },
        );
    }

    fn lost(&mut self, at: Duration, session: SessionId, worker: &str, reason: LossReason) {
        let gone = self.scheduler.sessions.remove(&session);
        // Each attempt lost with a real worker's session is one the black
        // hole did not take.
        if gone.as_ref().is_some_and(|s| !s.black_hole) {
            for (execution, current) in &self.scheduler.current {
                if current.session == session {
                    self.executions.entry(*execution).or_default().other_losses += 1;
                }
            }
        }
        if reason == LossReason::Replaced && gone.as_ref().is_some_and(|s| s.audible) {
            self.violation(
                at,
                None,
                format!(
                    "{worker} ({session}) was replaced by a new connection under its id, though \
                     its link has been healthy since it joined: its heartbeats (every \
                     {HEARTBEAT_INTERVAL:?}) kept it heard from within {TAKEOVER_AFTER:?}"
                ),
            );
        }
        let silent = self.silences.iter().position(|s| s.session == session);
        if let Some(index) = silent {
            self.silences.remove(index);
            if reason != LossReason::HeartbeatTimeout {
                self.violation(
                    at,
                    None,
                    format!(
                        "{worker} ({session}) went silent, yet was declared lost \
                         for another reason: {reason}"
                    ),
                );
            }
        }
    }

    fn dispatched(
        &mut self,
        at: Duration,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        function: &str,
    ) {
        let prefetch = self.plan.prefetch;
        // Known once a client saw its registration acknowledged, which is
        // before it triggered anything of it.
        let registered = self.functions.get(function).copied();
        let shadow = &mut self.scheduler;
        let mut problems = Vec::new();
        let mut black_hole = false;
        match shadow.sessions.get_mut(&session) {
            None => problems.push(format!(
                "dispatched {execution}/{attempt} to {session}, which is not connected"
            )),
            Some(s) => {
                s.in_flight += 1;
                black_hole = s.black_hole;
                if s.in_flight > s.pool_size + prefetch {
                    problems.push(format!(
                        "{} ({session}) has {} attempts in flight; pool size {} + prefetch {prefetch}",
                        s.worker, s.in_flight, s.pool_size
                    ));
                }
                if s.quarantined {
                    problems.push(format!(
                        "dispatched {execution}/{attempt} to {} ({session}), which is quarantined",
                        s.worker
                    ));
                }
                if let (Some(runs), Some((called, runtime))) = (s.runtimes, registered) {
                    if !runs.contains(&runtime) {
                        problems.push(format!(
                            "dispatched {execution}/{attempt} ({called:?} in runtime {runtime}) to \
                             {} ({session}), which does not run {runtime}: it runs only {}",
                            s.worker,
                            runs.join(", ")
                        ));
                    }
                }
            }
        }
        shadow.current.insert(
            execution,
            Current {
                session,
                attempt,
                dispatched_at: at,
                overdue: false,
            },
        );
        let exec = self.executions.entry(execution).or_default();
        exec.dispatches += 1;
        exec.highest_attempt = exec.highest_attempt.max(attempt);
        exec.black_holed |= black_hole;
        for what in problems {
            self.violation(at, Some(execution), what);
        }
    }

    /// A reconnecting worker's attempt runs on, on `session`: it must be the
    /// latest attempt of an execution that has not finished, and it is then
    /// in flight there as if just dispatched.
    fn adopted(&mut self, at: Duration, session: SessionId, execution: ExecutionId, attempt: u32) {
        let shadow = &mut self.scheduler;
        let mut problems = Vec::new();
        match shadow.sessions.get_mut(&session) {
            Some(s) => s.in_flight += 1,
            None => problems.push(format!(
                "adopted {execution}/{attempt} on {session}, which is not connected"
            )),
        }
        if shadow.finished.contains(&execution) {
            problems.push(format!("adopted {execution}/{attempt}, which had finished"));
        }
        shadow.current.insert(
            execution,
            Current {
                session,
                attempt,
                dispatched_at: at,
                overdue: false,
            },
        );
        let highest = self
            .executions
            .entry(execution)
            .or_default()
            .highest_attempt;
        if attempt != highest {
            problems.push(format!(
                "adopted {execution}/{attempt}, but its latest dispatch was attempt {highest}"
            ));
        }
        for what in problems {
            self.violation(at, Some(execution), what);
        }
    }

    fn result(
        &mut self,
        at: Duration,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        disposition: ResultDisposition,
    ) {
        let shadow = &mut self.scheduler;
        let current = shadow
            .current
            .get(&execution)
            .is_some_and(|c| c.is(session, attempt))
            && shadow.sessions.contains_key(&session);
        if let Some(s) = shadow.sessions.get_mut(&session) {
            if disposition != ResultDisposition::Stale {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            if disposition == ResultDisposition::Accepted {
                s.timeouts_in_a_row = 0;
            }
        }
        let problem = match disposition {
            ResultDisposition::Accepted if !current => Some(format!(
                "accepted a stale result: {execution}/{attempt} from {session}, \
                 but the attempt in flight is {:?} and the session is {}",
                shadow
                    .current
                    .get(&execution)
                    .map(|c| (c.session, c.attempt)),
                if shadow.sessions.contains_key(&session) {
                    "alive"
                } else {
                    "gone"
                }
            )),
            ResultDisposition::Stale | ResultDisposition::Released if current => Some(format!(
                "did not accept the current attempt's result: {execution}/{attempt} \
                 from {session} ({disposition:?})"
            )),
            _ => None,
        };
        if let Some(what) = problem {
            self.violation(at, Some(execution), what);
        }
    }

    fn observation(&mut self, at: Duration, observation: &Observation) {
        match observation {
            Observation::Registered {
                function,
                runtime,
                function_id,
            } => {
                self.functions
                    .insert(function_id.clone(), (*function, *runtime));
            }
            // The function was registered (its registration acknowledged), so
            // the scheduler must know it ever after.
            Observation::TriggerFailed { request, reason } if reason.starts_with("NotFound") => {
                self.violation(
                    at,
                    None,
                    format!("request {request} was refused: {reason}; its function was registered"),
                );
            }
            Observation::TriggerFailed { .. } => {}
            Observation::Accepted { request, execution } => {
                let exec = self.executions.entry(*execution).or_default();
                if let Some(other) = exec.request.replace(*request) {
                    self.violation(
                        at,
                        Some(*execution),
                        format!("{execution} was ACCEPTED for requests {other} and {request}"),
                    );
                }
            }
            Observation::Watched { execution, view } => {
                self.seen(at, *execution, Some(view), false)
            }
            Observation::Queried { execution, view } => {
                self.seen(at, *execution, view.as_ref(), true)
            }
            Observation::GaveUp { execution } => {
                self.executions.entry(*execution).or_default().gave_up = true;
            }
        }
    }

    /// A client saw `view` of `execution` (`None`: NOT_FOUND).
    fn seen(&mut self, at: Duration, execution: ExecutionId, view: Option<&View>, query: bool) {
        let exec = self.executions.entry(execution).or_default();
        let problem = match (&exec.terminal, view) {
            (_, None) => Some(format!(
                "{execution} was ACCEPTED, but the scheduler does not know it (NOT_FOUND)"
            )),
            (None, Some(view)) => {
                if view.is_terminal() {
                    exec.terminal = Some((view.clone(), at));
                    exec.confirmed |= query;
                }
                None
            }
            (Some((first, _)), Some(view)) if first == view => {
                exec.confirmed |= query;
                None
            }
            (Some((first, first_at)), Some(view)) => Some(format!(
                "{execution} was seen {first} at {:?}, then {view}: a terminal state changed",
                first_at
            )),
        };
        if let Some(what) = problem {
            self.violation(at, Some(execution), what);
        }
    }
}

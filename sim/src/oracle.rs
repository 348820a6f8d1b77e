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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use taskforge_core::scheduler::{LossReason, ResultDisposition};
use taskforge_core::{ExecutionId, SessionId};
use taskforge_services::worker::TaskEvent;

use crate::cluster::{HEARTBEAT_TIMEOUT, SCHEDULER, worker_host};
use crate::faults::Fault;
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
    pub prefetch: u32,
}

/// How late after the heartbeat timeout a silent worker may still be declared
/// lost: the timer fires in the step it is due, plus a little.
const LOSS_SLACK: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Oracle {
    plan: Plan,
    violations: Vec<Violation>,
    workers: BTreeMap<WorkerIndex, WorkerTasks>,
    scheduler: SchedulerShadow,
    scheduler_restarts: u32,
    silences: Vec<Silence>,
    executions: BTreeMap<ExecutionId, Execution>,
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
    current: BTreeMap<ExecutionId, (SessionId, u32)>,
    finished: BTreeSet<ExecutionId>,
}

#[derive(Debug)]
struct Session {
    worker: String,
    pool_size: u32,
    in_flight: u32,
}

/// Everything seen of one execution, over the whole run.
#[derive(Debug, Default)]
struct Execution {
    request: Option<RequestId>,
    /// The highest attempt number dispatched, and how many dispatches.
    highest_attempt: u32,
    dispatches: u32,
    /// Starts on workers.
    starts: u32,
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
                }
            }
            Fault::Repair(a, b) | Fault::Release(a, b) => {
                if let Some(worker) = worker_link(a, b) {
                    self.silences.retain(|s| s.worker != worker);
                }
            }
            Fault::CrashWorker {
                worker,
                silent: true,
            } => self.silence(at, &worker_host(*worker)),
            // A crashed scheduler forgets every session, silent or not.
            Fault::CrashScheduler => self.silences.clear(),
            _ => {}
        }
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
        let prefetch = self.plan.prefetch;
        let shadow = &mut self.scheduler;
        match decision {
            Decision::WorkerJoined {
                session,
                worker,
                pool_size,
            } => {
                shadow.sessions.insert(
                    *session,
                    Session {
                        worker: worker.clone(),
                        pool_size: *pool_size,
                        in_flight: 0,
                    },
                );
            }
            Decision::WorkerLost {
                session,
                worker,
                reason,
            } => {
                shadow.sessions.remove(session);
                let silent = self.silences.iter().position(|s| s.session == *session);
                if let Some(index) = silent {
                    self.silences.remove(index);
                    if *reason != LossReason::HeartbeatTimeout {
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
            &Decision::Dispatch {
                session,
                execution,
                attempt,
            } => {
                let problem = match shadow.sessions.get_mut(&session) {
                    None => Some(format!(
                        "dispatched {execution}/{attempt} to {session}, which is not connected"
                    )),
                    Some(s) => {
                        s.in_flight += 1;
                        (s.in_flight > s.pool_size + prefetch).then(|| {
                            format!(
                                "{} ({session}) has {} attempts in flight; pool size {} + prefetch {prefetch}",
                                s.worker, s.in_flight, s.pool_size
                            )
                        })
                    }
                };
                shadow.current.insert(execution, (session, attempt));
                let exec = self.executions.entry(execution).or_default();
                exec.dispatches += 1;
                exec.highest_attempt = exec.highest_attempt.max(attempt);
                if let Some(what) = problem {
                    self.violation(at, Some(execution), what);
                }
            }
            &Decision::Result {
                session,
                execution,
                attempt,
                disposition,
            } => {
                let current = shadow.current.get(&execution) == Some(&(session, attempt))
                    && shadow.sessions.contains_key(&session);
                if disposition != ResultDisposition::Stale {
                    if let Some(s) = shadow.sessions.get_mut(&session) {
                        s.in_flight = s.in_flight.saturating_sub(1);
                    }
                }
                let problem = match disposition {
                    ResultDisposition::Accepted if !current => Some(format!(
                        "accepted a stale result: {execution}/{attempt} from {session}, \
                         but the attempt in flight is {:?} and the session is {}",
                        shadow.current.get(&execution),
                        if shadow.sessions.contains_key(&session) {
                            "alive"
                        } else {
                            "gone"
                        }
                    )),
                    ResultDisposition::Stale | ResultDisposition::Released if current => {
                        Some(format!(
                            "did not accept the current attempt's result: {execution}/{attempt} \
                             from {session} ({disposition:?})"
                        ))
                    }
                    _ => None,
                };
                if let Some(what) = problem {
                    self.violation(at, Some(execution), what);
                }
            }
            Decision::Requeued { execution, .. } => {
                shadow.current.remove(execution);
            }
            Decision::Finished { execution, .. } => {
                shadow.current.remove(execution);
                if !shadow.finished.insert(*execution) {
                    self.violation(at, Some(*execution), format!("{execution} finished twice"));
                }
            }
            Decision::Abort { .. } | Decision::Evicted { .. } | Decision::Quarantined { .. } => {}
        }
    }

    fn observation(&mut self, at: Duration, observation: &Observation) {
        match observation {
            Observation::Registered { .. } => {}
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

    /// The checks that need the whole run; returns every violation found.
    pub fn finish(&mut self, at: Duration) -> Vec<Violation> {
        let mut found = Vec::new();
        let restarts = self.scheduler_restarts;
        for (&id, exec) in &self.executions {
            let Some(request) = exec.request.and_then(|r| self.request(r)) else {
                continue; // never ACCEPTED to a client: no promises were made
            };
            let max_attempts = request.max_attempts;
            let mut problem = |what: String| {
                found.push(Violation {
                    at,
                    execution: Some(id),
                    what,
                })
            };
            if exec.highest_attempt > max_attempts {
                problem(format!(
                    "{id} was dispatched as attempt {}; max_attempts is {max_attempts}",
                    exec.highest_attempt
                ));
            }
            if exec.starts > max_attempts + restarts {
                problem(format!(
                    "{id} was started {} times; max_attempts is {max_attempts} \
                     (and the scheduler restarted {restarts} times)",
                    exec.starts
                ));
            }
            let Some((view, _)) = &exec.terminal else {
                problem(format!(
                    "{id} (request {}, {:?}) was ACCEPTED but never seen finished{}",
                    request.id,
                    request.function,
                    if exec.gave_up {
                        " (the client gave up)"
                    } else {
                        ""
                    }
                ));
                continue;
            };
            if !exec.confirmed {
                problem(format!(
                    "{id} was seen {view} on a watch, but no status query confirmed it"
                ));
            }
            let expected = Expected::of(request.function, &request.payload);
            let ran_out = view.status == "FAILED"
                && (view.error.starts_with("worker lost ")
                    || view.error.contains("the last to a scheduler restart"))
                && exec.dispatches >= max_attempts;
            if !expected.matches(&view.status, &view.output, &view.error) && !ran_out {
                problem(format!(
                    "{id} (request {}, {:?}, max_attempts {max_attempts}, {} dispatches) \
                     ended {view}; expected {expected}",
                    request.id, request.function, exec.dispatches
                ));
            }
            if request.function == Function::Fail && view.status == "COMPLETED" {
                problem(format!("{id} runs `fail` but COMPLETED"));
            }
        }
        self.overdue_silences(at);
        let mut all = std::mem::take(&mut self.violations);
        all.extend(found);
        all
    }
}

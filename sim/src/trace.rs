//! The trace of a run: every scheduler decision, every task a worker started
//! or ended, what each rogue host was given, every fault injected and every
//! client observation, in the order they happened, stamped with simulated
//! time.
//!
//! All hosts of a simulation run on one thread, so appending to one shared log
//! gives a total order. The trace is what a run *is*: its hash (FNV-1a over the
//! canonical text of every entry) is the same every time a seed is run, and
//! different runs of one seed that hash differently are a determinism bug. The
//! [`Recorder`] also feeds each entry to the [`Oracle`] as it is appended, so
//! invariants that are cheap to check are checked the moment they could break.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::scheduler::{AbortReason, LossReason, Output, ResultDisposition};
use taskforge_core::{ExecutionId, SessionId};
use taskforge_services::scheduler::{SchedulerEvent, SchedulerObserver};
use taskforge_services::worker::{TaskEvent, TaskObserver};

use crate::cluster::{RuntimeName, RuntimeSet};
use crate::faults::Fault;
use crate::oracle::{Oracle, Violation};
use crate::rogue::{Rogue, RogueEvent};
use crate::workload::{Function, RequestId};

/// One line of the trace.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Simulated time since the run began.
    pub at: Duration,
    pub event: Event,
}

/// Which run of the scheduler's (or a worker's) software: 1 at first, one
/// more after each restart.
pub type Incarnation = u32;

/// 1-based index of a worker host (`worker-1`, ...).
pub type WorkerIndex = usize;

/// Something that happened.
#[derive(Clone, Debug)]
pub enum Event {
    /// The fault schedule did something to the cluster.
    Fault(Fault),
    /// What the fault driver decided on its own (a power cut tripped).
    Note(String),
    /// The scheduler's software (re)started on its host.
    SchedulerStarted { incarnation: Incarnation },
    /// A decision of the scheduler.
    Scheduler {
        incarnation: Incarnation,
        decision: Decision,
    },
    /// A worker's software (re)started on its host, running `runtimes`. The
    /// scheduler's observer does not report what a worker announced, so the
    /// trace has it from here, where the worker was built.
    WorkerStarted {
        worker: WorkerIndex,
        incarnation: Incarnation,
        runtimes: RuntimeSet,
    },
    /// A worker started or let go of a task.
    Task {
        worker: WorkerIndex,
        incarnation: Incarnation,
        event: TaskEvent,
    },
    /// Something a client saw.
    Client {
        client: usize,
        observation: Observation,
    },
    /// What a host speaking the worker protocol by hand did or was given.
    Rogue { rogue: Rogue, event: RogueEvent },
}

/// A decision of the scheduler, as its observer reports it.
#[derive(Clone, Debug)]
pub enum Decision {
    WorkerJoined {
        session: SessionId,
        worker: String,
        pool_size: u32,
    },
    Result {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        disposition: ResultDisposition,
    },
    Dispatch {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        /// The function's id: the client registered it in one runtime.
        function: String,
    },
    Abort {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        reason: AbortReason,
    },
    /// A reconnecting worker still held this attempt; it runs on there.
    Adopted {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
    },
    Requeued {
        execution: ExecutionId,
        lost_attempt: u32,
    },
    Finished {
        execution: ExecutionId,
        view: View,
    },
    WorkerLost {
        session: SessionId,
        worker: String,
        reason: LossReason,
    },
    Evicted {
        execution: ExecutionId,
    },
    Quarantined {
        session: SessionId,
        lifted: bool,
    },
}

/// What a client can see of an execution: its status, output and error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub status: String,
    pub output: Bytes,
    pub error: String,
}

impl View {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "COMPLETED" | "FAILED" | "TIMED_OUT" | "CANCELLED"
        )
    }
}

/// Something a client saw.
#[derive(Clone, Debug)]
pub enum Observation {
    Registered {
        function: Function,
        runtime: RuntimeName,
        function_id: String,
    },
    /// The scheduler answered ACCEPTED: from now on the execution must survive
    /// anything and finish.
    Accepted {
        request: RequestId,
        execution: ExecutionId,
    },
    /// A trigger failed or went unanswered; whether it exists is unknown.
    TriggerFailed { request: RequestId, reason: String },
    /// A state from a watch stream.
    Watched { execution: ExecutionId, view: View },
    /// The answer to a status query; `None` is NOT_FOUND.
    Queried {
        execution: ExecutionId,
        view: Option<View>,
    },
    /// The client stopped waiting for the execution to finish.
    GaveUp { execution: ExecutionId },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.as_micros();
        write!(
            f,
            "{:>5}.{:06} {}",
            at / 1_000_000,
            at % 1_000_000,
            self.event
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Fault(fault) => write!(f, "fault      {fault}"),
            Event::Note(what) => write!(f, "fault      {what}"),
            Event::SchedulerStarted { incarnation } => {
                write!(f, "scheduler#{incarnation} started")
            }
            Event::Scheduler {
                incarnation,
                decision,
            } => write!(f, "scheduler#{incarnation} {decision}"),
            Event::WorkerStarted {
                worker,
                incarnation,
                runtimes,
            } => write!(
                f,
                "worker-{worker}#{incarnation} started, runs {}",
                runtimes.join(", ")
            ),
            Event::Task {
                worker,
                incarnation,
                event,
            } => match event {
                TaskEvent::Started { execution, attempt } => {
                    write!(
                        f,
                        "worker-{worker}#{incarnation} start {execution}/{attempt}"
                    )
                }
                TaskEvent::Ended { execution, attempt } => {
                    write!(f, "worker-{worker}#{incarnation} end {execution}/{attempt}")
                }
            },
            Event::Client {
                client,
                observation,
            } => write!(f, "client-{client} {observation}"),
            Event::Rogue { rogue, event } => write!(f, "{rogue} {event}"),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::WorkerJoined {
                session,
                worker,
                pool_size,
            } => write!(f, "joined {worker} as {session} with {pool_size} slots"),
            Decision::Result {
                session,
                execution,
                attempt,
                disposition,
            } => write!(
                f,
                "result {execution}/{attempt} from {session}: {disposition:?}"
            ),
            Decision::Dispatch {
                session,
                execution,
                attempt,
                function,
            } => write!(
                f,
                "dispatch {execution}/{attempt} of function {function} to {session}"
            ),
            Decision::Abort {
                session,
                execution,
                attempt,
                reason,
            } => {
                let why = match reason {
                    AbortReason::NoResult => "no result",
                    AbortReason::Ended => "ended",
                    AbortReason::NotAdopted => "not adopted",
                };
                write!(f, "abort {execution}/{attempt} on {session} ({why})")
            }
            Decision::Adopted {
                session,
                execution,
                attempt,
            } => write!(f, "adopt {execution}/{attempt} on {session}"),
            Decision::Requeued {
                execution,
                lost_attempt,
            } => write!(f, "requeue {execution} (lost attempt {lost_attempt})"),
            Decision::Finished { execution, view } => write!(f, "finish {execution} {view}"),
            Decision::WorkerLost {
                session,
                worker,
                reason,
            } => write!(f, "lost {worker} ({session}): {reason}"),
            Decision::Evicted { execution } => write!(f, "evict {execution}"),
            Decision::Quarantined {
                session,
                lifted: false,
            } => write!(f, "quarantine {session}"),
            Decision::Quarantined {
                session,
                lifted: true,
            } => write!(f, "lift quarantine {session}"),
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if !self.output.is_empty() {
            write!(f, " output={:?}", String::from_utf8_lossy(&self.output))?;
        }
        if !self.error.is_empty() {
            write!(f, " error={:?}", self.error)?;
        }
        Ok(())
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observation::Registered {
                function,
                runtime,
                function_id,
            } => write!(f, "registered {function:?} in {runtime} as {function_id}"),
            Observation::Accepted { request, execution } => {
                write!(f, "request {request} ACCEPTED as {execution}")
            }
            Observation::TriggerFailed { request, reason } => {
                write!(f, "request {request} failed: {reason}")
            }
            Observation::Watched { execution, view } => write!(f, "watch {execution} {view}"),
            Observation::Queried {
                execution,
                view: Some(view),
            } => write!(f, "status {execution} {view}"),
            Observation::Queried {
                execution,
                view: None,
            } => write!(f, "status {execution} NOT_FOUND"),
            Observation::GaveUp { execution } => write!(f, "gave up waiting for {execution}"),
        }
    }
}

impl Decision {
    /// The decision an output of the core stands for.
    fn of_output(output: &Output) -> Decision {
        match output {
            Output::Dispatch(dispatch) => Decision::Dispatch {
                session: dispatch.session,
                execution: dispatch.execution,
                attempt: dispatch.attempt,
                function: dispatch.function.to_string(),
            },
            &Output::Abort {
                session,
                execution,
                attempt,
                reason,
            } => Decision::Abort {
                session,
                execution,
                attempt,
                reason,
            },
            &Output::Adopted {
                session,
                execution,
                attempt,
            } => Decision::Adopted {
                session,
                execution,
                attempt,
            },
            &Output::Requeued {
                execution,
                lost_attempt,
                ..
            } => Decision::Requeued {
                execution,
                lost_attempt,
            },
            Output::Finished {
                execution,
                terminal,
            } => Decision::Finished {
                execution: *execution,
                view: View {
                    status: terminal.status().as_str().to_string(),
                    output: terminal.output().clone(),
                    error: terminal.error().to_string(),
                },
            },
            Output::WorkerLost {
                session,
                worker,
                reason,
            } => Decision::WorkerLost {
                session: *session,
                worker: worker.to_string(),
                reason: *reason,
            },
            &Output::Evicted { execution } => Decision::Evicted { execution },
            &Output::Quarantined { session, .. } => Decision::Quarantined {
                session,
                lifted: false,
            },
            &Output::QuarantineLifted { session, .. } => Decision::Quarantined {
                session,
                lifted: true,
            },
        }
    }

    fn of_event(event: &SchedulerEvent<'_>) -> Decision {
        match *event {
            SchedulerEvent::WorkerJoined {
                session,
                worker,
                pool_size,
            } => Decision::WorkerJoined {
                session,
                worker: worker.to_string(),
                pool_size,
            },
            SchedulerEvent::Result {
                session,
                execution,
                attempt,
                disposition,
            } => Decision::Result {
                session,
                execution,
                attempt,
                disposition,
            },
            SchedulerEvent::Output(output) => Decision::of_output(output),
        }
    }
}

/// The shared log of a run, with the oracle watching it. Cheap to clone.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Log>>);

struct Log {
    entries: Vec<Entry>,
    hash: u64,
    last_at: Duration,
    /// Set while the harness crashes or restarts a host: tasks dropped with
    /// the old runtime may still report, but they report for a host that is
    /// gone, in an order that depends on tokio's process-wide task ids — not
    /// part of the run.
    outside_hosts: bool,
    oracle: Oracle,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("entries", &self.log().entries.len())
            .finish_non_exhaustive()
    }
}

/// What a finished run left: its trace, the trace's hash, and what the oracle
/// found wrong.
#[derive(Debug)]
pub struct Record {
    pub entries: Vec<Entry>,
    pub hash: u64,
    pub violations: Vec<Violation>,
}

impl Recorder {
    pub fn new(oracle: Oracle) -> Recorder {
        Recorder(Arc::new(Mutex::new(Log {
            entries: Vec::new(),
            hash: crate::seed::fnv1a(&[]),
            last_at: Duration::ZERO,
            outside_hosts: false,
            oracle,
        })))
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // One thread runs every host; a poisoned lock means a panic already
        // failed the run.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends an event at the current host's simulated time.
    pub fn record(&self, event: Event) {
        if self.log().outside_hosts {
            return;
        }
        self.append(turmoil::sim_elapsed(), event);
    }

    /// Runs `f` (a crash or restart of a host), ignoring what the tasks
    /// dropped with the old runtime report.
    pub fn outside_hosts<R>(&self, f: impl FnOnce() -> R) -> R {
        self.log().outside_hosts = true;
        let result = f();
        self.log().outside_hosts = false;
        result
    }

    /// Appends an event at `at` (for the harness, which runs outside any host).
    pub fn record_at(&self, at: Duration, event: Event) {
        self.append(Some(at), event);
    }

    fn append(&self, at: Option<Duration>, event: Event) {
        let mut log = self.log();
        // Time never runs backwards in the trace, and starting software (not
        // yet inside a step) has no clock of its own.
        let at = at.unwrap_or(log.last_at).max(log.last_at);
        log.last_at = at;
        let entry = Entry { at, event };
        let line = format!("{entry}\n");
        log.hash = line.bytes().fold(log.hash, |hash, b| {
            (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        log.oracle.observe(&entry);
        log.entries.push(entry);
    }

    /// An observer for incarnation `incarnation` of the scheduler.
    pub fn scheduler_observer(&self, incarnation: Incarnation) -> SchedulerObserver {
        let recorder = self.clone();
        SchedulerObserver::new(move |event| {
            recorder.record(Event::Scheduler {
                incarnation,
                decision: Decision::of_event(event),
            });
        })
    }

    /// An observer for incarnation `incarnation` of worker `worker`.
    pub fn task_observer(&self, worker: WorkerIndex, incarnation: Incarnation) -> TaskObserver {
        let recorder = self.clone();
        TaskObserver::new(move |event| {
            recorder.record(Event::Task {
                worker,
                incarnation,
                event,
            });
        })
    }

    /// Tasks the current incarnation of `worker` runs now.
    pub fn running_on(&self, worker: WorkerIndex) -> usize {
        self.log().oracle.running_on(worker)
    }

    /// Violations found so far.
    pub fn violations(&self) -> usize {
        self.log().oracle.violations()
    }

    /// Ends the run: the oracle's final checks, and everything recorded.
    pub fn finish(&self) -> Record {
        let mut log = self.log();
        let at = log.last_at;
        let violations = log.oracle.finish(at);
        Record {
            entries: std::mem::take(&mut log.entries),
            hash: log.hash,
            violations,
        }
    }
}

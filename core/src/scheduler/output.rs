//! What the scheduler asks its caller to do, and what it answers to inspection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::execution::{Status, Terminal};
use crate::ids::{ExecutionId, SessionId, WorkerId};
use crate::time::Instant;

use super::Capabilities;

/// Work for the caller, drained with [`Scheduler::poll_output`](super::Scheduler::poll_output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this attempt to the worker on its session. The execution is RUNNING.
    Dispatch(Dispatch),
    /// Tell the worker on `session` to stop this attempt. Its slot stays counted as
    /// busy until the worker reports the attempt.
    Abort {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        reason: AbortReason,
    },
    /// A reconnecting worker still held this attempt and runs it on, on
    /// `session`: nothing is sent, the execution is RUNNING there.
    Adopted {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
    },
    /// An attempt was lost with its worker; the execution is PENDING again and
    /// becomes eligible to run at `retry_at`.
    Requeued {
        execution: ExecutionId,
        lost_attempt: u32,
        retry_at: Instant,
    },
    /// The execution reached its terminal state, which never changes again.
    Finished {
        execution: ExecutionId,
        terminal: Terminal,
    },
    /// The worker's session is over. Unless the reason is `Disconnected`, its
    /// stream is still open and should be closed.
    WorkerLost {
        session: SessionId,
        worker: WorkerId,
        reason: LossReason,
    },
    /// A terminal execution outlived its retention and was forgotten.
    Evicted { execution: ExecutionId },
    /// The session's attempts kept timing out with no result: it gets no new
    /// work until it has answered for every attempt it holds.
    Quarantined {
        session: SessionId,
        worker: WorkerId,
    },
    /// A quarantined session answered for everything it held; it takes work
    /// again.
    QuarantineLifted {
        session: SessionId,
        worker: WorkerId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub session: SessionId,
    pub execution: ExecutionId,
    /// Fencing token: only a result carrying this attempt is accepted.
    pub attempt: u32,
    pub function: Arc<str>,
    pub payload: Bytes,
    pub timeout: Duration,
}

/// Why an attempt is aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Its execution ended while it ran: cancelled by a client, or failed by
    /// the caller ([`Scheduler::fail`](super::Scheduler::fail)).
    Ended,
    /// No result came by its timeout plus grace: a lost attempt, retried.
    NoResult,
    /// A reconnecting worker holds it, but it is no longer wanted there (an
    /// older attempt, an execution that ended or runs elsewhere).
    NotAdopted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The worker's stream ended.
    Disconnected,
    /// Nothing was heard from the worker within the heartbeat timeout.
    HeartbeatTimeout,
    /// The worker connected again under the same id.
    Replaced,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::Disconnected => "stream ended",
            LossReason::HeartbeatTimeout => "heartbeat timeout",
            LossReason::Replaced => "replaced by a new connection",
        })
    }
}

/// What became of a result a worker reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultDisposition {
    /// It was the current attempt: the execution is now terminal.
    Accepted,
    /// It freed the worker's slot, but the execution had already ended
    /// (cancelled, or timed out by the scheduler) and keeps its terminal state.
    Released,
    /// Nothing matched: a duplicate, an old attempt, the wrong worker, or a session
    /// already declared lost. Dropped.
    Stale,
}

/// An execution as the scheduler currently holds it.
#[derive(Clone, Copy, Debug)]
pub struct ExecutionView<'a> {
    pub id: ExecutionId,
    pub function: &'a Arc<str>,
    /// The runtime it needs (only workers that run it get it); `None` once
    /// it finished.
    pub runtime: Option<&'a Arc<str>>,
    pub status: Status,
    /// Attempts dispatched so far; the current one while RUNNING.
    pub attempt: u32,
    /// The session running it, while RUNNING.
    pub session: Option<SessionId>,
}

/// A connected worker.
#[derive(Clone, Copy, Debug)]
pub struct WorkerView<'a> {
    pub session: SessionId,
    pub id: &'a WorkerId,
    /// The runtimes it runs, as announced when it connected.
    pub capabilities: &'a Capabilities,
    pub pool_size: u32,
    /// Attempts the scheduler has in flight on it (the authoritative load).
    pub in_flight: u32,
    /// What its last heartbeat said it runs.
    pub reported_running: u32,
    pub draining: bool,
    /// Gets no new work: its attempts kept timing out with no result.
    pub quarantined: bool,
    /// Attempts in a row the scheduler timed out on it.
    pub timeouts_in_a_row: u32,
    pub connected_at: Instant,
    pub last_heard: Instant,
}

/// Counters for the whole cluster, cheap to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub workers: usize,
    /// Connected workers that get no new work (see [`Output::Quarantined`]).
    pub quarantined: usize,
    /// Σ pool sizes of connected workers (not counting prefetch).
    pub capacity: u64,
    /// Attempts in flight on workers.
    pub in_flight: u64,
    pub queue_limit: usize,
    /// Executions held, by status.
    pub pending: usize,
    pub running: usize,
    pub completed: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub cancelled: usize,
}

//! An optional window on the scheduler's decisions.
//!
//! The simulation records what the scheduler decided — every output of the
//! core, every worker that joined, every result a worker reported and what
//! became of it — to build a reproducible trace and to check invariants the
//! clients cannot see from outside (fencing, per-worker load). The observer is
//! called synchronously on the actor's task, in decision order, so it must be
//! cheap and must not block; unset, it costs one branch per decision.

use std::fmt;
use std::sync::Arc;

use taskforge_core::scheduler::{Output, ResultDisposition};
use taskforge_core::{ExecutionId, SessionId};

/// One decision of the scheduler.
#[derive(Debug)]
pub enum SchedulerEvent<'a> {
    /// A worker's hello was accepted: from now on it is `session`.
    WorkerJoined {
        session: SessionId,
        worker: &'a str,
        pool_size: u32,
    },
    /// A worker reported the end of an attempt, and the core decided what it
    /// counts for (only `Accepted` makes it the execution's outcome).
    Result {
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        disposition: ResultDisposition,
    },
    /// An output of the core, as the actor is about to carry it out.
    Output(&'a Output),
}

/// Receives every [`SchedulerEvent`], in the order the decisions were made.
#[derive(Clone)]
pub struct SchedulerObserver(Arc<dyn Fn(&SchedulerEvent<'_>) + Send + Sync>);

impl SchedulerObserver {
    pub fn new(observe: impl Fn(&SchedulerEvent<'_>) + Send + Sync + 'static) -> Self {
        SchedulerObserver(Arc::new(observe))
    }

    pub(crate) fn observe(&self, event: &SchedulerEvent<'_>) {
        (self.0)(event);
    }
}

impl fmt::Debug for SchedulerObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SchedulerObserver")
    }
}

//! An optional window on a worker's tasks.
//!
//! The simulation counts, on the worker's side, how many tasks each worker
//! runs at once (it must never exceed the pool size, whatever the scheduler
//! sends). A task counts from the moment the worker spawns it until the worker
//! lets go of it: it finished and its result was taken, or it was aborted
//! (cancelled, timed out, or its session ended). The observer is called
//! synchronously on the session's task, so it must be cheap; unset, it costs
//! one branch per task start and end.

use std::fmt;
use std::sync::Arc;

use taskforge_core::ExecutionId;

/// A task of the worker started or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// A task was spawned to run this attempt: it holds a slot from now on.
    Started {
        execution: ExecutionId,
        attempt: u32,
    },
    /// The worker let go of the task; its slot is free.
    Ended {
        execution: ExecutionId,
        attempt: u32,
    },
}

/// Receives every [`TaskEvent`] of one worker, in order.
#[derive(Clone)]
pub struct TaskObserver(Arc<dyn Fn(TaskEvent) + Send + Sync>);

impl TaskObserver {
    pub fn new(observe: impl Fn(TaskEvent) + Send + Sync + 'static) -> Self {
        TaskObserver(Arc::new(observe))
    }

    pub(crate) fn observe(&self, event: TaskEvent) {
        (self.0)(event);
    }
}

impl fmt::Debug for TaskObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskObserver")
    }
}

//! Shared helpers for driving the state machines by hand.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use taskforge_core::scheduler::{Output, Scheduler};
use taskforge_core::{ExecutionId, Instant, Policy, SessionId, Submission, WorkerId};

pub fn at_ms(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// An execution of the "echo" function in the "builtin" runtime.
pub fn submission(id: u64, policy: Policy) -> Submission {
    submission_in("builtin", id, policy)
}

/// An execution of the "echo" function in `runtime`.
pub fn submission_in(runtime: &str, id: u64, policy: Policy) -> Submission {
    Submission {
        id: ExecutionId(id),
        function: "echo".into(),
        runtime: runtime.into(),
        payload: Bytes::from(format!("payload-{id}")),
        policy,
    }
}

pub fn policy() -> Policy {
    Policy {
        max_attempts: 3,
        timeout: Duration::from_secs(10),
        schedule_to_start: None,
    }
}

pub fn worker(name: &str) -> WorkerId {
    WorkerId::new(name)
}

pub fn drain(scheduler: &mut Scheduler) -> Vec<Output> {
    std::iter::from_fn(|| scheduler.poll_output()).collect()
}

/// The (session, execution, attempt) of every dispatch among `outputs`.
pub fn dispatches(outputs: &[Output]) -> Vec<(SessionId, ExecutionId, u32)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Dispatch(d) => Some((d.session, d.execution, d.attempt)),
            _ => None,
        })
        .collect()
}

//! What an execution is: what to run, under which policy, and how it can end.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::ids::ExecutionId;

/// How hard the platform tries to run one execution.
///
/// The caller resolves per-invocation overrides and per-function defaults into one
/// policy before submitting, so the core has a single source of truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How many times the execution may be started. A start whose worker is lost
    /// before it reports counts; a function that reports failure is not retried.
    pub max_attempts: u32,
    /// Start-to-close limit of one attempt, enforced by the worker and backed up by
    /// the scheduler after a grace period.
    pub timeout: Duration,
    /// How long the execution may wait for its first start (for a free slot, or for
    /// any worker at all) before it fails. `None` waits indefinitely.
    pub schedule_to_start: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 3,
            timeout: Duration::from_secs(300),
            schedule_to_start: Some(Duration::from_secs(600)),
        }
    }
}

/// A request to run `function` on `payload`, under `policy`.
#[derive(Clone, Debug)]
pub struct Submission {
    pub id: ExecutionId,
    /// Opaque to the core; carried back out on every dispatch.
    pub function: Arc<str>,
    /// The language the function runs in ("builtin", "wasm", ...), already
    /// normalised by the caller: only workers that run it get the execution.
    pub runtime: Arc<str>,
    pub payload: Bytes,
    pub policy: Policy,
}

/// What a worker reported for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success(Bytes),
    Failure {
        error: String,
        output: Bytes,
    },
    /// The worker stopped the attempt at its timeout: the function's verdict,
    /// not a lost attempt (that is the scheduler's own timeout, which retries).
    TimedOut {
        error: String,
    },
}

/// How an execution ended. Once reached, it never changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    Completed { output: Bytes },
    Failed { error: String, output: Bytes },
    TimedOut { error: String },
    Cancelled,
}

impl Terminal {
    pub fn status(&self) -> Status {
        match self {
            Terminal::Completed { .. } => Status::Completed,
            Terminal::Failed { .. } => Status::Failed,
            Terminal::TimedOut { .. } => Status::TimedOut,
            Terminal::Cancelled => Status::Cancelled,
        }
    }

    pub fn output(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Terminal::Completed { output } | Terminal::Failed { output, .. } => output,
            Terminal::TimedOut { .. } | Terminal::Cancelled => &EMPTY,
        }
    }

    pub fn error(&self) -> &str {
        match self {
            Terminal::Failed { error, .. } | Terminal::TimedOut { error } => error,
            Terminal::Cancelled => "cancelled",
            Terminal::Completed { .. } => "",
        }
    }
}

impl From<Outcome> for Terminal {
    fn from(outcome: Outcome) -> Terminal {
        match outcome {
            Outcome::Success(output) => Terminal::Completed { output },
            Outcome::Failure { error, output } => Terminal::Failed { error, output },
            Outcome::TimedOut { error } => Terminal::TimedOut { error },
        }
    }
}

/// The states an execution is observed in, with the seed's spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::TimedOut | Status::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::TimedOut => "TIMED_OUT",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! What the load is aimed at, and how one execution is driven through it.
//!
//! A [`Client`] speaks to a scheduler over gRPC ([`grpc`]) or to a gateway over
//! HTTP ([`http`]); [`embedded`] starts a whole cluster in this process and
//! hands out either. Whatever the protocol, one execution is the same two
//! steps: trigger it (the durable ACCEPTED is the *accept* latency), then
//! wait for its terminal state on the scheduler's watch stream (gRPC, in the
//! same call as the trigger by default) or with `?wait=` (HTTP) — never by
//! polling. What a request saw comes back as an
//! [`Observation`]: when it was accepted, when it ended, how, and the
//! scheduler's and worker's timestamps of the execution.

pub mod embedded;
pub mod grpc;
pub mod http;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::workload::{Function, Handler};

/// Unix-microsecond stamps of one execution, as the scheduler reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamps {
    /// The scheduler accepted the trigger.
    pub created_at_us: u64,
    /// The worker started the attempt that finished it.
    pub started_at_us: u64,
    /// The worker finished it.
    pub finished_at_us: u64,
}

impl Stamps {
    /// Whether both worker stamps are there, in order.
    pub fn ran(&self) -> bool {
        self.started_at_us != 0 && self.finished_at_us >= self.started_at_us
    }
}

/// Why a request did not end as expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// The trigger was refused or failed (queue full, unreachable, ...).
    Trigger,
    /// The wait for the result broke off before a terminal state.
    Watch,
    /// No terminal state within `--timeout`.
    Timeout,
    /// A terminal state other than the one the function should end in.
    UnexpectedStatus,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trigger => "trigger",
            FailureKind::Watch => "watch",
            FailureKind::Timeout => "timeout",
            FailureKind::UnexpectedStatus => "unexpected_status",
        }
    }
}

/// A request that did not end as expected, and what was said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// What one request saw.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the trigger's ACCEPTED arrived; `None` if it never did.
    pub accepted: Option<Instant>,
    /// When the outcome was known: the terminal state arrived, or the failure.
    pub done: Instant,
    /// The terminal status seen, if one was.
    pub status: Option<String>,
    /// The execution's stamps, from its terminal state.
    pub stamps: Option<Stamps>,
    /// `None` when the execution ended as its function should.
    pub failure: Option<Failure>,
}

impl Observation {
    /// A request that failed before any terminal state was seen.
    pub fn failed(accepted: Option<Instant>, failure: Failure) -> Observation {
        Observation {
            accepted,
            done: Instant::now(),
            status: None,
            stamps: None,
            failure: Some(failure),
        }
    }

    /// A terminal state arrived: checks it against what `handler` should end in.
    pub fn finished(
        accepted: Instant,
        handler: &Handler,
        status: String,
        error: &str,
        stamps: Stamps,
    ) -> Observation {
        let expected = handler.expected_status();
        let failure = (status != expected).then(|| {
            let detail = if error.is_empty() {
                String::new()
            } else {
                format!(": {error}")
            };
            Failure::new(
                FailureKind::UnexpectedStatus,
                format!("{handler} ended {status}, expected {expected}{detail}"),
            )
        });
        Observation {
            accepted: Some(accepted),
            done: Instant::now(),
            status: Some(status),
            stamps: Some(stamps),
            failure,
        }
    }
}

/// The terminal statuses (anything else means "not yet").
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "COMPLETED" | "FAILED" | "TIMED_OUT" | "CANCELLED")
}

/// The cluster's size as the scheduler reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterSize {
    pub workers: u32,
    /// Σ pool sizes of the connected workers.
    pub capacity: u32,
}

/// A target that could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("the scheduler refused: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the gateway: {0}")]
    Http(String),
    #[error(
        "only {seen} of {wanted} workers connected within {waited:?} (capacity {capacity}); is the cluster up?"
    )]
    Workers {
        seen: u32,
        wanted: u32,
        capacity: u32,
        waited: Duration,
    },
}

/// The protocol-specific client.
#[derive(Clone, Debug)]
pub enum Client {
    Grpc(grpc::GrpcClient),
    Http(http::HttpClient),
}

impl Client {
    /// The cluster's size now.
    pub async fn cluster_size(&self) -> Result<ClusterSize, TargetError> {
        match self {
            Client::Grpc(client) => client.cluster_size().await,
            Client::Http(client) => client.cluster_size().await,
        }
    }

    /// Waits (checking every 20 ms, for at most `wait`) until at least
    /// `workers` workers are connected; returns the size seen then.
    pub async fn await_workers(
        &self,
        workers: u32,
        wait: Duration,
    ) -> Result<ClusterSize, TargetError> {
        let deadline = Instant::now() + wait;
        loop {
            let size = self.cluster_size().await?;
            if size.workers >= workers.max(1) && size.capacity > 0 {
                return Ok(size);
            }
            if Instant::now() >= deadline {
                return Err(TargetError::Workers {
                    seen: size.workers,
                    wanted: workers.max(1),
                    capacity: size.capacity,
                    waited: wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers the function running `handler`; returns its id.
    pub async fn register(&self, handler: &Handler) -> Result<String, TargetError> {
        let definition = handler.definition();
        match self {
            Client::Grpc(client) => client.register(definition).await,
            Client::Http(client) => client.register(definition).await,
        }
    }

    /// Triggers one execution of `function` and follows it to its end (or
    /// `deadline`). `lane` picks the connection.
    pub async fn execute(
        &self,
        lane: usize,
        function: &Function,
        deadline: Instant,
    ) -> Observation {
        match self {
            Client::Grpc(client) => client.execute(lane, function, deadline).await,
            Client::Http(client) => client.execute(lane, function, deadline).await,
        }
    }
}

//! The worker: dials the scheduler, runs the core [`WorkerPool`], and executes the
//! built-in [`functions`](crate::functions) as tokio tasks.
//!
//! [`run`] keeps one `WorkerStream` session open at a time. Each session starts
//! with a `WorkerHello` (id, pool size, and the attempts the worker still
//! holds); the scheduler sends `Execute` and `Cancel`, the worker answers with
//! one `ExecutionResult` per attempt it was given and a `WorkerHeartbeat` every
//! `heartbeat_interval`. When the stream ends or fails, the work goes on (see
//! [`work`]): tasks keep running and their results wait for the next stream,
//! whose hello lists them so that the scheduler — the same one, or a standby
//! that took over — adopts them rather than running them again. The worker
//! dials again after a capped exponential backoff with jitter. The backoff starts
//! over after a session that got past its hello (the scheduler sent something,
//! or the session lasted until its first heartbeat), so a scheduler that keeps
//! closing streams at once (a rejected hello, two workers with one id) is not
//! dialed in a tight loop.
//!
//! On shutdown the worker tells the scheduler it is draining, finishes what it
//! holds (at most `drain_timeout`), closes the stream and returns.
//!
//! Nothing here reads the system clock or a global rng: the pool's time comes
//! from tokio's clock (which the simulation controls), result timestamps from the
//! caller's [`WallClock`], and reconnect jitter from an rng seeded by the caller.
//!
//! [`WorkerPool`]: taskforge_core::pool::WorkerPool

mod backoff;
mod definitions;
mod observer;
mod session;
mod wire;
mod work;

use crate::auth::Token;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::net::LeaderChannel;

use crate::runtime::Runtimes;
use tracing::{debug, info, warn};

use self::backoff::Backoff;
use self::session::{Session, SessionEnd};
use self::work::Work;

pub use self::observer::{TaskEvent, TaskObserver};
pub use self::wire::{DEFAULT_TIMEOUT, MAX_TIMEOUT};
/// Result timestamps come from the caller's wall clock (unix microseconds):
/// [`system_clock`] in the binary, a clock following simulated time in the
/// simulation.
pub use crate::clock::{WallClock, system_clock};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The name this worker gives itself in its hello; unique in the cluster.
    pub id: String,
    /// Executions run at once.
    pub pool_size: u32,
    /// How often a heartbeat (running and queued counts) is sent.
    pub heartbeat_interval: Duration,
    /// The first wait before dialing again after a lost or failed connection.
    pub reconnect_initial: Duration,
    /// The longest wait between dials; the wait doubles up to this.
    pub reconnect_max: Duration,
    /// How long shutdown waits for running and queued work to finish.
    pub drain_timeout: Duration,
    /// How long opening the stream may take before the attempt counts as failed
    /// (covers a scheduler that accepts connections but never answers).
    pub handshake_timeout: Duration,
    /// Start-to-close limit for requests that carry none (`timeout_ms == 0`).
    pub default_timeout: Duration,
    /// Largest output reported; a larger one fails its execution instead of
    /// making a message the scheduler refuses to read (which would end the
    /// stream, and with it every other execution on this worker). Keep it at
    /// the scheduler's output limit.
    pub max_output_bytes: usize,
    /// The runtimes this worker runs (announced in its hello; it is sent only
    /// executions of these).
    pub runtimes: Runtimes,
    /// Presented to the scheduler when it asks for a worker token.
    pub token: Option<Token>,
    /// Seeds the reconnect jitter.
    pub seed: u64,
    /// Sees every task start and end (the simulation counts running tasks
    /// with it). `None` costs nothing.
    pub observer: Option<TaskObserver>,
}

impl WorkerConfig {
    /// A worker named `id` with `pool_size` slots and default timings.
    pub fn new(id: impl Into<String>, pool_size: u32) -> WorkerConfig {
        WorkerConfig {
            id: id.into(),
            pool_size,
            heartbeat_interval: Duration::from_millis(500),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            default_timeout: DEFAULT_TIMEOUT,
            max_output_bytes: 1 << 20,
            runtimes: Runtimes::builtin(),
            token: None,
            seed: 0,
            observer: None,
        }
    }

    fn validate(&self) -> Result<(), WorkerError> {
        let invalid = |reason: String| Err(WorkerError::InvalidConfig(reason));
        if self.id.trim().is_empty() || self.id.len() > MAX_WORKER_ID_LEN {
            return invalid(format!(
                "the worker id must be 1 to {MAX_WORKER_ID_LEN} bytes, got {}",
                self.id.len()
            ));
        }
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return invalid(format!(
                "pool size {} is out of range 1..={MAX_POOL_SIZE}",
                self.pool_size
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return invalid("the heartbeat interval is zero".into());
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return invalid(format!(
                "reconnect backoff needs 0 < initial ({:?}) <= max ({:?})",
                self.reconnect_initial, self.reconnect_max
            ));
        }
        if self.handshake_timeout.is_zero() {
            return invalid("the handshake timeout is zero".into());
        }
        if self.default_timeout.is_zero() || self.default_timeout > MAX_TIMEOUT {
            return invalid(format!(
                "the default execution timeout {:?} is out of range (0, {MAX_TIMEOUT:?}]",
                self.default_timeout
            ));
        }
        Ok(())
    }
}

/// The longest worker id (the scheduler refuses longer ones in the hello).
pub const MAX_WORKER_ID_LEN: usize = 128;

/// The most slots a worker may have.
pub const MAX_POOL_SIZE: u32 = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    InvalidConfig(String),
}

/// Runs the worker until `shutdown` completes and the pool has drained.
///
/// On shutdown the worker sends `WorkerDraining`, finishes what it holds (at
/// most `drain_timeout`; what is still unfinished then is abandoned, not
/// reported), ends its side of the stream and returns once the scheduler has
/// ended its side (or after 5 s).
///
/// Connection failures are not errors: the worker keeps dialing (with backoff)
/// until it is shut down. An error is returned only for a configuration that
/// cannot work.
pub async fn run<F>(
    config: WorkerConfig,
    channel: impl Into<LeaderChannel>,
    clock: WallClock,
    shutdown: F,
) -> Result<(), WorkerError>
where
    F: Future<Output = ()> + Send,
{
    config.validate()?;
    let channel = channel.into();
    let timebase = Timebase::start();
    let mut shutdown = Shutdown::new(shutdown);
    let mut backoff = Backoff::new(config.reconnect_initial, config.reconnect_max, config.seed);
    let mut failed_dials: u32 = 0;
    // What the worker holds outlives each stream; dropped (its tasks
    // aborted) when the worker returns.
    let mut work = Work::new(&config, Arc::clone(&clock), timebase);
    loop {
        let holding = work.holding();
        let dial = session::open(&config, channel.clone(), holding);
        let opened = tokio::select! {
            biased;
            () = shutdown.wait() => return shut_down_unconnected(&config, &work),
            opened = work.unconnected(dial) => opened,
        };
        match opened {
            Ok(connection) => {
                info!(
                    worker = %config.id,
                    pool_size = config.pool_size,
                    failed_dials,
                    "connected to the scheduler"
                );
                failed_dials = 0;
                let session = Session::new(&config, timebase, &mut work, connection);
                match session.run(&mut shutdown).await {
                    SessionEnd::Closed => {
                        info!(worker = %config.id, "drained; stream closed");
                        return Ok(());
                    }
                    SessionEnd::Lost {
                        reason, running, ..
                    } if shutdown.requested() => {
                        warn!(
                            worker = %config.id, %reason, aborted = running,
                            "lost the scheduler stream while draining; shutting down"
                        );
                        return Ok(());
                    }
                    SessionEnd::Lost {
                        reason,
                        running,
                        settled,
                    } => {
                        warn!(
                            worker = %config.id, %reason, running,
                            "lost the scheduler stream; reconnecting (what runs goes on)"
                        );
                        if settled {
                            backoff.reset();
                        }
                    }
                }
            }
            Err(session::OpenFailure {
                reason,
                not_leader: true,
                ..
            }) => {
                // Not a failure of the scheduler: try where it pointed,
                // soon. A scheduler answered, so the cluster is up: the
                // backoff that refusals of a dead leader grew starts over
                // (else it could keep the worker away for seconds after a
                // takeover, past the new leader's adoption window).
                debug!(worker = %config.id, %reason, "a standby answered");
                backoff.reset();
                let wait = config.reconnect_initial;
                tokio::select! {
                    biased;
                    () = shutdown.wait() => return shut_down_unconnected(&config, &work),
                    () = work.unconnected(tokio::time::sleep(wait)) => continue,
                }
            }
            Err(session::OpenFailure {
                reason, refused, ..
            }) => {
                failed_dials = failed_dials.saturating_add(1);
                if refused {
                    // Not a network blip: say so on every attempt.
                    warn!(worker = %config.id, %reason, failed_dials, "the scheduler refused this worker; retrying");
                } else if failed_dials == 1 {
                    warn!(worker = %config.id, %reason, "cannot reach the scheduler; retrying");
                } else {
                    debug!(worker = %config.id, %reason, failed_dials, "cannot reach the scheduler");
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = shutdown.wait() => return shut_down_unconnected(&config, &work),
            () = work.unconnected(tokio::time::sleep(delay)) => {}
        }
    }
}

/// Shutdown with no stream open: nobody can be told of what still runs, so
/// it is abandoned (the scheduler runs it again when it gives up on it).
fn shut_down_unconnected(config: &WorkerConfig, work: &Work) -> Result<(), WorkerError> {
    info!(
        worker = %config.id,
        abandoned = work.holding().len(),
        "shut down while not connected to the scheduler"
    );
    Ok(())
}

/// Converts between tokio's clock and the core's [`Instant`]s (time since the
/// worker started).
///
/// [`Instant`]: taskforge_core::Instant
#[derive(Clone, Copy, Debug)]
struct Timebase {
    origin: tokio::time::Instant,
}

impl Timebase {
    /// Further than any deadline the pool can hold (timeouts are capped at
    /// [`MAX_TIMEOUT`]); keeps instant arithmetic far from overflow.
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

    fn start() -> Timebase {
        Timebase {
            origin: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> taskforge_core::Instant {
        taskforge_core::Instant::from_elapsed(self.origin.elapsed())
    }

    fn to_tokio(self, at: taskforge_core::Instant) -> tokio::time::Instant {
        self.origin + at.elapsed().min(Self::FAR)
    }
}

/// The caller's shutdown signal, pollable from several `select!`s in turn
/// (cancellation-safe: the future is kept until it completes).
struct Shutdown<F> {
    signal: Option<Pin<Box<F>>>,
}

impl<F: Future<Output = ()>> Shutdown<F> {
    fn new(signal: F) -> Shutdown<F> {
        Shutdown {
            signal: Some(Box::pin(signal)),
        }
    }

    fn requested(&self) -> bool {
        self.signal.is_none()
    }

    /// Completes when shutdown is requested (at once if it already was).
    async fn wait(&mut self) {
        if let Some(signal) = self.signal.as_mut() {
            signal.await;
            self.signal = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(WorkerConfig::new("w1", 4).validate().is_ok());
        let bad = [
            WorkerConfig::new(" ", 4),
            WorkerConfig::new("w".repeat(MAX_WORKER_ID_LEN + 1), 4),
            WorkerConfig::new("w1", 0),
            WorkerConfig::new("w1", MAX_POOL_SIZE + 1),
            WorkerConfig {
                heartbeat_interval: Duration::ZERO,
                ..WorkerConfig::new("w1", 1)
            },
            WorkerConfig {
                reconnect_max: Duration::from_millis(1),
                ..WorkerConfig::new("w1", 1)
            },
            WorkerConfig {
                default_timeout: Duration::ZERO,
                ..WorkerConfig::new("w1", 1)
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().starts_with("invalid worker configuration"));
        }
    }

    #[tokio::test]
    async fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let future = run(
            WorkerConfig::new("w1", 1),
            channel,
            system_clock(),
            std::future::pending(),
        );
        assert_send(&future);
    }

    #[tokio::test]
    async fn timebase_round_trips() {
        let timebase = Timebase::start();
        let at = taskforge_core::Instant::from_elapsed(Duration::from_millis(1500));
        assert_eq!(
            timebase.to_tokio(at),
            timebase.origin + Duration::from_millis(1500)
        );
        assert_eq!(
            timebase.to_tokio(taskforge_core::Instant::ZERO),
            timebase.origin
        );
        let never = taskforge_core::Instant::from_nanos(u64::MAX);
        assert_eq!(timebase.to_tokio(never), timebase.origin + Timebase::FAR);
        assert!(timebase.now() <= timebase.now());
    }

    #[tokio::test]
    async fn invalid_config_is_an_error() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let result = run(
            WorkerConfig::new("w1", 0),
            channel,
            system_clock(),
            std::future::pending(),
        )
        .await;
        assert!(matches!(result, Err(WorkerError::InvalidConfig(_))));
    }
}

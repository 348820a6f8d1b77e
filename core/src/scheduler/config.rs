//! Tunables of the scheduler state machine.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A worker that has not been heard from (heartbeat, result, anything) for this
    /// long is declared lost. Should be a few heartbeat intervals, and longer than
    /// the worst round trip, or slow links produce false losses.
    pub heartbeat_timeout: Duration,
    /// Most executions that may wait to start (queued or backing off). A submit
    /// beyond it is refused; executions re-queued after a failure are never refused.
    pub queue_limit: usize,
    /// Executions a worker may hold beyond its pool size, queued on the worker so a
    /// freed slot does not wait a round trip. Counted against the worker's load.
    pub prefetch: u32,
    /// Delay before a lost attempt is retried.
    pub retry_backoff: Backoff,
    /// How long past an attempt's timeout the scheduler waits for the worker's own
    /// timeout report before failing the execution itself.
    pub timeout_grace: Duration,
    /// How long terminal executions are remembered.
    pub retention: Retention,
    /// Attempts in a row the scheduler may time out on one session before it
    /// quarantines the session: a worker that takes work and never answers
    /// gets no more until it has answered for everything it holds.
    pub quarantine_after: u32,
    /// A connection under a worker id that is already connected replaces the
    /// old session only when nothing was heard from that one for this long;
    /// sooner, it is refused (two live processes under one id would
    /// otherwise replace each other back and forth). Above the workers'
    /// heartbeat interval, below `heartbeat_timeout`.
    pub takeover_after: Duration,
    /// How long an execution restored with a started attempt waits for a
    /// reconnecting worker to report that attempt still running (and adopt
    /// it) before it is retried. About the heartbeat timeout: a worker that
    /// has not reconnected by then would have been declared lost anyway.
    /// Zero retries at once.
    pub adoption_window: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_timeout: Duration::from_millis(2500),
            queue_limit: 100_000,
            prefetch: 2,
            retry_backoff: Backoff::default(),
            timeout_grace: Duration::from_secs(5),
            retention: Retention::default(),
            quarantine_after: 3,
            takeover_after: Duration::from_millis(1250),
            adoption_window: Duration::from_millis(2500),
        }
    }
}

/// Exponential backoff: `initial`, doubling per lost attempt, capped at `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before the retry that follows the `lost`-th lost attempt (≥ 1).
    pub fn delay(&self, lost: u32) -> Duration {
        let doublings = lost.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Terminal executions are dropped when older than `max_age` or when more than
/// `max_count` are held, oldest first, so memory stays bounded.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(24 * 3600),
            max_count: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(3), Duration::from_millis(350));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(350));
    }
}

//! Reconnect backoff: capped exponential, with jitter from a seeded rng so that
//! workers restarted together do not dial in lockstep, and a simulation run is
//! the same every time.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: SmallRng,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Back to the initial wait (after a connection that worked).
    pub(super) fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The next wait: between half and all of the current step, which then
    /// doubles up to the maximum.
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = step.checked_mul(2).unwrap_or(self.max).min(self.max);
        let half = step / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(self.rng.random_range(0..=spread));
        step - half + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS, 7);
        let steps = [100, 200, 400, 800, 1000, 1000, 1000];
        for step in steps {
            let delay = backoff.next_delay();
            let step = step * MS;
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
        }
        backoff.reset();
        let delay = backoff.next_delay();
        assert!(delay >= 50 * MS && delay <= 100 * MS, "{delay:?}");
    }

    #[test]
    fn same_seed_same_delays() {
        let delays = |seed| {
            let mut backoff = Backoff::new(100 * MS, 5000 * MS, seed);
            (0..10).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::MAX / 4, Duration::MAX, 3);
        for _ in 0..5 {
            backoff.next_delay();
        }
    }
}

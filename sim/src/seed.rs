//! One u64 per run, and every random choice derived from it.
//!
//! A run draws randomness in several independent places: the workload, the
//! fault schedule, turmoil's network (latencies, torn writes), the scheduler's
//! execution ids, each worker's reconnect jitter. Each gets its own stream,
//! derived from the run's seed and a fixed label, so that drawing one more
//! number in one place does not shift every choice made elsewhere — a change
//! to the workload generator leaves the fault schedule of a seed as it was.

use rand::SeedableRng;
use rand::rngs::SmallRng;

/// The seed of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seed(pub u64);

impl Seed {
    /// A value for `purpose`, independent of the values for other purposes.
    pub fn derive(self, purpose: &str) -> u64 {
        splitmix64(self.0 ^ fnv1a(purpose.as_bytes()))
    }

    /// A random stream for `purpose`.
    pub fn rng(self, purpose: &str) -> SmallRng {
        SmallRng::seed_from_u64(self.derive(purpose))
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// FNV-1a, 64 bits: small, stable across platforms and Rust versions.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Mixes all bits of `x` (the finalizer of SplitMix64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_different_values() {
        let seed = Seed(7);
        assert_eq!(seed.derive("faults"), seed.derive("faults"));
        assert_ne!(seed.derive("faults"), seed.derive("workload"));
        assert_ne!(Seed(7).derive("faults"), Seed(8).derive("faults"));
    }
}

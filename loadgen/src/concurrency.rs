//! How many executions ran at once: the arithmetic behind `observed_concurrency`,
//! `littles_law_concurrency`, `peak_concurrency` and `utilization`.
//!
//! Every execution that reached a worker carries the worker's start and finish
//! stamps. Within a measurement window `[from, until)`, the time-weighted mean
//! number of executions running at once is the total running time that falls in
//! the window divided by the window's length — each interval contributes its
//! overlap with the window, so executions that straddle an edge count for the
//! part inside. Little's law gives the same figure another way (mean number in
//! the system = arrival rate × mean time in it), from the throughput and the
//! mean run time; the two agreeing is the check that neither is miscounted.
//! Utilization is the observed figure over the capacity, Σ pool sizes.
//!
//! Everything here is plain integer microseconds: no clocks, no I/O.

use std::time::Duration;

/// One execution's run on a worker, in unix microseconds: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start_us: u64,
    pub end_us: u64,
}

impl Interval {
    pub fn new(start_us: u64, end_us: u64) -> Interval {
        Interval {
            start_us,
            end_us: end_us.max(start_us),
        }
    }

    /// Microseconds of this interval inside `[from, until)`.
    pub fn overlap(&self, from: u64, until: u64) -> u64 {
        self.end_us
            .min(until)
            .saturating_sub(self.start_us.max(from))
    }
}

/// The time-weighted mean number of intervals open during `[from, until)`.
/// An empty window has a mean of zero.
pub fn time_weighted_mean(intervals: &[Interval], from: u64, until: u64) -> f64 {
    if until <= from {
        return 0.0;
    }
    let busy: u128 = intervals
        .iter()
        .map(|i| u128::from(i.overlap(from, until)))
        .sum();
    busy as f64 / (until - from) as f64
}

/// The most intervals open at any one instant. An interval that ends at the
/// instant another starts does not overlap it (a slot handed straight on).
pub fn peak(intervals: &[Interval]) -> u32 {
    // (time, +1 start / -1 end); ends sort before starts at equal times.
    let mut events: Vec<(u64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for interval in intervals.iter().filter(|i| i.end_us > i.start_us) {
        events.push((interval.start_us, 1));
        events.push((interval.end_us, -1));
    }
    events.sort_unstable();
    let (mut open, mut most) = (0i64, 0i64);
    for (_, step) in events {
        open += i64::from(step);
        most = most.max(open);
    }
    most as u32
}

/// Little's law: the mean number in a system is the rate through it times the
/// mean time spent in it, `L = λ · W`.
pub fn littles_law(throughput_per_s: f64, mean_time: Duration) -> f64 {
    throughput_per_s * mean_time.as_secs_f64()
}

/// `observed / capacity`; zero when there is no capacity.
pub fn utilization(observed: f64, capacity: u32) -> f64 {
    match capacity {
        0 => 0.0,
        capacity => observed / f64::from(capacity),
    }
}

/// The time-weighted mean concurrency in each of `buckets` consecutive buckets
/// of `width_us`, the first starting at `origin_us`: one pass over the
/// intervals, each spread over the buckets it touches.
pub fn per_bucket(
    intervals: &[Interval],
    origin_us: u64,
    width_us: u64,
    buckets: usize,
) -> Vec<f64> {
    let mut busy = vec![0u128; buckets];
    if width_us == 0 || buckets == 0 {
        return vec![0.0; buckets];
    }
    let end = origin_us + width_us * buckets as u64;
    for interval in intervals {
        if interval.end_us <= origin_us || interval.start_us >= end {
            continue;
        }
        let first = (interval.start_us.max(origin_us) - origin_us) / width_us;
        let last = (interval.end_us.min(end) - 1 - origin_us) / width_us;
        for bucket in first..=last {
            let from = origin_us + bucket * width_us;
            busy[bucket as usize] += u128::from(interval.overlap(from, from + width_us));
        }
    }
    busy.into_iter()
        .map(|b| b as f64 / width_us as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(start_us: u64, end_us: u64) -> Interval {
        Interval::new(start_us, end_us)
    }

    #[test]
    fn the_mean_weighs_each_interval_by_its_time_in_the_window() {
        // Two slots busy all of [0, 100), a third for half of it.
        let intervals = [iv(0, 100), iv(0, 100), iv(25, 75)];
        assert_eq!(time_weighted_mean(&intervals, 0, 100), 2.5);
        // Intervals straddling the window's edges count only their inside part.
        let intervals = [iv(0, 50), iv(50, 150), iv(90, 200)];
        assert_eq!(
            time_weighted_mean(&intervals, 40, 140),
            (10 + 90 + 50) as f64 / 100.0
        );
        // Nothing in the window, or no window at all.
        assert_eq!(time_weighted_mean(&[iv(0, 10)], 10, 20), 0.0);
        assert_eq!(time_weighted_mean(&[iv(0, 10)], 5, 5), 0.0);
    }

    #[test]
    fn back_to_back_runs_on_a_slot_keep_it_fully_busy() {
        // One slot handing straight on: 10 runs of 10 µs.
        let intervals: Vec<Interval> = (0..10).map(|i| iv(i * 10, i * 10 + 10)).collect();
        assert_eq!(time_weighted_mean(&intervals, 0, 100), 1.0);
        assert_eq!(peak(&intervals), 1);
    }

    #[test]
    fn peak_counts_the_most_open_at_once() {
        assert_eq!(peak(&[]), 0);
        assert_eq!(peak(&[iv(0, 10), iv(5, 15), iv(7, 8), iv(20, 30)]), 3);
        // Zero-length runs (an echo inside one microsecond) occupy nothing.
        assert_eq!(peak(&[iv(5, 5), iv(5, 5)]), 0);
    }

    #[test]
    fn littles_law_matches_the_time_weighted_mean_at_steady_state() {
        // 8 slots, each running 10 ms tasks back to back for 1 s: 800 tasks/s.
        let mut intervals = Vec::new();
        for slot in 0..8u64 {
            for k in 0..100u64 {
                let start = k * 10_000 + slot; // slots slightly out of phase
                intervals.push(iv(start, start + 10_000));
            }
        }
        let from = 10_000;
        let until = 990_000;
        let observed = time_weighted_mean(&intervals, from, until);
        assert!((observed - 8.0).abs() < 1e-9, "{observed}");
        let little = littles_law(800.0, Duration::from_millis(10));
        assert!((little - 8.0).abs() < 1e-9, "{little}");
        assert_eq!(utilization(observed, 8), 1.0);
        assert_eq!(utilization(3.0, 0), 0.0);
    }

    #[test]
    fn buckets_split_intervals_at_their_edges() {
        let intervals = [iv(0, 100), iv(50, 250)];
        let buckets = per_bucket(&intervals, 0, 100, 3);
        assert_eq!(buckets, vec![1.5, 1.0, 0.5]);
        // Before the origin and after the end: clipped.
        let buckets = per_bucket(&[iv(0, 1000)], 100, 100, 2);
        assert_eq!(buckets, vec![1.0, 1.0]);
        assert_eq!(per_bucket(&intervals, 0, 0, 2), vec![0.0, 0.0]);
    }
}

//! The figures of one run, computed from its measurements: throughput, error
//! rate, the latency percentiles, capacity, observed concurrency and its Little's
//! law cross-check, utilization, and the timeline.
//!
//! This is the part of `report.json` that describes a run; the report adds the
//! run's settings, the machine, the baseline and the sweep around it.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::concurrency;
use crate::measure::{Latencies, Measurements, Percentiles};
use crate::memory::MemoryTrace;
use crate::target::ClusterSize;

/// The latency percentiles of a run, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencyTable {
    /// Intended send → terminal state received.
    pub e2e: Percentiles,
    /// `e2e − run`: what the platform adds to the function's own time.
    pub overhead: Percentiles,
    /// Scheduler accept → worker start.
    pub queue_wait: Percentiles,
    /// Intended send → ACCEPTED received.
    pub accept: Percentiles,
    /// Worker start → worker finish.
    pub run: Percentiles,
}

/// One interval of the timeline.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TimelinePoint {
    /// Start of the interval, seconds from the start of the run (warm-up included).
    pub t_s: f64,
    /// Its length: the interval's width, or other for the last one.
    pub span_s: f64,
    /// Executions that ended in it as they should, and those that did not.
    pub completed: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    pub errors_per_s: f64,
    /// p99 end-to-end latency of the executions that ended in this interval.
    pub p99_us: u64,
    /// Time-weighted mean of executions running on the workers.
    pub running: f64,
}

/// The measurement window, in seconds from the start of the run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Window {
    pub from_s: f64,
    pub until_s: f64,
}

/// Every figure of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub window: Window,
    pub window_s: f64,
    /// Measured requests sent (= completed + errors).
    pub issued: u64,
    /// Measured requests whose execution ended as its function should.
    pub completed: u64,
    /// Measured requests that did not (refused, lost, timed out, wrong status).
    pub errors: u64,
    pub error_rate: f64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub error_samples: Vec<String>,
    /// Terminal statuses of the measured requests.
    pub statuses: BTreeMap<String, u64>,
    /// Completions inside the window per second of window.
    pub throughput_per_s: f64,
    pub workers: u32,
    /// Σ pool sizes reported by the scheduler.
    pub capacity: u32,
    /// Time-weighted mean of executions running at once in the window, from
    /// the workers' start and finish stamps.
    pub observed_concurrency: f64,
    /// `throughput_per_s × mean run time`.
    pub littles_law_concurrency: f64,
    /// Most executions seen running at one instant over the whole run.
    pub peak_concurrency: u32,
    /// `observed_concurrency / capacity`.
    pub utilization: f64,
    pub mean_run_time_us: f64,
    pub latency_us: LatencyTable,
    pub timeline: Vec<TimelinePoint>,
    /// The target's resident memory over the run, where it was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryTrace>,
    /// The histograms behind `latency_us`, for the `.hgrm` file and the plots.
    #[serde(skip)]
    pub latencies: Latencies,
}

impl Summary {
    /// Computes the figures of `measurements`, for a cluster of `size`.
    pub fn new(measurements: Measurements, size: ClusterSize) -> Summary {
        let m = measurements;
        let window = m.window();
        let window_s = window.as_secs_f64();
        let throughput_per_s = match window_s {
            0.0 => 0.0,
            s => m.window_completions as f64 / s,
        };
        let (from_us, until_us) = m.window_unix_us();
        let observed = concurrency::time_weighted_mean(&m.intervals, from_us, until_us);
        let mean_run_time_us = m.latencies.run.mean();
        let little = concurrency::littles_law(
            throughput_per_s,
            Duration::from_secs_f64(mean_run_time_us / 1e6),
        );
        let origin = m.clock.origin();
        let since_origin =
            |at: tokio::time::Instant| at.saturating_duration_since(origin).as_secs_f64();

        let timeline = timeline(&m, since_origin(m.run_end));
        let latencies = &m.latencies;
        Summary {
            window: Window {
                from_s: since_origin(m.window_from),
                until_s: since_origin(m.window_until),
            },
            window_s,
            issued: m.issued,
            completed: m.completed,
            errors: m.errors,
            error_rate: match m.issued {
                0 => 0.0,
                n => m.errors as f64 / n as f64,
            },
            errors_by_kind: m.errors_by_kind,
            error_samples: m.error_samples,
            statuses: m.statuses,
            throughput_per_s,
            workers: size.workers,
            capacity: size.capacity,
            observed_concurrency: observed,
            littles_law_concurrency: little,
            peak_concurrency: concurrency::peak(&m.intervals),
            utilization: concurrency::utilization(observed, size.capacity),
            mean_run_time_us,
            latency_us: LatencyTable {
                e2e: Percentiles::of(&latencies.e2e),
                overhead: Percentiles::of(&latencies.overhead),
                queue_wait: Percentiles::of(&latencies.queue_wait),
                accept: Percentiles::of(&latencies.accept),
                run: Percentiles::of(&latencies.run),
            },
            timeline,
            memory: None,
            latencies: m.latencies,
        }
    }
}

/// One interval of the timeline while it is put together.
struct Slice {
    t_s: f64,
    span_s: f64,
    completed: u64,
    errors: u64,
    e2e: Histogram<u64>,
    /// Execution-seconds run on the workers within it.
    busy_s: f64,
}

/// The timeline's points. The last interval ends with the run, usually
/// part-way; one shorter than half an interval (the drain's last requests) is
/// folded into the one before, so its rate is not taken over a sliver of time.
fn timeline(m: &Measurements, run_s: f64) -> Vec<TimelinePoint> {
    let width = m.bucket_width;
    let width_s = width.as_secs_f64();
    let running = concurrency::per_bucket(
        &m.intervals,
        m.clock.unix_us(m.clock.origin()),
        width.as_micros() as u64,
        m.timeline.len(),
    );
    let mut slices: Vec<Slice> = m
        .timeline
        .iter()
        .zip(running)
        .enumerate()
        .map(|(i, (bucket, running))| {
            let t_s = (width * i as u32).as_secs_f64();
            Slice {
                t_s,
                span_s: width_s.min(run_s - t_s).max(1e-3),
                completed: bucket.completed,
                errors: bucket.errors,
                e2e: bucket.e2e.clone(),
                busy_s: running * width_s,
            }
        })
        .collect();
    if let [.., before, last] = slices.as_mut_slice() {
        if last.span_s < width_s / 2.0 {
            before.span_s += last.span_s;
            before.completed += last.completed;
            before.errors += last.errors;
            let _ = before.e2e.add(&last.e2e);
            before.busy_s += last.busy_s;
            slices.pop();
        }
    }
    slices
        .into_iter()
        .map(|i| TimelinePoint {
            t_s: i.t_s,
            span_s: i.span_s,
            completed: i.completed,
            errors: i.errors,
            throughput_per_s: i.completed as f64 / i.span_s,
            errors_per_s: i.errors as f64 / i.span_s,
            p99_us: match i.e2e.is_empty() {
                true => 0,
                false => i.e2e.value_at_quantile(0.99),
            },
            running: i.busy_s / i.span_s,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Clock, Recorder};
    use crate::target::{Observation, Stamps};

    #[test]
    fn a_sliver_at_the_end_of_the_timeline_joins_the_interval_before() {
        let clock = Clock::now();
        let origin = clock.origin();
        let recorder = Recorder::new(clock, origin, None, Duration::from_secs(1));
        let base = clock.unix_us(origin);
        for done_ms in [500, 1500, 2010] {
            let done = origin + Duration::from_millis(done_ms);
            let observation = Observation {
                accepted: Some(done),
                done,
                status: Some("COMPLETED".into()),
                // Each ran for the 100 ms before it was seen.
                stamps: Some(Stamps {
                    created_at_us: base,
                    started_at_us: base + (done_ms - 100) * 1000,
                    finished_at_us: base + done_ms * 1000,
                }),
                failure: None,
            };
            recorder.record(origin, true, &observation);
        }
        let size = ClusterSize {
            workers: 1,
            capacity: 1,
        };
        let summary = Summary::new(recorder.finish(), size);
        let points: Vec<(f64, f64, u64)> = summary
            .timeline
            .iter()
            .map(|p| (p.t_s, (p.span_s * 1000.0).round(), p.completed))
            .collect();
        assert_eq!(points, vec![(0.0, 1000.0, 1), (1.0, 1010.0, 2)]);
        let running: Vec<f64> = summary.timeline.iter().map(|p| p.running).collect();
        assert!((running[0] - 0.1).abs() < 1e-9, "{running:?}");
        assert!((running[1] - 0.2 / 1.01).abs() < 1e-9, "{running:?}");
        assert_eq!((summary.issued, summary.completed), (3, 3));
    }
}

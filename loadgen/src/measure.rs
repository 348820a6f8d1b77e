//! Recording what the requests saw: HdrHistograms of the latencies, counts,
//! a timeline, and the workers' run intervals.
//!
//! Five latencies are recorded per execution, in microseconds:
//!
//! | name | from | to | clock |
//! |---|---|---|---|
//! | `accept` | intended send | ACCEPTED received | load generator |
//! | `queue_wait` | scheduler accepted | worker started | scheduler, worker |
//! | `run` | worker started | worker finished | worker |
//! | `e2e` | intended send | terminal state received | load generator |
//! | `overhead` | `e2e − run`: everything that is not the function itself | | |
//!
//! "Intended send" is when the load shape meant the request to go: in a
//! closed loop the moment it went; in an open loop its slot in the schedule,
//! however late it actually left (see [`crate::load`]).
//!
//! Which requests count: those the load shape marks *measured* (sent inside the
//! measurement window, after the warm-up), each followed to its end, so
//! `issued = completed + errors` exactly. Throughput counts completions that
//! fall inside the window, whatever their send time. The timeline (per
//! interval: completions, errors, p99) and the run intervals cover every
//! request, warm-up included, so the plots show the whole run and concurrency
//! can be integrated over any window.
//!
//! One mutex guards it all; it is held for a few histogram increments per
//! request, which is nothing next to a request's two RPCs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::concurrency::Interval;
use crate::target::{FailureKind, Observation};

/// Largest latency recorded: one hour, in microseconds. Larger ones saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the run's histograms (0.1% resolution).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of the per-interval timeline histograms (1%), which are
/// many and only give a p99.
const TIMELINE_DIGITS: u8 = 2;
/// Distinct error messages kept as samples for the report.
const ERROR_SAMPLES: usize = 5;

/// An empty microsecond histogram with `digits` significant digits.
pub fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, digits).expect("valid histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The percentiles a report shows of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
            count: histogram.len(),
        }
    }
}

/// The five latency distributions of a run.
#[derive(Clone, Debug)]
pub struct Latencies {
    pub accept: Histogram<u64>,
    pub queue_wait: Histogram<u64>,
    pub run: Histogram<u64>,
    pub e2e: Histogram<u64>,
    pub overhead: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        let new = || histogram(SIGNIFICANT_DIGITS);
        Latencies {
            accept: new(),
            queue_wait: new(),
            run: new(),
            e2e: new(),
            overhead: new(),
        }
    }
}

/// Ties the load generator's monotonic clock to unix microseconds, the clock of
/// the scheduler's and workers' stamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_unix_us: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin: Instant::now(),
            origin_unix_us: micros(unix),
        }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The unix microseconds of `at`.
    pub fn unix_us(&self, at: Instant) -> u64 {
        if at >= self.origin {
            self.origin_unix_us + micros(at - self.origin)
        } else {
            self.origin_unix_us - micros(self.origin - at)
        }
    }
}

/// Completions, errors and latency in one interval of the timeline.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub completed: u64,
    pub errors: u64,
    pub e2e: Histogram<u64>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            completed: 0,
            errors: 0,
            e2e: histogram(TIMELINE_DIGITS),
        }
    }
}

/// What the progress display shows: the requests since it last looked.
#[derive(Clone, Debug)]
pub struct Live {
    pub completed: u64,
    pub errors: u64,
    pub e2e: Histogram<u64>,
    /// Measured requests issued so far (all of them, not since last look).
    pub issued: u64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            completed: 0,
            errors: 0,
            e2e: histogram(TIMELINE_DIGITS),
            issued: 0,
        }
    }
}

/// Everything recorded in one run.
#[derive(Clone, Debug)]
pub struct Measurements {
    pub clock: Clock,
    /// Start of the measurement window (end of the warm-up).
    pub window_from: Instant,
    /// End of the window: the planned end, or with `--count` the last measured
    /// request's end.
    pub window_until: Instant,
    pub bucket_width: Duration,
    /// When the last request of the run (of any phase) ended.
    pub run_end: Instant,
    pub issued: u64,
    pub completed: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub error_samples: Vec<String>,
    /// Terminal statuses seen by measured requests.
    pub statuses: BTreeMap<String, u64>,
    /// Completions (as expected) inside the window, measured or not.
    pub window_completions: u64,
    pub latencies: Latencies,
    pub timeline: Vec<Bucket>,
    /// Worker run intervals of every execution seen to its end.
    pub intervals: Vec<Interval>,
}

impl Measurements {
    pub fn window(&self) -> Duration {
        self.window_until
            .saturating_duration_since(self.window_from)
    }

    /// The window in unix microseconds.
    pub fn window_unix_us(&self) -> (u64, u64) {
        (
            self.clock.unix_us(self.window_from),
            self.clock.unix_us(self.window_until),
        )
    }
}

/// Collects observations from every load task.
#[derive(Debug)]
pub struct Recorder {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    measurements: Measurements,
    /// The planned end of the window, if it has one.
    planned_until: Option<Instant>,
    last_measured_done: Option<Instant>,
    live: Live,
}

impl Recorder {
    /// A recorder whose window opens at `window_from` and closes at
    /// `planned_until` (or, when `None`, at the last measured request's end).
    pub fn new(
        clock: Clock,
        window_from: Instant,
        planned_until: Option<Instant>,
        bucket_width: Duration,
    ) -> Recorder {
        let measurements = Measurements {
            clock,
            window_from,
            window_until: planned_until.unwrap_or(window_from),
            bucket_width: bucket_width.max(Duration::from_millis(1)),
            run_end: clock.origin(),
            issued: 0,
            completed: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            error_samples: Vec::new(),
            statuses: BTreeMap::new(),
            window_completions: 0,
            latencies: Latencies::default(),
            timeline: Vec::new(),
            intervals: Vec::new(),
        };
        Recorder {
            state: Mutex::new(State {
                measurements,
                planned_until,
                last_measured_done: None,
                live: Live::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a measured request as issued (for the progress display).
    pub fn issued(&self) {
        self.lock().live.issued += 1;
    }

    /// Records one request, meant to be sent at `intended`.
    pub fn record(&self, intended: Instant, measured: bool, observation: &Observation) {
        let e2e = micros(observation.done.saturating_duration_since(intended));
        let ok = observation.failure.is_none();
        let mut state = self.lock();
        let State {
            measurements: m,
            planned_until,
            last_measured_done,
            live,
        } = &mut *state;

        m.run_end = m.run_end.max(observation.done);
        let stamps = observation.stamps.filter(|s| s.ran());
        if let Some(stamps) = stamps {
            m.intervals
                .push(Interval::new(stamps.started_at_us, stamps.finished_at_us));
        }

        let since_origin = observation.done.saturating_duration_since(m.clock.origin());
        let index = (since_origin.as_nanos() / m.bucket_width.as_nanos()) as usize;
        if m.timeline.len() <= index {
            m.timeline.resize_with(index + 1, Bucket::default);
        }
        let bucket = &mut m.timeline[index];
        if ok {
            bucket.completed += 1;
            bucket.e2e.saturating_record(e2e);
            live.completed += 1;
            live.e2e.saturating_record(e2e);
            let in_window = observation.done >= m.window_from
                && planned_until.is_none_or(|until| observation.done <= until);
            if in_window {
                m.window_completions += 1;
            }
        } else {
            bucket.errors += 1;
            live.errors += 1;
        }

        if !measured {
            return;
        }
        *last_measured_done =
            Some(last_measured_done.map_or(observation.done, |last| last.max(observation.done)));
        m.issued += 1;
        if let Some(status) = &observation.status {
            *m.statuses.entry(status.clone()).or_default() += 1;
        }
        if let Some(failure) = &observation.failure {
            m.errors += 1;
            *m.errors_by_kind.entry(failure.kind.as_str()).or_default() += 1;
            let sample = failure.to_string();
            if m.error_samples.len() < ERROR_SAMPLES && !m.error_samples.contains(&sample) {
                m.error_samples.push(sample);
            }
            if failure.kind != FailureKind::UnexpectedStatus {
                return;
            }
        } else {
            m.completed += 1;
        }
        // Latencies of executions that reached a terminal state.
        let latencies = &mut m.latencies;
        if let Some(accepted) = observation.accepted {
            latencies
                .accept
                .saturating_record(micros(accepted.saturating_duration_since(intended)));
        }
        if ok {
            latencies.e2e.saturating_record(e2e);
        }
        if let Some(stamps) = stamps {
            let run = stamps.finished_at_us - stamps.started_at_us;
            latencies.run.saturating_record(run);
            if stamps.created_at_us != 0 {
                let wait = stamps.started_at_us.saturating_sub(stamps.created_at_us);
                latencies.queue_wait.saturating_record(wait);
            }
            if ok {
                latencies
                    .overhead
                    .saturating_record(e2e.saturating_sub(run));
            }
        }
    }

    /// What happened since the last call (the issued count is cumulative).
    pub fn take_live(&self) -> Live {
        let mut state = self.lock();
        let issued = state.live.issued;
        let mut live = std::mem::take(&mut state.live);
        state.live.issued = issued;
        live.issued = issued;
        live
    }

    /// Ends the recording: the window closes (at its planned end, or at the
    /// last measured request's end) and the measurements are handed over.
    pub fn finish(self) -> Measurements {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut m = state.measurements;
        m.window_until = match state.planned_until {
            Some(until) => until,
            None => state.last_measured_done.unwrap_or(m.window_from),
        };
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Failure, Stamps};

    fn done_at(
        clock: &Clock,
        after: Duration,
        accepted_after: Duration,
        stamps: Stamps,
    ) -> Observation {
        Observation {
            accepted: Some(clock.origin() + accepted_after),
            done: clock.origin() + after,
            status: Some("COMPLETED".into()),
            stamps: Some(stamps),
            failure: None,
        }
    }

    #[test]
    fn one_execution_gives_all_five_latencies() {
        let clock = Clock::now();
        let base = clock.unix_us(clock.origin());
        let recorder = Recorder::new(clock, clock.origin(), None, Duration::from_secs(1));
        // Sent at 0; accepted at 300 µs; queued 100 µs; ran 1 ms; seen at 2 ms.
        let stamps = Stamps {
            created_at_us: base + 200,
            started_at_us: base + 300,
            finished_at_us: base + 1300,
        };
        let observation = done_at(
            &clock,
            Duration::from_micros(2000),
            Duration::from_micros(300),
            stamps,
        );
        recorder.record(clock.origin(), true, &observation);
        let m = recorder.finish();
        let only = |h: &Histogram<u64>| {
            assert_eq!(h.len(), 1);
            h.max()
        };
        assert_eq!(only(&m.latencies.accept), 300);
        assert_eq!(only(&m.latencies.queue_wait), 100);
        assert_eq!(only(&m.latencies.run), 1000);
        assert_eq!(only(&m.latencies.e2e), 2000);
        assert_eq!(only(&m.latencies.overhead), 1000);
        assert_eq!((m.issued, m.completed, m.errors), (1, 1, 0));
        assert_eq!(m.intervals, vec![Interval::new(base + 300, base + 1300)]);
        assert_eq!(m.window(), Duration::from_micros(2000));
        assert_eq!(m.window_completions, 1);
    }

    #[test]
    fn warm_up_requests_feed_the_timeline_but_not_the_counts() {
        let clock = Clock::now();
        let from = clock.origin() + Duration::from_secs(1);
        let until = from + Duration::from_secs(2);
        let recorder = Recorder::new(clock, from, Some(until), Duration::from_secs(1));
        let at = |s: f64| clock.origin() + Duration::from_secs_f64(s);
        let seen = |done: f64| {
            done_at(
                &clock,
                Duration::from_secs_f64(done),
                Duration::ZERO,
                Stamps::default(),
            )
        };
        recorder.record(at(0.0), false, &seen(0.5)); // warm-up
        recorder.record(at(0.9), false, &seen(1.1)); // warm-up, ends in the window
        recorder.record(at(1.5), true, &seen(1.6));
        recorder.record(at(2.9), true, &seen(3.2)); // ends after the window
        let failed = Observation::failed(None, Failure::new(FailureKind::Trigger, "queue full"));
        recorder.record(at(2.0), true, &failed);
        let m = recorder.finish();
        assert_eq!((m.issued, m.completed, m.errors), (3, 2, 1));
        assert_eq!(m.errors_by_kind.get("trigger"), Some(&1));
        assert_eq!(m.error_samples, vec!["trigger: queue full".to_string()]);
        assert_eq!(m.window_completions, 2); // the ones ending at 1.1 and 1.6
        assert_eq!(m.timeline.len(), 4);
        let completed: Vec<u64> = m.timeline.iter().map(|b| b.completed).collect();
        assert_eq!(completed, vec![1, 2, 0, 1]);
        assert_eq!(m.latencies.e2e.len(), 2);
    }

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        assert_eq!(Percentiles::of(&histogram(3)), Percentiles::default());
        let mut h = histogram(3);
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(p.count, 1000);
    }
}

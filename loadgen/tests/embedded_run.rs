//! Short loads against embedded clusters, checked for consistency — never for
//! speed: counts add up, every key of `report.json` is there, utilization is a
//! fraction, the written files agree with the figures.

use std::path::{Path, PathBuf};

use serde_json::Value;
use taskforge_loadgen::{Config, Report, run};

fn config(args: &str) -> Config {
    let args = std::iter::once("taskforge-loadgen").chain(args.split_whitespace());
    Config::try_from_args(args).expect("valid arguments")
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "taskforge-loadgen-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn number(json: &Value, pointer: &str) -> f64 {
    json.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("report.json has no number at {pointer}"))
}

#[test]
fn a_durable_closed_loop_run_with_baseline_writes_a_consistent_report() {
    let out = TempDir::new("durable");
    let config = config(
        "--embedded 1x2 --function mix:sleep:2ms=3,echo=1 --concurrency 8 \
         --warmup 200ms --duration 1s --baseline --baseline-duration 300ms \
         --interval 250ms --progress off",
    );
    let report = run(&config).expect("the run");
    let files = report.write(out.path()).expect("the report files");
    for name in [
        "report.json",
        "report.md",
        "latency.hgrm",
        "latency.svg",
        "timeline.svg",
    ] {
        assert!(files.contains(&out.path().join(name)), "{name} not written");
    }

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    for key in [
        "capacity",
        "observed_concurrency",
        "littles_law_concurrency",
        "utilization",
        "throughput_per_s",
        "completed",
        "errors",
        "baseline_per_s",
        "ratio_to_baseline",
    ] {
        assert!(json.get(key).is_some_and(Value::is_number), "{key} missing");
    }
    for latency in ["e2e", "overhead", "queue_wait", "accept"] {
        for percentile in ["p50", "p90", "p99", "p999", "max"] {
            number(&json, &format!("/latency_us/{latency}/{percentile}"));
        }
    }

    assert_eq!(json["target"]["grpc_call"], "TriggerAndWatchExecution");
    assert_eq!(json["target"]["store"], "jsonl (fsync)");

    // Counts add up.
    let issued = number(&json, "/issued");
    let completed = number(&json, "/completed");
    let errors = number(&json, "/errors");
    assert!(issued > 0.0);
    assert_eq!(issued, completed + errors);
    assert_eq!(errors, 0.0, "{}", json["error_samples"]);
    assert_eq!(number(&json, "/statuses/COMPLETED"), issued);
    assert_eq!(number(&json, "/latency_us/e2e/count"), completed);
    assert_eq!(number(&json, "/latency_us/run/count"), completed);

    // The cluster's size, and concurrency within it.
    assert_eq!(number(&json, "/capacity"), 2.0);
    assert_eq!(number(&json, "/workers"), 1.0);
    let utilization = number(&json, "/utilization");
    assert!(
        (0.0..=1.02).contains(&utilization),
        "utilization {utilization}"
    );
    let observed = number(&json, "/observed_concurrency");
    assert_eq!(utilization, observed / 2.0);
    assert!(number(&json, "/peak_concurrency") <= 2.0);
    let little = number(&json, "/littles_law_concurrency");
    assert!(
        (little - observed).abs() <= 0.25 * observed.max(0.1),
        "Little's law {little} against observed {observed}"
    );

    // The baseline and the ratio to it.
    let ratio = number(&json, "/ratio_to_baseline");
    let expected = number(&json, "/throughput_per_s") / number(&json, "/baseline_per_s");
    assert!((ratio - expected).abs() < 1e-9);
    // One caller alone against the same server: its round trips, and the
    // run's e2e p50 over theirs.
    let sequential = number(&json, "/baseline_latency_us/p50");
    assert!(sequential > 0.0);
    assert!(number(&json, "/baseline/sequential_calls") > 0.0);
    let latency_ratio = number(&json, "/e2e_p50_to_baseline_p50");
    let expected = number(&json, "/latency_us/e2e/p50") / sequential;
    assert!((latency_ratio - expected).abs() < 1e-9);
    // `echo` has no nominal run time, so neither has the mix: no efficiency.
    assert!(json.pointer("/efficiency").is_none());

    // The .hgrm file holds the same distribution.
    let hgrm = std::fs::read_to_string(out.path().join("latency.hgrm")).unwrap();
    assert!(
        hgrm.contains(&format!("Total count    = {completed:12}")),
        "{hgrm}"
    );
    assert!(report.error_rate() == 0.0);
}

#[test]
fn a_sleep_run_reports_its_efficiency() {
    let config = config(
        "--embedded 1x2 --in-memory --function sleep:2ms --concurrency 4 \
         --warmup 0s --duration 300ms --progress off",
    );
    let report = run(&config).expect("the run");
    let run = report.run.as_ref().expect("a single run");
    assert_eq!(report.nominal_run_time_ms, Some(2.0));
    let efficiency = report.efficiency.expect("an efficiency");
    let expected = run.throughput_per_s * 2e-3 / f64::from(run.capacity);
    assert!((efficiency - expected).abs() < 1e-9);
    // A sleep never ends early: no more than every slot busy all the time.
    assert!(efficiency > 0.0 && efficiency <= 1.0, "{efficiency}");
}

#[test]
fn an_http_run_with_a_count_counts_expected_failures_as_completed() {
    let config = config(
        "--embedded 1x2 --protocol http --in-memory --function mix:echo=1,fail=1 \
         --concurrency 4 --count 40 --warmup 0s --progress off",
    );
    let report: Report = run(&config).expect("the run");
    let run = report.run.as_ref().expect("a single run");
    assert_eq!((run.issued, run.completed, run.errors), (40, 40, 0));
    assert_eq!(run.statuses.get("COMPLETED"), Some(&20));
    assert_eq!(run.statuses.get("FAILED"), Some(&20));
    // The invoke waits for the end: no accept is seen on its own.
    assert_eq!(run.latency_us.accept.count, 0);
    assert!(run.window_s > 0.0);
}

/// Also drives the seed's two calls, TriggerExecution then WatchExecution.
#[test]
fn executions_past_the_timeout_are_errors_and_break_the_error_budget() {
    let config = config(
        "--embedded 1x1 --in-memory --function sleep:300ms --timeout 50ms \
         --grpc-call trigger-then-watch --concurrency 2 --count 4 --warmup 0s --progress off",
    );
    let report = run(&config).expect("the run");
    let run = report.run.as_ref().expect("a single run");
    assert_eq!((run.issued, run.completed, run.errors), (4, 0, 4));
    assert_eq!(run.errors_by_kind.get("timeout"), Some(&4));
    assert_eq!(report.error_rate(), 1.0);
    assert!(report.error_rate() > config.max_error_rate);
}

//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (prometheus-client), all prefixed `taskforge_`.
//!
//! The gateway's own, kept across scrapes:
//! - `gateway_http_request_duration_seconds{method,route,status}`: a histogram
//!   of request handling time by route template (`/jobs/{execution_id}`;
//!   `unmatched` for unknown paths) and status class (`2xx`...).
//! - `gateway_execution_latency_seconds{status}`: end-to-end latency of
//!   executions whose end a `?wait=` request saw (created → finished, from the
//!   scheduler's timestamps). `POST /invoke?wait=` observes every execution it
//!   sees finish; `GET /jobs/{id}?wait=` only one that finished during the wait,
//!   so re-reading a finished job does not count it again.
//!
//! The cluster's, asked from the scheduler at scrape time (`GetClusterStats` and
//! `ListWorkers`, in parallel), so workers that left have no stale series:
//! `scheduler_up`, `workers`, `capacity_slots`, `in_flight`, `queue_depth`,
//! `queue_limit`, `executions{state}`, `watchers`, `quarantined_workers`, and
//! per worker `worker_pool_size`, `worker_in_flight`,
//! `worker_reported_running`, `worker_draining`, `worker_quarantined`
//! (`{worker}`). When the scheduler does not answer, `scheduler_up` is 0 and
//! the cluster series are left out; the scrape itself still succeeds.
//!
//! Label values are written into the exposition as they are (prometheus-client
//! does not escape them), so only values the gateway has checked become
//! labels: fixed strings, and worker ids that match the scheduler's own rule
//! `[A-Za-z0-9._:-]{1,128}`. A worker whose id does not is left out of the
//! per-worker series and counted in `worker_ids_rejected`: the scheduler is
//! not trusted to have enforced the rule, and a `"`, `}` or newline in a label
//! would end it early and let the rest of the id forge series.

use std::fmt;
use std::sync::atomic::AtomicU64;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::{ClusterStats, WorkerInfo};
use tokio::time::Instant;

use super::AppState;
use super::paths;
use super::view::TERMINAL;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutionLabels {
    /// One of [`TERMINAL`]: the scheduler's status string is not used as is.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
}

impl RuntimeLabels {
    /// Labels for a runtime name from the scheduler, if it is safe as a label
    /// value (runtime names are the registered languages: short words).
    fn new(runtime: &str) -> Option<RuntimeLabels> {
        let safe = (1..=64).contains(&runtime.len())
            && runtime
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        safe.then(|| RuntimeLabels {
            runtime: runtime.to_string(),
        })
    }
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// 100 µs to 2 min, 1-2.5-5 steps.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 25.0, 60.0, 120.0,
    ])
}

/// The gateway's own metrics.
pub(crate) struct GatewayMetrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Histogram>,
    execution_latency: Family<ExecutionLabels, Histogram>,
}

impl fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("taskforge");
        let http_requests = Family::<HttpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let execution_latency = Family::<ExecutionLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "gateway_http_request_duration_seconds",
            "Time the gateway took to answer HTTP requests, by route and status class",
            http_requests.clone(),
        );
        registry.register(
            "gateway_execution_latency_seconds",
            "End-to-end latency (created to finished) of executions whose end a ?wait= request saw",
            execution_latency.clone(),
        );
        GatewayMetrics {
            registry,
            http_requests,
            execution_latency,
        }
    }

    fn observe_request(
        &self,
        method: &Method,
        route: &'static str,
        status: StatusCode,
        seconds: f64,
    ) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method_label(method),
                route,
                status: status_class(status),
            })
            .observe(seconds);
    }

    /// Records a finished execution's end-to-end latency, if its timestamps
    /// allow and its status is a terminal one.
    pub fn observe_execution(&self, info: &ExecutionInfo) {
        let Some(status) = TERMINAL.iter().copied().find(|s| *s == info.status) else {
            return;
        };
        if info.created_at_us == 0 || info.finished_at_us < info.created_at_us {
            return;
        }
        let micros = info.finished_at_us - info.created_at_us;
        self.execution_latency
            .get_or_create(&ExecutionLabels { status })
            .observe(micros as f64 / 1e6);
    }

    /// The whole exposition: the cluster's series (when the scheduler
    /// answered), then the gateway's, then `# EOF`.
    pub fn render(
        &self,
        stats: Option<&ClusterStats>,
        workers: Option<&[WorkerInfo]>,
    ) -> Result<String, fmt::Error> {
        let cluster = cluster_registry(stats, workers);
        let mut text = String::new();
        encode_registry(&mut text, &cluster)?;
        encode_registry(&mut text, &self.registry)?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}

/// A registry of the cluster's state at this moment.
fn cluster_registry(stats: Option<&ClusterStats>, workers: Option<&[WorkerInfo]>) -> Registry {
    let mut registry = Registry::with_prefix("taskforge");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let gauge = U64Gauge::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    gauge(
        &mut registry,
        "scheduler_up",
        "1 if the scheduler answered this scrape, else 0",
        u64::from(stats.is_some() && workers.is_some()),
    );
    if let Some(stats) = stats {
        gauge(
            &mut registry,
            "workers",
            "Connected workers",
            stats.workers.into(),
        );
        gauge(
            &mut registry,
            "capacity_slots",
            "Sum of the connected workers' pool sizes",
            stats.capacity.into(),
        );
        gauge(
            &mut registry,
            "in_flight",
            "Executions dispatched to workers and not finished",
            stats.in_flight.into(),
        );
        gauge(
            &mut registry,
            "queue_depth",
            "Executions waiting for a worker",
            stats.queued.into(),
        );
        gauge(
            &mut registry,
            "queue_limit",
            "Most executions that may wait before triggers are refused",
            stats.queue_limit.into(),
        );
        let by_state = Family::<StateLabels, U64Gauge>::default();
        for (state, count) in [
            ("PENDING", stats.pending),
            ("RUNNING", stats.running),
            ("COMPLETED", stats.completed),
            ("FAILED", stats.failed),
            ("TIMED_OUT", stats.timed_out),
            ("CANCELLED", stats.cancelled),
        ] {
            by_state.get_or_create(&StateLabels { state }).set(count);
        }
        registry.register(
            "executions",
            "Executions the scheduler knows, by state",
            by_state,
        );
        gauge(
            &mut registry,
            "watchers",
            "Open watches of executions (WatchExecution, TriggerAndWatchExecution, ?wait=)",
            stats.watchers,
        );
        gauge(
            &mut registry,
            "quarantined_workers",
            "Connected workers that get no new work because their attempts kept timing out",
            stats.quarantined_workers.into(),
        );
        let queued = Family::<RuntimeLabels, U64Gauge>::default();
        for (runtime, &count) in &stats.queued_by_runtime {
            if let Some(labels) = RuntimeLabels::new(runtime) {
                queued.get_or_create(&labels).set(count.into());
            }
        }
        registry.register(
            "queue_depth_by_runtime",
            "Executions waiting for a worker, by the runtime they need",
            queued,
        );
        let accepted = Family::<RuntimeLabels, U64Gauge>::default();
        for (runtime, &count) in &stats.accepted_by_runtime {
            if let Some(labels) = RuntimeLabels::new(runtime) {
                accepted.get_or_create(&labels).set(count);
            }
        }
        registry.register(
            "executions_accepted_by_runtime",
            "Executions accepted since the scheduler started, by runtime",
            accepted,
        );
    }
    if let Some(workers) = workers {
        let pool_size = Family::<WorkerLabels, U64Gauge>::default();
        let in_flight = Family::<WorkerLabels, U64Gauge>::default();
        let reported = Family::<WorkerLabels, U64Gauge>::default();
        let draining = Family::<WorkerLabels, U64Gauge>::default();
        let quarantined = Family::<WorkerLabels, U64Gauge>::default();
        let mut rejected = 0u64;
        for worker in workers {
            if !is_safe_worker_id(&worker.worker_id) {
                // Debug-formatted (escaped) and cut short: the id is untrusted.
                let shown: String = worker.worker_id.chars().take(64).collect();
                tracing::debug!(worker_id = ?shown, "worker id is not a safe label value; left out of the metrics");
                rejected += 1;
                continue;
            }
            let labels = WorkerLabels {
                worker: worker.worker_id.clone(),
            };
            pool_size
                .get_or_create(&labels)
                .set(worker.pool_size.into());
            in_flight
                .get_or_create(&labels)
                .set(worker.in_flight.into());
            reported
                .get_or_create(&labels)
                .set(worker.reported_running.into());
            draining.get_or_create(&labels).set(worker.draining.into());
            quarantined
                .get_or_create(&labels)
                .set(worker.quarantined.into());
        }
        registry.register("worker_pool_size", "A worker's pool size", pool_size);
        registry.register(
            "worker_in_flight",
            "Executions the scheduler has in flight on a worker",
            in_flight,
        );
        registry.register(
            "worker_reported_running",
            "Running tasks a worker reported in its last heartbeat",
            reported,
        );
        registry.register(
            "worker_draining",
            "1 if a worker is draining (gets no new work)",
            draining,
        );
        registry.register(
            "worker_quarantined",
            "1 if a worker is quarantined (gets no new work until it answers for what it holds)",
            quarantined,
        );
        gauge(
            &mut registry,
            "worker_ids_rejected",
            "Workers left out of the per-worker series because their id is not a safe label value",
            rejected,
        );
    }
    registry
}

/// Longest worker id the scheduler accepts, in bytes.
const MAX_WORKER_ID_BYTES: usize = 128;

/// Whether a worker id may become a label value: the scheduler's own rule,
/// `[A-Za-z0-9._:-]{1,128}`, which has no character the exposition would need
/// to escape.
fn is_safe_worker_id(id: &str) -> bool {
    (1..=MAX_WORKER_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Standard methods by name, anything else as `OTHER` (bounded cardinality).
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route template a path belongs to, for the `route` label (bounded
/// cardinality: ids never become label values).
pub(crate) fn route_label(path: &str) -> &'static str {
    paths::ALL
        .iter()
        .copied()
        .find(|template| matches_template(template, path))
        .unwrap_or("unmatched")
}

fn matches_template(template: &str, path: &str) -> bool {
    let mut template = template.split('/');
    let mut path = path.split('/');
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t.starts_with('{') && !p.is_empty() => {}
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

/// Middleware: times every request and counts it by route and status class.
pub(crate) async fn track_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_label(request.uri().path());
    let response = next.run(request).await;
    state.metrics().observe_request(
        &method,
        route,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_label_by_template() {
        for template in paths::ALL {
            let concrete = template
                .replace("{function_id}", "f-1")
                .replace("{execution_id}", "e-1");
            assert_eq!(route_label(&concrete), *template);
        }
        assert_eq!(route_label("/jobs/e-1/cancel/x"), "unmatched");
        assert_eq!(route_label("/jobs/"), "unmatched");
        assert_eq!(route_label("/nope"), "unmatched");
        assert_eq!(route_label("/"), "unmatched");
    }

    #[test]
    fn worker_ids_that_are_safe_labels() {
        for ok in [
            "w-1",
            "worker-123",
            "host.example:9000",
            "A_b",
            &"x".repeat(128),
        ] {
            assert!(is_safe_worker_id(ok), "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "evil\"} 1",
            "line\nbreak",
            "back\\slash",
            "sp ace",
            "caf\u{e9}",
            "tab\t",
        ] {
            assert!(!is_safe_worker_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_worker_ids_never_become_labels() {
        let workers = [
            WorkerInfo {
                worker_id: "evil\"} 1\ntaskforge_injected_total 1337".into(),
                pool_size: 9,
                ..WorkerInfo::default()
            },
            WorkerInfo {
                worker_id: "w-ok".into(),
                pool_size: 2,
                quarantined: true,
                ..WorkerInfo::default()
            },
        ];
        let text = GatewayMetrics::new()
            .render(Some(&ClusterStats::default()), Some(&workers))
            .unwrap();
        assert!(!text.contains("injected"), "{text}");
        assert!(!text.contains("evil"), "{text}");
        for line in [
            "taskforge_worker_pool_size{worker=\"w-ok\"} 2",
            "taskforge_worker_quarantined{worker=\"w-ok\"} 1",
            "taskforge_worker_ids_rejected 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn only_terminal_statuses_label_latencies() {
        let metrics = GatewayMetrics::new();
        metrics.observe_execution(&ExecutionInfo {
            status: "WEIRD\"}".into(),
            created_at_us: 1,
            finished_at_us: 2,
            ..ExecutionInfo::default()
        });
        let text = metrics.render(None, None).unwrap();
        assert!(!text.contains("WEIRD"), "{text}");
    }

    #[test]
    fn exposition_has_cluster_and_gateway_series() {
        let metrics = GatewayMetrics::new();
        metrics.observe_request(
            &Method::GET,
            "/jobs/{execution_id}",
            StatusCode::NOT_FOUND,
            0.001,
        );
        let custom = Method::from_bytes(b"BREW").unwrap();
        metrics.observe_request(&custom, "unmatched", StatusCode::NOT_FOUND, 0.001);
        metrics.observe_execution(&ExecutionInfo {
            status: "COMPLETED".into(),
            created_at_us: 1_000_000,
            finished_at_us: 1_250_000,
            ..ExecutionInfo::default()
        });
        let stats = ClusterStats {
            workers: 1,
            capacity: 4,
            in_flight: 2,
            queued: 3,
            completed: 7,
            queue_limit: 100,
            watchers: 6,
            quarantined_workers: 1,
            ..ClusterStats::default()
        };
        let workers = [WorkerInfo {
            worker_id: "w-1".into(),
            pool_size: 4,
            in_flight: 2,
            quarantined: true,
            timeouts_in_a_row: 3,
            ..WorkerInfo::default()
        }];
        let text = metrics.render(Some(&stats), Some(&workers)).unwrap();
        for line in [
            "taskforge_scheduler_up 1",
            "taskforge_queue_depth 3",
            "taskforge_in_flight 2",
            "taskforge_capacity_slots 4",
            "taskforge_executions{state=\"COMPLETED\"} 7",
            "taskforge_worker_pool_size{worker=\"w-1\"} 4",
            "taskforge_worker_in_flight{worker=\"w-1\"} 2",
            "taskforge_worker_quarantined{worker=\"w-1\"} 1",
            "taskforge_watchers 6",
            "taskforge_quarantined_workers 1",
            "taskforge_worker_ids_rejected 0",
            "taskforge_gateway_http_request_duration_seconds_count{method=\"GET\",route=\"/jobs/{execution_id}\",status=\"4xx\"} 1",
            "taskforge_gateway_execution_latency_seconds_sum{status=\"COMPLETED\"} 0.25",
            "taskforge_gateway_http_request_duration_seconds_count{method=\"OTHER\",route=\"unmatched\",status=\"4xx\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);

        let down = metrics.render(None, None).unwrap();
        assert!(down.lines().any(|l| l == "taskforge_scheduler_up 0"));
        assert!(!down.contains("taskforge_queue_depth"));
    }
}

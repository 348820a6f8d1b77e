//! The JSON shapes of the gateway's answers, built from the scheduler's
//! protobuf messages (which have no serde of their own).
//!
//! Conventions: ids and strings the scheduler leaves empty are `null`;
//! timestamps are unix microseconds, `null` when not reached yet; output and
//! code are decoded by [`super::output`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use taskforge_proto::common::{ExecutionInfo, Function};
use taskforge_proto::scheduler::{ClusterStats, GetExecutionStatusResponse, WorkerInfo};

use super::output::{decode_output, decode_text};

/// Statuses after which an execution never changes.
pub(crate) const TERMINAL: [&str; 4] = ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"];

/// Every status an execution can be in.
pub(crate) const STATUSES: [&str; 6] = [
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "TIMED_OUT",
    "CANCELLED",
];

/// What a seed scheduler answers for an unknown id.
pub(crate) const NOT_FOUND: &str = "NOT_FOUND";

pub(crate) fn is_terminal(status: &str) -> bool {
    TERMINAL.contains(&status)
}

/// One execution: `GET /jobs/{id}`, `?wait=` answers, listings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct JobView {
    pub execution_id: String,
    pub status: String,
    pub output: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<&'static str>,
    pub error: Option<String>,
    pub function_id: Option<String>,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub created_at_us: Option<u64>,
    pub started_at_us: Option<u64>,
    pub finished_at_us: Option<u64>,
    /// The tail of what the function printed (Python and JavaScript).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

impl JobView {
    pub fn from_info(info: &ExecutionInfo) -> Self {
        let (output, encoding) = decode_output(&info.output);
        JobView {
            execution_id: info.execution_id.clone(),
            status: info.status.clone(),
            output,
            output_encoding: encoding.label(),
            error: non_empty(&info.error),
            function_id: non_empty(&info.function_id),
            attempt: info.attempt,
            worker_id: non_empty(&info.worker_id),
            created_at_us: non_zero(info.created_at_us),
            started_at_us: non_zero(info.started_at_us),
            finished_at_us: non_zero(info.finished_at_us),
            logs: non_empty(&info.logs),
        }
    }

    /// From a status answer. Output and error come from its top-level
    /// fields, which every scheduler fills (current ones leave
    /// `info.output`/`info.error` empty rather than send the output twice);
    /// `info`'s copies are used only when the top level has none, for a
    /// scheduler that filled just those. A seed scheduler sends no `info`, so
    /// the view is built from the top-level fields alone.
    pub fn from_status(execution_id: &str, response: &GetExecutionStatusResponse) -> Self {
        let mut info = response.info.clone().unwrap_or_default();
        if info.execution_id.is_empty() {
            info.execution_id = execution_id.to_string();
        }
        if info.status.is_empty() {
            info.status = response.status.clone();
        }
        if !response.output.is_empty() {
            info.output = response.output.clone();
        }
        if !response.error.is_empty() {
            info.error = response.error.clone();
        }
        Self::from_info(&info)
    }
}

/// A registered function. `code` is text, or base64 with
/// `"code_encoding":"base64"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct FunctionView {
    pub function_id: String,
    pub name: String,
    pub language: String,
    pub code: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_encoding: Option<&'static str>,
    /// `null` = the platform default.
    pub timeout_ms: Option<u64>,
    /// `null` = the platform default.
    pub max_attempts: Option<u32>,
    /// `null` = the worker's limit.
    pub max_memory_bytes: Option<u64>,
}

impl From<&Function> for FunctionView {
    fn from(function: &Function) -> Self {
        let (code, encoding) = decode_text(&function.code);
        FunctionView {
            function_id: function.function_id.clone(),
            name: function.name.clone(),
            language: function.language.clone(),
            code,
            code_encoding: encoding.label(),
            timeout_ms: non_zero(function.timeout_ms),
            max_attempts: non_zero(function.max_attempts),
            max_memory_bytes: non_zero(function.max_memory_bytes),
        }
    }
}

/// A connected worker and its load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct WorkerView {
    pub worker_id: String,
    pub pool_size: u32,
    pub in_flight: u32,
    pub reported_running: u32,
    pub draining: bool,
    /// It gets no new work until it answers for what it holds: its attempts
    /// kept timing out.
    pub quarantined: bool,
    /// Attempts in a row the scheduler timed out on it.
    pub timeouts_in_a_row: u32,
    /// The runtimes it runs; `null` for a worker that runs anything (a seed
    /// worker announces none).
    pub runtimes: Option<Vec<String>>,
    pub connected_at_us: Option<u64>,
    pub last_heartbeat_at_us: Option<u64>,
}

impl From<&WorkerInfo> for WorkerView {
    fn from(worker: &WorkerInfo) -> Self {
        WorkerView {
            worker_id: worker.worker_id.clone(),
            pool_size: worker.pool_size,
            in_flight: worker.in_flight,
            reported_running: worker.reported_running,
            draining: worker.draining,
            quarantined: worker.quarantined,
            timeouts_in_a_row: worker.timeouts_in_a_row,
            runtimes: (!worker.runtimes.is_empty()).then(|| worker.runtimes.clone()),
            connected_at_us: non_zero(worker.connected_at_us),
            last_heartbeat_at_us: non_zero(worker.last_heartbeat_at_us),
        }
    }
}

/// Cluster-wide counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct StatsView {
    pub workers: u32,
    pub capacity: u32,
    pub in_flight: u32,
    pub queued: u32,
    /// Waiting executions by the runtime they need.
    pub queued_by_runtime: BTreeMap<String, u32>,
    pub queue_limit: u32,
    /// Connected workers getting no new work (see `WorkerView::quarantined`).
    pub quarantined_workers: u32,
    /// Open watches (`?wait=` requests and watch streams).
    pub watchers: u64,
    pub executions: ExecutionCounts,
}

/// Executions by status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ExecutionCounts {
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
}

impl From<&ClusterStats> for StatsView {
    fn from(stats: &ClusterStats) -> Self {
        StatsView {
            workers: stats.workers,
            capacity: stats.capacity,
            in_flight: stats.in_flight,
            queued: stats.queued,
            queued_by_runtime: stats
                .queued_by_runtime
                .iter()
                .map(|(runtime, &count)| (runtime.clone(), count))
                .collect(),
            queue_limit: stats.queue_limit,
            quarantined_workers: stats.quarantined_workers,
            watchers: stats.watchers,
            executions: ExecutionCounts {
                pending: stats.pending,
                running: stats.running,
                completed: stats.completed,
                failed: stats.failed,
                timed_out: stats.timed_out,
                cancelled: stats.cancelled,
            },
        }
    }
}

/// A listing's paging cursor: `None` (JSON `null`) when the scheduler says
/// there is no more. Only emptiness counts: a short or empty page may still
/// have one.
pub(crate) fn cursor(next: String) -> Option<String> {
    (!next.is_empty()).then_some(next)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn non_zero<T: Default + PartialEq>(n: T) -> Option<T> {
    (n != T::default()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_view_of_a_finished_execution() {
        let info = ExecutionInfo {
            execution_id: "e-1".into(),
            function_id: "f-1".into(),
            status: "COMPLETED".into(),
            output: bytes::Bytes::from_static(&[0xff, 0x00]),
            error: String::new(),
            attempt: 1,
            worker_id: "w-1".into(),
            created_at_us: 10,
            started_at_us: 20,
            finished_at_us: 30,
            logs: String::new(),
        };
        assert_eq!(
            serde_json::to_value(JobView::from_info(&info)).unwrap(),
            json!({
                "execution_id": "e-1", "status": "COMPLETED", "output": "/wA=",
                "output_encoding": "base64", "error": null, "function_id": "f-1",
                "attempt": 1, "worker_id": "w-1", "created_at_us": 10,
                "started_at_us": 20, "finished_at_us": 30
            })
        );
    }

    #[test]
    fn job_view_from_a_seed_status_answer() {
        let response = GetExecutionStatusResponse {
            status: "FAILED".into(),
            output: bytes::Bytes::new(),
            error: "boom".into(),
            info: None,
        };
        let view = JobView::from_status("e-9", &response);
        assert_eq!(view.execution_id, "e-9");
        assert_eq!(view.status, "FAILED");
        assert_eq!(view.error.as_deref(), Some("boom"));
        assert_eq!(view.output, Value::Null);
        assert!(view.output_encoding.is_none());
    }

    fn finished(output: &'static [u8], error: &str) -> ExecutionInfo {
        ExecutionInfo {
            execution_id: "e-2".into(),
            status: "COMPLETED".into(),
            output: bytes::Bytes::from_static(output),
            error: error.into(),
            attempt: 2,
            ..ExecutionInfo::default()
        }
    }

    #[test]
    fn job_view_reads_output_and_error_from_the_top_level() {
        // Today's scheduler: the output once, at the top level.
        let response = GetExecutionStatusResponse {
            status: "COMPLETED".into(),
            output: bytes::Bytes::from_static(b"{\"sum\":5}"),
            error: "retried once".into(),
            info: Some(finished(b"", "")),
        };
        let view = JobView::from_status("e-2", &response);
        assert_eq!(view.output, json!({"sum": 5}));
        assert_eq!(view.error.as_deref(), Some("retried once"));
        assert_eq!(view.attempt, 2);

        // The top level wins when both are filled.
        let response = GetExecutionStatusResponse {
            info: Some(finished(b"\"stale\"", "stale")),
            ..response
        };
        let view = JobView::from_status("e-2", &response);
        assert_eq!(view.output, json!({"sum": 5}));
        assert_eq!(view.error.as_deref(), Some("retried once"));
    }

    #[test]
    fn job_view_falls_back_to_info_when_the_top_level_is_empty() {
        let response = GetExecutionStatusResponse {
            status: "COMPLETED".into(),
            output: bytes::Bytes::new(),
            error: String::new(),
            info: Some(finished(b"7", "note")),
        };
        let view = JobView::from_status("e-2", &response);
        assert_eq!(view.output, json!(7));
        assert_eq!(view.error.as_deref(), Some("note"));
    }

    #[test]
    fn worker_view_shows_quarantine() {
        let worker = WorkerInfo {
            worker_id: "w-3".into(),
            quarantined: true,
            timeouts_in_a_row: 3,
            ..WorkerInfo::default()
        };
        let view = serde_json::to_value(WorkerView::from(&worker)).unwrap();
        assert_eq!(view["quarantined"], true);
        assert_eq!(view["timeouts_in_a_row"], 3);
    }

    #[test]
    fn cursors() {
        assert_eq!(cursor(String::new()), None);
        assert_eq!(cursor("e-7".into()), Some("e-7".to_string()));
    }

    #[test]
    fn terminal_statuses() {
        for status in ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"] {
            assert!(is_terminal(status));
        }
        for status in ["PENDING", "RUNNING", "NOT_FOUND", "ACCEPTED", ""] {
            assert!(!is_terminal(status));
        }
    }
}

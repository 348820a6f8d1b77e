//! Between the wire and the pool: requests from the scheduler are validated into
//! core [`Assignment`]s (or rejected with a clear error), and the pool's reports
//! become protobuf messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::ExecutionId;
use taskforge_core::pool::{Assignment, Report};
use taskforge_proto::common::{ExecutionRequest, ExecutionResult, Outcome};
use taskforge_proto::worker::worker_message::Message;
use taskforge_proto::worker::{
    CancelRequest, HeldAttempt, WorkerDraining, WorkerHeartbeat, WorkerHello, WorkerMessage,
};

use super::definitions::{Definition, Definitions};

/// The start-to-close limit of a request that carries none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest start-to-close limit a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a started task runs.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub(super) definition: Arc<Definition>,
    pub(super) payload: Bytes,
    /// The start-to-close limit (the pool enforces it; a runtime may also
    /// bound CPU time by it).
    pub(super) timeout: Duration,
}

/// A request that cannot be run, and why; answered at once with a failed result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) execution_id: String,
    pub(super) attempt: u32,
    pub(super) error: String,
}

/// Validates an execution request into an assignment for the pool, running
/// the function `definitions` resolve it to.
pub(super) fn assignment(
    mut request: ExecutionRequest,
    definitions: &Definitions,
    default_timeout: Duration,
) -> Result<Assignment<Job>, Rejection> {
    let (raw_id, attempt) = (request.execution_id.clone(), request.attempt);
    let reject = |error: String| Rejection {
        execution_id: raw_id.clone(),
        attempt,
        error,
    };
    let Some(execution) = ExecutionId::parse(&request.execution_id) else {
        return Err(reject(format!(
            "invalid execution id {:?}: expected 16 hex digits",
            shorten(&request.execution_id)
        )));
    };
    let definition = definitions.resolve(&mut request).map_err(reject)?;
    let timeout = match request.timeout_ms {
        0 => default_timeout,
        ms if ms > MAX_TIMEOUT.as_millis() as u64 => {
            return Err(reject(format!(
                "timeout of {ms} ms is beyond the worker's limit of {} ms (24 hours)",
                MAX_TIMEOUT.as_millis()
            )));
        }
        ms => Duration::from_millis(ms),
    };
    Ok(Assignment {
        execution,
        attempt: request.attempt,
        timeout,
        job: Job {
            definition,
            payload: request.payload,
            timeout,
        },
    })
}

/// The attempt a cancel request targets; `None` for an unreadable execution id.
pub(super) fn cancel_target(cancel: &CancelRequest) -> Option<(ExecutionId, u32)> {
    ExecutionId::parse(&cancel.execution_id).map(|execution| (execution, cancel.attempt))
}

/// The hello, listing the attempts (execution, attempt) the worker still
/// holds from an earlier stream.
pub(super) fn hello(
    worker_id: &str,
    pool_size: u32,
    runtimes: Vec<String>,
    holding: impl IntoIterator<Item = (ExecutionId, u32)>,
) -> WorkerMessage {
    let holding = holding
        .into_iter()
        .map(|(execution, attempt)| HeldAttempt {
            execution_id: execution.to_string(),
            attempt,
        })
        .collect();
    message(Message::Hello(WorkerHello {
        worker_id: worker_id.to_string(),
        pool_size,
        caches_functions: true,
        runtimes,
        holding,
    }))
}

pub(super) fn heartbeat(worker_id: &str, running: u32, queued: u32) -> WorkerMessage {
    message(Message::Heartbeat(WorkerHeartbeat {
        worker_id: worker_id.to_string(),
        running_tasks: i32::try_from(running).unwrap_or(i32::MAX),
        queued_tasks: i32::try_from(queued).unwrap_or(i32::MAX),
    }))
}

pub(super) fn draining() -> WorkerMessage {
    message(Message::Draining(WorkerDraining {}))
}

/// The result of an attempt, as the pool reported it. `started_at_us` is 0 for
/// an attempt that never started (cancelled while queued).
pub(super) fn result(
    execution: ExecutionId,
    attempt: u32,
    report: Report,
    started_at_us: u64,
    finished_at_us: u64,
    logs: String,
) -> WorkerMessage {
    let (outcome, output, error) = match report {
        Report::Succeeded(output) => (Outcome::Succeeded, output, String::new()),
        Report::Failed { error, output } => (Outcome::Failed, output, error),
        Report::TimedOut { after } => (
            Outcome::TimedOut,
            Bytes::new(),
            format!("timed out after {after:?}"),
        ),
        Report::Cancelled => (Outcome::Cancelled, Bytes::new(), "cancelled".to_string()),
    };
    message(Message::Result(ExecutionResult {
        execution_id: execution.to_string(),
        success: outcome == Outcome::Succeeded,
        output,
        error,
        attempt,
        started_at_us,
        finished_at_us,
        outcome: outcome as i32,
        logs,
    }))
}

/// A report whose output is over `limit` becomes a failure saying so.
pub(super) fn within_output_limit(report: Report, limit: usize) -> Report {
    match report {
        Report::Succeeded(output) | Report::Failed { output, .. } if output.len() > limit => {
            Report::Failed {
                error: format!("output is {} bytes; the limit is {limit}", output.len()),
                output: Bytes::new(),
            }
        }
        report => report,
    }
}

/// The failed result answering a request that cannot be run.
pub(super) fn rejection(rejection: Rejection, now_us: u64) -> WorkerMessage {
    message(Message::Result(ExecutionResult {
        execution_id: rejection.execution_id,
        success: false,
        output: Bytes::new(),
        error: rejection.error,
        attempt: rejection.attempt,
        started_at_us: 0,
        finished_at_us: now_us,
        outcome: Outcome::Failed as i32,
        logs: String::new(),
    }))
}

fn message(message: Message) -> WorkerMessage {
    WorkerMessage {
        message: Some(message),
    }
}

/// At most 64 characters of `text`, for error messages.
pub(super) fn shorten(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtimes;
    use taskforge_proto::common::Function;

    fn request(id: &str, language: &str, code: &str, timeout_ms: u64) -> ExecutionRequest {
        ExecutionRequest {
            execution_id: id.to_string(),
            function_id: "f1".to_string(),
            payload: Bytes::from_static(b"{}"),
            attempt: 3,
            timeout_ms,
            function: Some(Function {
                function_id: "f1".to_string(),
                name: "fn".to_string(),
                language: language.to_string(),
                code: Bytes::copy_from_slice(code.as_bytes()),
                ..Function::default()
            }),
        }
    }

    const ID: &str = "00000000000000ab";

    #[test]
    fn a_good_request_becomes_an_assignment() {
        let a = assignment(
            request(ID, "builtin", "echo", 1500),
            &Definitions::new(Runtimes::builtin()),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(a.execution, ExecutionId(0xab));
        assert_eq!(a.attempt, 3);
        assert_eq!(a.timeout, Duration::from_millis(1500));
        assert_eq!(a.job.definition.language(), "builtin");
        assert_eq!(a.job.payload, Bytes::from_static(b"{}"));
    }

    #[test]
    fn zero_timeout_means_the_default() {
        let default = Duration::from_secs(42);
        let a = assignment(
            request(ID, "builtin", "sleep", 0),
            &Definitions::new(Runtimes::builtin()),
            default,
        )
        .unwrap();
        assert_eq!(a.timeout, default);
    }

    #[test]
    fn bad_requests_are_rejected_with_a_clear_error() {
        let cases = [
            (
                request("xyz", "builtin", "echo", 0),
                "invalid execution id \"xyz\"",
            ),
            (request("", "builtin", "echo", 0), "invalid execution id"),
            (
                request(ID, "builtin", "echo", u64::MAX),
                "beyond the worker's limit",
            ),
            (
                ExecutionRequest {
                    function: None,
                    ..request(ID, "builtin", "echo", 0)
                },
                "was not defined on this stream",
            ),
        ];
        for (request, expected) in cases {
            let raw_id = request.execution_id.clone();
            let rejection = assignment(
                request,
                &Definitions::new(Runtimes::builtin()),
                DEFAULT_TIMEOUT,
            )
            .unwrap_err();
            assert!(rejection.error.contains(expected), "{}", rejection.error);
            assert_eq!(rejection.execution_id, raw_id);
            assert_eq!(rejection.attempt, 3);
        }
        let long_id = "z".repeat(10_000);
        let rejection = assignment(
            request(&long_id, "builtin", "echo", 0),
            &Definitions::new(Runtimes::builtin()),
            DEFAULT_TIMEOUT,
        )
        .unwrap_err();
        assert!(rejection.error.len() < 200);
    }

    #[test]
    fn reports_become_results_with_outcomes() {
        let id = ExecutionId(7);
        let cases = [
            (
                Report::Succeeded(Bytes::from_static(b"out")),
                Outcome::Succeeded,
                "",
            ),
            (
                Report::Failed {
                    error: "boom".into(),
                    output: Bytes::new(),
                },
                Outcome::Failed,
                "boom",
            ),
            (
                Report::TimedOut {
                    after: Duration::from_millis(250),
                },
                Outcome::TimedOut,
                "timed out after 250ms",
            ),
            (Report::Cancelled, Outcome::Cancelled, "cancelled"),
        ];
        for (report, outcome, error) in cases {
            let Some(Message::Result(result)) =
                super::result(id, 2, report, 10, 20, "printed\n".into()).message
            else {
                panic!("not a result");
            };
            assert_eq!(result.execution_id, "0000000000000007");
            assert_eq!(result.attempt, 2);
            assert_eq!(result.outcome, outcome as i32);
            assert_eq!(result.success, outcome == Outcome::Succeeded);
            assert_eq!(result.error, error);
            assert_eq!((result.started_at_us, result.finished_at_us), (10, 20));
            assert_eq!(result.logs, "printed\n");
        }
    }

    #[test]
    fn cancel_targets_need_a_valid_id() {
        let cancel = CancelRequest {
            execution_id: ID.to_string(),
            attempt: 2,
        };
        assert_eq!(cancel_target(&cancel), Some((ExecutionId(0xab), 2)));
        let cancel = CancelRequest {
            execution_id: "nope".to_string(),
            attempt: 2,
        };
        assert_eq!(cancel_target(&cancel), None);
    }

    #[test]
    fn outputs_over_the_limit_fail_their_execution() {
        let big = Bytes::from(vec![b'x'; 11]);
        let failed = within_output_limit(Report::Succeeded(big.clone()), 10);
        assert_eq!(
            failed,
            Report::Failed {
                error: "output is 11 bytes; the limit is 10".into(),
                output: Bytes::new(),
            }
        );
        let kept = within_output_limit(Report::Succeeded(big.clone()), 11);
        assert_eq!(kept, Report::Succeeded(big));
        let timed_out = Report::TimedOut {
            after: Duration::from_secs(1),
        };
        assert_eq!(within_output_limit(timed_out.clone(), 0), timed_out);
    }
}

//! `?wait=DURATION`: parsing the duration, and waiting for an execution to
//! finish on a scheduler stream that sends the current state first, then each
//! change, and ends after a terminal state — never by polling. `GET
//! /jobs/{id}?wait=` watches with `WatchExecution`; `POST /invoke/{id}?wait=`
//! triggers and watches in one `TriggerAndWatchExecution` call.
//!
//! Durations are a non-negative decimal number and a unit: `ms`, `s`, `m` or
//! `h` (`500ms`, `2s`, `1.5s`, `1m`). Longer waits than the configured
//! `max_wait` are shortened to it; `0s` answers at once with the current state.
//!
//! The current state is always awaited (within the longer of the wait and the
//! RPC deadline), so a wait that runs out still answers with a real state. A
//! watch that breaks off after the first state (e.g. the scheduler restarts)
//! ends the wait early with the last state seen; the client can wait again.
//! A watch the scheduler refuses with RESOURCE_EXHAUSTED (its watch caps are
//! reached) is 429 `too_many_watches`, not `queue_full`: the client should wait
//! later or read without `?wait=`, not slow its triggers.
//! A state too large for the gateway to read (tonic's OUT_OF_RANGE) is an
//! error instead (502): every later wait would hit it again, and answering the
//! last state would show an execution as running for ever.

use std::time::Duration;

use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::{TriggerExecutionRequest, WatchExecutionRequest};
use tokio::time::{Instant, timeout_at};
use tonic::Code;

pub(crate) use crate::duration::{DurationError, parse_duration};

use super::AppState;
use super::error::ApiError;
use super::view::{NOT_FOUND, is_terminal};

/// The `wait` query parameter, capped at `max_wait`; `None` when absent.
pub(crate) fn wait_param(
    raw: Option<&str>,
    max_wait: Duration,
) -> Result<Option<Duration>, ApiError> {
    raw.map(|raw| match parse_duration(raw) {
        Ok(wait) => Ok(wait.min(max_wait)),
        // Longer than any cap: the cap.
        Err(DurationError::TooLong) => Ok(max_wait),
        Err(e) => Err(ApiError::invalid_parameter(format!(
            "invalid `wait` value {raw:?}: {e}"
        ))),
    })
    .transpose()
}

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The execution finished. `seen_finishing` is false when it had already
    /// finished when the watch began.
    Terminal {
        info: ExecutionInfo,
        seen_finishing: bool,
    },
    /// The wait ran out (or the watch broke off); the last state seen.
    Current(ExecutionInfo),
}

/// Watches `execution_id` until it is terminal or `wait` has passed.
///
/// Fails only if not even the current state could be had: unknown id (404),
/// scheduler unreachable (503), no answer in time (504), and so on.
pub(crate) async fn until_terminal(
    state: &AppState,
    execution_id: &str,
    wait: Duration,
) -> Result<Waited, ApiError> {
    let now = Instant::now();
    let deadline = now + wait;
    let first_deadline = deadline.max(now + state.config().rpc_timeout);
    let no_state =
        || ApiError::deadline_exceeded("the scheduler did not send the execution's state in time");

    let mut client = state.client();
    let request = WatchExecutionRequest {
        execution_id: execution_id.to_string(),
    };
    let mut stream = match timeout_at(first_deadline, client.watch_execution(request)).await {
        Err(_) => return Err(no_state()),
        Ok(Err(status)) => return Err(watch_refused(&status)),
        Ok(Ok(response)) => response.into_inner(),
    };

    let named = |mut info: ExecutionInfo| {
        if info.execution_id.is_empty() {
            info.execution_id = execution_id.to_string();
        }
        info
    };
    let last = match timeout_at(first_deadline, stream.message()).await {
        Err(_) => return Err(no_state()),
        Ok(Err(status)) => return Err(watch_refused(&status)),
        Ok(Ok(None)) => {
            return Err(ApiError::scheduler_error(
                "the scheduler ended the watch without sending a state",
            ));
        }
        Ok(Ok(Some(info))) => named(info),
    };
    if last.status == NOT_FOUND {
        return Err(ApiError::not_found(format!(
            "no execution with id {execution_id:?}"
        )));
    }
    follow(stream, last, deadline, execution_id)
        .await
        .map_err(|unreadable| unreadable.error)
}

/// `POST /invoke/{id}?wait=`: triggers with `TriggerAndWatchExecution` and
/// waits on that same stream until the execution is terminal or `wait` has
/// passed — one call to the scheduler, not a trigger and then a watch.
///
/// Fails like a trigger when the scheduler refuses or does not answer in
/// time. Once it has answered (it answers only after the execution is durably
/// accepted), the first state follows at once; should the stream break
/// before it, the execution was accepted but is not named: 502, the one case
/// where a retry without an `Idempotency-Key` could run it twice.
pub(crate) async fn trigger_and_wait(
    state: &AppState,
    request: TriggerExecutionRequest,
    wait: Duration,
) -> Result<Waited, ApiError> {
    let now = Instant::now();
    let deadline = now + wait;
    let rpc_timeout = state.config().rpc_timeout;
    let mut client = state.client();
    // No grpc-timeout on the request: it would bound the whole stream.
    let answer = timeout_at(
        now + rpc_timeout,
        client.trigger_and_watch_execution(request),
    );
    let mut stream = match answer.await {
        Err(_) => {
            return Err(ApiError::deadline_exceeded(
                "the scheduler did not answer in time",
            ));
        }
        Ok(Err(status)) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "trigger failed");
            return Err(ApiError::from_status(&status));
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    let first_deadline = deadline.max(Instant::now() + rpc_timeout);
    let unnamed = |why: &str| {
        ApiError::scheduler_error(format!(
            "the scheduler accepted the execution but {why} before naming it"
        ))
    };
    let first = match timeout_at(first_deadline, stream.message()).await {
        Err(_) => return Err(unnamed("sent no state in time")),
        Ok(Err(status)) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "trigger-and-watch broke off");
            return Err(unnamed("its stream broke off"));
        }
        Ok(Ok(None)) => return Err(unnamed("its stream ended")),
        Ok(Ok(Some(first))) if first.execution_id.is_empty() => {
            return Err(unnamed("its first state came"));
        }
        Ok(Ok(Some(first))) => first,
    };
    let execution_id = first.execution_id.clone();
    // The execution is accepted: a state it cannot read ends the wait with
    // the last one it could (the invoke answers 202, never an error).
    Ok(follow(stream, first, deadline, &execution_id)
        .await
        .unwrap_or_else(|unreadable| {
            tracing::debug!(error = %unreadable.error, execution_id, "a state could not be read");
            Waited::Current(unreadable.last)
        }))
}

/// A state too large for the gateway to read (tonic's OUT_OF_RANGE) ended a
/// wait; `last` is the last state it read.
struct Unreadable {
    last: ExecutionInfo,
    error: ApiError,
}

/// Reads `stream` (after its first state, `last`) until a terminal state or
/// `deadline`.
async fn follow(
    mut stream: tonic::Streaming<ExecutionInfo>,
    mut last: ExecutionInfo,
    deadline: Instant,
    execution_id: &str,
) -> Result<Waited, Unreadable> {
    let named = |mut info: ExecutionInfo| {
        if info.execution_id.is_empty() {
            info.execution_id = execution_id.to_string();
        }
        info
    };
    if is_terminal(&last.status) {
        read_to_the_end(&mut stream).await;
        return Ok(Waited::Terminal {
            info: last,
            seen_finishing: false,
        });
    }
    loop {
        match timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(info))) => {
                last = named(info);
                if is_terminal(&last.status) {
                    read_to_the_end(&mut stream).await;
                    return Ok(Waited::Terminal {
                        info: last,
                        seen_finishing: true,
                    });
                }
            }
            Ok(Ok(None)) => return Ok(Waited::Current(last)),
            Ok(Err(status)) if status.code() == Code::OutOfRange => {
                let error = ApiError::from_status(&status);
                return Err(Unreadable { last, error });
            }
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), message = status.message(), execution_id, "watch broke off");
                return Ok(Waited::Current(last));
            }
            Err(_) => return Ok(Waited::Current(last)),
        }
    }
}

/// Reads the end of a stream that has sent its terminal state: the trailers
/// follow it in the same write, and a stream dropped before them costs both
/// sides a reset. Waits at most [`TRAILERS_WAIT`] for them.
async fn read_to_the_end(stream: &mut tonic::Streaming<ExecutionInfo>) {
    let _ = tokio::time::timeout(TRAILERS_WAIT, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
}

/// How long a finished wait waits for its stream's trailers.
const TRAILERS_WAIT: Duration = Duration::from_millis(50);

/// Why a watch gave no first state. RESOURCE_EXHAUSTED on a watch means the
/// scheduler's watch caps are reached, not its queue.
fn watch_refused(status: &tonic::Status) -> ApiError {
    if status.code() != Code::ResourceExhausted {
        return ApiError::from_status(status);
    }
    let message = match status.message() {
        "" => "the scheduler has too many open watches; retry later",
        message => message,
    };
    ApiError::too_many_watches(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 10ms "), Ok(Duration::from_millis(10)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("500"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(
            parse_duration("5 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(parse_duration("-1s"), Err(DurationError::NoNumber));
        assert_eq!(parse_duration("ms"), Err(DurationError::NoNumber));
        assert_eq!(
            parse_duration("1.2.3s"),
            Err(DurationError::BadNumber("1.2.3".into()))
        );
        assert_eq!(
            parse_duration(".5s"),
            Err(DurationError::BadNumber(".5".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLong)
        );
    }

    #[test]
    fn refused_watches() {
        let error = watch_refused(&tonic::Status::resource_exhausted("too many watches (64)"));
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.code, "too_many_watches");
        assert_eq!(error.message, "too many watches (64)");
        let error = watch_refused(&tonic::Status::resource_exhausted(""));
        assert!(error.message.contains("too many open watches"));
        let error = watch_refused(&tonic::Status::not_found("no execution"));
        assert_eq!(error.code, "not_found");
    }

    #[test]
    fn waits_are_capped() {
        let max = Duration::from_secs(60);
        assert_eq!(wait_param(None, max), Ok(None));
        assert_eq!(
            wait_param(Some("2s"), max),
            Ok(Some(Duration::from_secs(2)))
        );
        assert_eq!(wait_param(Some("10m"), max), Ok(Some(max)));
        assert_eq!(
            wait_param(Some("99999999999999999999999h"), max),
            Ok(Some(max))
        );
        let error = wait_param(Some("soon"), max).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "invalid_parameter");
        assert!(error.message.contains("`wait`"), "{}", error.message);
        assert!(error.message.contains("soon"), "{}", error.message);
    }
}

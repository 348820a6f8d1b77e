//! Execution routes: trigger (`POST /invoke/{function_id}`, the seed's), read
//! (`GET /jobs/{execution_id}`, the seed's), list (`GET /jobs`) and cancel
//! (`POST /jobs/{execution_id}/cancel`).
//!
//! The invoke body is the payload, passed to the function byte for byte once
//! it is known to be JSON (so large numbers keep their precision); an empty
//! body is the payload `null`. `?timeout_ms=` and `?max_attempts=` override the
//! function's settings for this execution. An `Idempotency-Key` header makes a
//! retried invoke safe: the scheduler answers a repeat with the execution the
//! key first started, and refuses (409 `already_exists`) a key reused for
//! another function or payload.
//!
//! `?wait=` (see [`super::wait`]): on invoke, the trigger and the wait are one
//! `TriggerAndWatchExecution` call; the answer is the job view, 200 once the
//! execution has finished, 202 (with `Location: /jobs/{id}`) if the wait ran
//! out or the stream broke off first — once accepted, never an error, so the
//! client does not trigger it twice. (The scheduler names the execution in
//! the stream's first message; its watch caps never refuse that message.) On `GET /jobs/{id}` the answer is
//! 200 with the state at the end of the wait, finished or not. A watch the
//! scheduler refuses (RESOURCE_EXHAUSTED beyond its caps) is 429 on
//! `GET /jobs/{id}`, but on invoke it is the 202 above: the execution was
//! triggered, and a 429 would tell the client to trigger it again.
//!
//! `GET /jobs` pages may be short, even empty, and still carry a cursor (the
//! scheduler ends a page early when it grows too large or its scan reaches
//! its bound): `next_after` is `null` only when there is no more.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use taskforge_proto::scheduler::{
    CancelExecutionRequest, GetExecutionStatusRequest, ListExecutionsRequest,
    TriggerExecutionRequest,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{IdPath, JsonBody, Params, idempotency_key, page_limit, parse_int_param};
use super::view::{JobView, NOT_FOUND, STATUSES, cursor};
use super::wait::{self, Waited, wait_param};

#[derive(Debug, Deserialize)]
pub(crate) struct InvokeParams {
    wait: Option<String>,
    timeout_ms: Option<String>,
    max_attempts: Option<String>,
}

/// `POST /invoke/{function_id}` with the JSON payload as body.
pub(crate) async fn invoke(
    State(state): State<AppState>,
    IdPath(function_id): IdPath,
    Params(params): Params<InvokeParams>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let wait = wait_param(params.wait.as_deref(), state.config().max_wait)?;
    let timeout_ms = parse_int_param("timeout_ms", params.timeout_ms.as_deref())?;
    let max_attempts = parse_int_param("max_attempts", params.max_attempts.as_deref())?;
    let idempotency_key = idempotency_key(&headers)?;
    let request = TriggerExecutionRequest {
        function_id,
        payload: body.unwrap_or_else(|| Bytes::from_static(b"null")),
        timeout_ms: timeout_ms.unwrap_or(0),
        max_attempts: max_attempts.unwrap_or(0),
        schedule_to_start_timeout_ms: 0,
        idempotency_key,
    };
    let Some(wait) = wait else {
        let mut client = state.client();
        let accepted = state
            .call(client.trigger_execution(state.request(request)))
            .await?;
        let status = if accepted.status.is_empty() {
            "ACCEPTED".to_string()
        } else {
            accepted.status
        };
        let execution_id = accepted.execution_id;
        return Ok(Json(json!({ "execution_id": execution_id, "status": status })).into_response());
    };
    match wait::trigger_and_wait(&state, request, wait).await? {
        Waited::Terminal { info, .. } => {
            state.metrics().observe_execution(&info);
            Ok(Json(JobView::from_info(&info)).into_response())
        }
        Waited::Current(info) => Ok(still_running(&info.execution_id, JobView::from_info(&info))),
    }
}

/// 202 with the job view and where to look for the result.
fn still_running(execution_id: &str, view: JobView) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::try_from(format!("/jobs/{execution_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobParams {
    wait: Option<String>,
}

/// `GET /jobs/{execution_id}` → the job view.
pub(crate) async fn get(
    State(state): State<AppState>,
    IdPath(execution_id): IdPath,
    Params(params): Params<JobParams>,
) -> Result<Json<JobView>, ApiError> {
    if let Some(wait) = wait_param(params.wait.as_deref(), state.config().max_wait)? {
        let info = match wait::until_terminal(&state, &execution_id, wait).await? {
            Waited::Terminal {
                info,
                seen_finishing,
            } => {
                if seen_finishing {
                    state.metrics().observe_execution(&info);
                }
                info
            }
            Waited::Current(info) => info,
        };
        return Ok(Json(JobView::from_info(&info)));
    }
    let mut client = state.client();
    let request = GetExecutionStatusRequest {
        execution_id: execution_id.clone(),
    };
    let response = state
        .call(client.get_execution_status(state.request(request)))
        .await?;
    if response.status == NOT_FOUND {
        return Err(ApiError::not_found(format!(
            "no execution with id {execution_id:?}"
        )));
    }
    Ok(Json(JobView::from_status(&execution_id, &response)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    function_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListView {
    executions: Vec<JobView>,
    /// Pass as `?after=` for the next page; `null` = no more.
    next_after: Option<String>,
}

/// `GET /jobs?status=&function_id=&limit=&after=` → a page of job views.
pub(crate) async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Json<ListView>, ApiError> {
    let request = list_request(params)?;
    let mut client = state.client();
    let response = state
        .call(client.list_executions(state.request(request)))
        .await?;
    Ok(Json(ListView {
        executions: response.executions.iter().map(JobView::from_info).collect(),
        next_after: cursor(response.next_after_execution_id),
    }))
}

/// Checks the listing's parameters. Empty values mean "any"; `status` is
/// case-insensitive.
fn list_request(params: ListParams) -> Result<ListExecutionsRequest, ApiError> {
    let status = match params.status.filter(|s| !s.is_empty()) {
        None => String::new(),
        Some(raw) => {
            let upper = raw.to_ascii_uppercase();
            if !STATUSES.contains(&upper.as_str()) {
                return Err(ApiError::invalid_parameter(format!(
                    "invalid `status` {raw:?}: expected one of {}",
                    STATUSES.join(", ")
                )));
            }
            upper
        }
    };
    Ok(ListExecutionsRequest {
        status,
        function_id: params.function_id.unwrap_or_default(),
        limit: page_limit(params.limit.as_deref())?,
        after_execution_id: params.after.unwrap_or_default(),
    })
}

/// `POST /jobs/{execution_id}/cancel` → `{"execution_id", "status"}` (the status
/// after the request). A finished execution is 409.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    IdPath(execution_id): IdPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut client = state.client();
    let request = CancelExecutionRequest {
        execution_id: execution_id.clone(),
    };
    let response = state
        .call(client.cancel_execution(state.request(request)))
        .await?;
    Ok(Json(
        json!({ "execution_id": execution_id, "status": response.status }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(status: Option<&str>, limit: Option<&str>) -> ListParams {
        ListParams {
            status: status.map(str::to_string),
            function_id: None,
            limit: limit.map(str::to_string),
            after: None,
        }
    }

    #[test]
    fn list_parameters_are_checked() {
        let request = list_request(params(Some("completed"), Some("10"))).unwrap();
        assert_eq!(request.status, "COMPLETED");
        assert_eq!(request.limit, 10);
        let request = list_request(params(Some(""), None)).unwrap();
        assert_eq!(request.status, "");
        assert_eq!(request.limit, 0);

        let error = list_request(params(Some("DONE"), None)).unwrap_err();
        assert!(error.message.contains("`status`"), "{}", error.message);
        for limit in ["0", "1001", "-1", "x"] {
            let error = list_request(params(None, Some(limit))).unwrap_err();
            assert!(error.message.contains("`limit`"), "{}", error.message);
        }
    }
}

//! Execution routes: trigger (`POST /invoke/{function_id}`, the seed's), read
//! (`GET /jobs/{execution_id}`, the seed's), list (`GET /jobs`) and cancel
//! (`POST /jobs/{execution_id}/cancel`).
//!
//! The invoke body is the payload, passed to the function byte for byte once
//! it is known to be JSON (so large numbers keep their precision); an empty
//! body is the payload `null`. `?timeout_ms=` and `?max_attempts=` override the
//! function's settings for this execution.
//!
//! `?wait=` (see [`super::wait`]): on invoke, the answer is the job view, 200
//! once the execution has finished, 202 (with `Location: /jobs/{id}`) if the
//! wait ran out first; if the execution was accepted but could not be
//! watched, the answer is still 202 with `status: "ACCEPTED"`, never an error,
//! so the client does not trigger it twice. On `GET /jobs/{id}` the answer is
//! 200 with the state at the end of the wait, finished or not.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
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
use super::extract::{IdPath, JsonBody, Params, parse_int_param};
use super::view::{JobView, NOT_FOUND, STATUSES};
use super::wait::{self, Waited, wait_param};

/// Most executions one `GET /jobs` page may ask for.
pub(crate) const MAX_LIST_LIMIT: u32 = 1000;

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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let wait = wait_param(params.wait.as_deref(), state.config().max_wait)?;
    let timeout_ms = parse_int_param("timeout_ms", params.timeout_ms.as_deref())?;
    let max_attempts = parse_int_param("max_attempts", params.max_attempts.as_deref())?;
    let request = TriggerExecutionRequest {
        function_id,
        payload: body.unwrap_or_else(|| Bytes::from_static(b"null")),
        timeout_ms: timeout_ms.unwrap_or(0),
        max_attempts: max_attempts.unwrap_or(0),
        schedule_to_start_timeout_ms: 0,
        idempotency_key: String::new(),
    };
    let mut client = state.client();
    let accepted = state
        .call(client.trigger_execution(state.request(request)))
        .await?;
    let execution_id = accepted.execution_id;

    let Some(wait) = wait else {
        let status = if accepted.status.is_empty() {
            "ACCEPTED".to_string()
        } else {
            accepted.status
        };
        return Ok(Json(json!({ "execution_id": execution_id, "status": status })).into_response());
    };
    match wait::until_terminal(&state, &execution_id, wait).await {
        Ok(Waited::Terminal { info, .. }) => {
            state.metrics().observe_execution(&info);
            Ok(Json(JobView::from_info(&info)).into_response())
        }
        Ok(Waited::Current(info)) => Ok(still_running(&execution_id, JobView::from_info(&info))),
        Err(error) => {
            tracing::debug!(%error, execution_id, "accepted execution could not be watched");
            Ok(still_running(
                &execution_id,
                JobView::accepted(&execution_id),
            ))
        }
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
    let next = response.next_after_execution_id;
    Ok(Json(ListView {
        executions: response.executions.iter().map(JobView::from_info).collect(),
        next_after: (!next.is_empty()).then_some(next),
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
    let limit = parse_int_param::<u32>("limit", params.limit.as_deref())?;
    if let Some(limit) = limit.filter(|limit| !(1..=MAX_LIST_LIMIT).contains(limit)) {
        return Err(ApiError::invalid_parameter(format!(
            "query parameter `limit` must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    Ok(ListExecutionsRequest {
        status,
        function_id: params.function_id.unwrap_or_default(),
        limit: limit.unwrap_or(0),
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

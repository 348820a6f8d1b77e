//! Function routes: register (`POST /functions`, the seed's), list
//! (`GET /functions`), inspect (`GET /functions/{function_id}`) and delete
//! (`DELETE /functions/{function_id}`).
//!
//! The gateway checks the shape of a registration (fields present, of the right
//! type); what the values mean (a supported language, a known built-in) is the
//! scheduler's call, and its refusal is passed on as 400 with its message.
//!
//! The listing pages like `GET /jobs`: `?limit=&after=` in, `next_after` out.
//! The scheduler also ends a page early when the next function's code would
//! make its answer too large, so a page may be shorter than `limit` and still
//! have a cursor; `next_after` is `null` only when there is no more.
//!
//! Ids are not checked here, as on the other function routes: an id the
//! scheduler does not know is its 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskforge_proto::scheduler::{
    DeleteFunctionRequest, GetFunctionRequest, ListFunctionsRequest, RegisterFunctionRequest,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    IdPath, JsonBody, Params, function_code, json_object, optional_int, page_limit, required_string,
};
use super::view::{FunctionView, cursor};

/// `POST /functions` `{name, language, code | code_base64, timeout_ms?,
/// max_attempts?, max_memory_bytes?}` → `{"function_id": ...}`.
pub(crate) async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let fields = json_object(body.as_deref())?;
    let request = RegisterFunctionRequest {
        name: required_string(&fields, "name")?,
        language: required_string(&fields, "language")?,
        code: Bytes::from(function_code(&fields)?),
        timeout_ms: optional_int(&fields, "timeout_ms")?.unwrap_or(0),
        max_attempts: optional_int(&fields, "max_attempts")?.unwrap_or(0),
        max_memory_bytes: optional_int(&fields, "max_memory_bytes")?.unwrap_or(0),
    };
    let mut client = state.client();
    let response = state
        .call(client.register_function(state.request(request)))
        .await?;
    Ok(Json(json!({ "function_id": response.function_id })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListView {
    functions: Vec<FunctionView>,
    /// Pass as `?after=` for the next page; `null` = no more.
    next_after: Option<String>,
}

/// `GET /functions?limit=&after=` → `{"functions": [...], "next_after": ...}`,
/// in id order.
pub(crate) async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Json<ListView>, ApiError> {
    let request = ListFunctionsRequest {
        limit: page_limit(params.limit.as_deref())?,
        after_function_id: params.after.unwrap_or_default(),
    };
    let mut client = state.client();
    let response = state
        .call(client.list_functions(state.request(request)))
        .await?;
    Ok(Json(ListView {
        functions: response.functions.iter().map(FunctionView::from).collect(),
        next_after: cursor(response.next_after_function_id),
    }))
}

/// `GET /functions/{function_id}` → the function.
pub(crate) async fn get(
    State(state): State<AppState>,
    IdPath(function_id): IdPath,
) -> Result<Json<FunctionView>, ApiError> {
    let mut client = state.client();
    let function = state
        .call(client.get_function(state.request(GetFunctionRequest { function_id })))
        .await?;
    Ok(Json(FunctionView::from(&function)))
}

/// `DELETE /functions/{function_id}` → 204 No Content. 409 while executions of
/// the function are still pending or running (the scheduler's message says
/// so); 404 for an unknown id.
pub(crate) async fn delete(
    State(state): State<AppState>,
    IdPath(function_id): IdPath,
) -> Result<StatusCode, ApiError> {
    let mut client = state.client();
    state
        .call(client.delete_function(state.request(DeleteFunctionRequest { function_id })))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

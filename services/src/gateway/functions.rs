//! Function routes: register (`POST /functions`, the seed's), list
//! (`GET /functions`) and inspect (`GET /functions/{function_id}`).
//!
//! The gateway checks the shape of a registration (fields present, of the right
//! type); what the values mean (a supported language, a known built-in) is the
//! scheduler's call, and its refusal is passed on as 400 with its message.

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use serde_json::{Value, json};
use taskforge_proto::scheduler::{
    GetFunctionRequest, ListFunctionsRequest, RegisterFunctionRequest,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{IdPath, JsonBody, json_object, optional_int, required_string};
use super::view::FunctionView;

/// `POST /functions` `{name, language, code, timeout_ms?, max_attempts?}` →
/// `{"function_id": ...}`.
pub(crate) async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let fields = json_object(body.as_deref())?;
    let request = RegisterFunctionRequest {
        name: required_string(&fields, "name")?,
        language: required_string(&fields, "language")?,
        code: Bytes::from(required_string(&fields, "code")?),
        timeout_ms: optional_int(&fields, "timeout_ms")?.unwrap_or(0),
        max_attempts: optional_int(&fields, "max_attempts")?.unwrap_or(0),
    };
    let mut client = state.client();
    let response = state
        .call(client.register_function(state.request(request)))
        .await?;
    Ok(Json(json!({ "function_id": response.function_id })))
}

/// `GET /functions` → `{"functions": [...]}`.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut client = state.client();
    let response = state
        .call(client.list_functions(state.request(ListFunctionsRequest::default())))
        .await?;
    let functions: Vec<FunctionView> = response.functions.iter().map(FunctionView::from).collect();
    Ok(Json(json!({ "functions": functions })))
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

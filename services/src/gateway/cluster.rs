//! Cluster routes: liveness (`GET /health`, the seed's), readiness
//! (`GET /ready`), workers (`GET /workers`), counters (`GET /stats`) and
//! Prometheus metrics (`GET /metrics`).
//!
//! `/health` says the gateway process answers and asks the scheduler nothing;
//! `/ready` says the scheduler answers too (503 when it does not), so a load
//! balancer sends traffic only to gateways that can use it.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use taskforge_proto::scheduler::{GetClusterStatsRequest, ListWorkersRequest};

use super::AppState;
use super::error::ApiError;
use super::metrics::CONTENT_TYPE;
use super::view::{StatsView, WorkerView};

/// `GET /health` → `{"status":"ok"}`.
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready` → 200 `{"status":"ready","stats":{...}}`, or 503 `not_ready`.
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut client = state.client();
    match state
        .call(client.get_cluster_stats(state.request(GetClusterStatsRequest {})))
        .await
    {
        Ok(stats) => Ok(Json(
            json!({ "status": "ready", "stats": StatsView::from(&stats) }),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {}", error.message),
        )),
    }
}

/// `GET /workers` → `{"workers": [...]}`.
pub(crate) async fn workers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut client = state.client();
    let response = state
        .call(client.list_workers(state.request(ListWorkersRequest {})))
        .await?;
    let workers: Vec<WorkerView> = response.workers.iter().map(WorkerView::from).collect();
    Ok(Json(json!({ "workers": workers })))
}

/// `GET /stats` → the cluster's counters.
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<StatsView>, ApiError> {
    let mut client = state.client();
    let stats = state
        .call(client.get_cluster_stats(state.request(GetClusterStatsRequest {})))
        .await?;
    Ok(Json(StatsView::from(&stats)))
}

/// `GET /metrics` → the OpenMetrics exposition. Always 200: a scheduler that
/// does not answer shows as `taskforge_scheduler_up 0`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut stats_client = state.client();
    let mut workers_client = state.client();
    let (stats, workers) = tokio::join!(
        state.call(stats_client.get_cluster_stats(state.request(GetClusterStatsRequest {}))),
        state.call(workers_client.list_workers(state.request(ListWorkersRequest {}))),
    );
    let text = state
        .metrics()
        .render(
            stats.as_ref().ok(),
            workers.as_ref().ok().map(|w| w.workers.as_slice()),
        )
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the metrics could not be encoded",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

//! The HTTP gateway: TaskForge's public HTTP/JSON API, mapped onto the
//! scheduler's gRPC API.
//!
//! [`router`] builds the axum [`Router`] (routes, JSON errors, auth, body
//! limit, metrics) around a [`SchedulerServiceClient`]; [`serve`] runs it on a
//! listener the caller hands in — a tokio `TcpListener` in the binary, a
//! simulated one in the simulation. The gateway never binds or dials on its
//! own: its channel to the scheduler comes from the caller too.
//!
//! Routes (the seed's first, then ours):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/health` | `{"status":"ok"}` (no auth) |
//! | GET | `/ready` | 200 + cluster stats if the scheduler answers, 503 otherwise (no auth) |
//! | POST | `/functions` | register `{name, language, code, timeout_ms?, max_attempts?}` → `{function_id}` |
//! | GET | `/functions` | `?limit=&after=` → `{functions: [...], next_after}` |
//! | GET | `/functions/{function_id}` | one function |
//! | DELETE | `/functions/{function_id}` | 204; 409 while executions of it are live |
//! | POST | `/invoke/{function_id}` | body = JSON payload → `{execution_id, status:"ACCEPTED"}`; `?wait=` → job view (202 if still running); `Idempotency-Key` header |
//! | GET | `/jobs` | `?status=&function_id=&limit=&after=` → `{executions: [...], next_after}` |
//! | GET | `/jobs/{execution_id}` | job view; `?wait=` long-polls until terminal |
//! | POST | `/jobs/{execution_id}/cancel` | `{execution_id, status}` |
//! | GET | `/workers` | `{workers: [...]}` |
//! | GET | `/stats` | cluster stats |
//! | GET | `/metrics` | Prometheus / OpenMetrics text |
//!
//! Every error is `{"error":{"code":"...","message":"..."}}` with a fitting
//! status (the table is in `error.rs`).

mod auth;
mod cluster;
mod error;
mod extract;
mod functions;
pub mod https;
mod jobs;
mod metrics;
pub(crate) mod output;
pub(crate) mod view;
mod wait;

use crate::auth::SchedulerClient;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Router, middleware};

use self::error::ApiError;
use self::metrics::GatewayMetrics;

/// How the gateway behaves. `Default` gives the documented defaults.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes (413 beyond). Default 1 MiB.
    pub body_limit: usize,
    /// When set, every route except `/health` and `/ready` requires
    /// `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Cap on `?wait=`: longer waits are shortened to this. Default 60 s.
    pub max_wait: Duration,
    /// Deadline for each unary call to the scheduler (and for the first state
    /// of a watch); past it the request fails with 504. Default 10 s.
    pub rpc_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            body_limit: 1024 * 1024,
            api_token: None,
            max_wait: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for GatewayConfig {
    // The token stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("body_limit", &self.body_limit)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("max_wait", &self.max_wait)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish()
    }
}

/// What every handler shares: the scheduler client, the config, the metrics.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

#[derive(Debug)]
pub(crate) struct Shared {
    client: SchedulerClient,
    config: GatewayConfig,
    metrics: GatewayMetrics,
}

impl AppState {
    /// A handle on the scheduler client (cheap: the channel is shared).
    pub(crate) fn client(&self) -> SchedulerClient {
        self.0.client.clone()
    }

    pub(crate) fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    pub(crate) fn metrics(&self) -> &GatewayMetrics {
        &self.0.metrics
    }

    /// A unary request carrying the RPC deadline (`grpc-timeout`), so the
    /// scheduler can drop work nobody waits for any more.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.0.config.rpc_timeout);
        request
    }

    /// Runs one unary call to the scheduler, bounded by the RPC deadline on
    /// this side too, and maps its failure to an HTTP error.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.0.config.rpc_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "scheduler call failed");
                Err(ApiError::from_status(&status))
            }
            Err(_) => Err(ApiError::deadline_exceeded(
                "the scheduler did not answer in time",
            )),
        }
    }
}

/// Every route the gateway serves, as axum path templates. Metrics label
/// requests with these (see `metrics::route_label`).
pub(crate) mod paths {
    pub const HEALTH: &str = "/health";
    pub const READY: &str = "/ready";
    pub const METRICS: &str = "/metrics";
    pub const FUNCTIONS: &str = "/functions";
    pub const FUNCTION: &str = "/functions/{function_id}";
    pub const INVOKE: &str = "/invoke/{function_id}";
    pub const JOBS: &str = "/jobs";
    pub const JOB: &str = "/jobs/{execution_id}";
    pub const JOB_CANCEL: &str = "/jobs/{execution_id}/cancel";
    pub const WORKERS: &str = "/workers";
    pub const STATS: &str = "/stats";

    pub const ALL: &[&str] = &[
        HEALTH, READY, METRICS, FUNCTIONS, FUNCTION, INVOKE, JOBS, JOB, JOB_CANCEL, WORKERS, STATS,
    ];
}

/// The gateway's HTTP API over a channel to the scheduler.
///
/// Cheap to call; each call gets its own metrics registry.
pub fn router(client: SchedulerClient, config: GatewayConfig) -> Router {
    let body_limit = config.body_limit;
    let state = AppState(Arc::new(Shared {
        client,
        config,
        metrics: GatewayMetrics::new(),
    }));

    Router::new()
        .route(paths::HEALTH, get(cluster::health))
        .route(paths::READY, get(cluster::ready))
        .route(paths::METRICS, get(cluster::metrics))
        .route(
            paths::FUNCTIONS,
            post(functions::register).get(functions::list),
        )
        .route(
            paths::FUNCTION,
            get(functions::get).delete(functions::delete),
        )
        .route(paths::INVOKE, post(jobs::invoke))
        .route(paths::JOBS, get(jobs::list))
        .route(paths::JOB, get(jobs::get))
        .route(paths::JOB_CANCEL, post(jobs::cancel))
        .route(paths::WORKERS, get(cluster::workers))
        .route(paths::STATS, get(cluster::stats))
        // Must come after the routes: it replaces the fallback of each of them.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::route_not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track_request,
        ))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and lets the requests in progress finish (a `?wait=` request
/// finishes within its wait, at most `max_wait`).
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

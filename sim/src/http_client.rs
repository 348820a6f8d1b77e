//! A client that speaks HTTP to the gateway instead of gRPC to the scheduler.
//!
//! It does what the gRPC client does — register the functions, trigger its
//! requests on time, follow each execution to its end, confirm it, and ask
//! once more after every fault healed — through the gateway's public routes:
//! `POST /functions`, `POST /invoke/{function_id}`, and `GET /jobs/{id}`, with
//! `?wait=` (which the gateway builds on the scheduler's watch stream) to
//! follow and without it (a plain status query) to confirm. So the gateway
//! runs under the same faults as everything else, and its answers are held to
//! the same oracle.
//!
//! The gateway returns an output as JSON when it is JSON (and as text or
//! base64 otherwise); the client turns it back into bytes, and the oracle
//! compares JSON outputs by value.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use taskforge_core::ExecutionId;
use tokio::time::timeout;

use crate::client::{Plan, Protocol, Retry, drive, now};
use crate::cluster::{GATEWAY, RuntimeName};
use crate::net::{self, GATEWAY_PORT};
use crate::trace::{Event, Observation, Recorder, View};
use crate::workload::{Function, Request as Planned};

/// Longest wait for an answer, beyond what the request itself asks to wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `?wait=` request waits for the execution to end.
const WAIT: &str = "2s";
const WAIT_TIME: Duration = Duration::from_secs(2);

struct HttpClient {
    index: usize,
    recorder: Recorder,
    give_up_at: Duration,
}

impl HttpClient {
    fn record(&self, observation: Observation) {
        self.recorder.record(Event::Client {
            client: self.index,
            observation,
        });
    }
}

/// An answer from the gateway: its status and JSON body.
type Answer = (StatusCode, Value);

/// Sends one request on a fresh connection to the gateway.
async fn call(method: Method, path: &str, body: Option<Bytes>, wait: Duration) -> Option<Answer> {
    let exchange = async {
        let mut sender = net::http_connect(GATEWAY, GATEWAY_PORT).await.ok()?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, GATEWAY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.unwrap_or_default()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    timeout(CALL_TIMEOUT + wait, exchange).await.ok().flatten()
}

/// Runs the HTTP client host to the end of its plan.
pub async fn run(plan: Plan, recorder: Recorder) -> turmoil::Result {
    let client = Arc::new(HttpClient {
        index: plan.index,
        recorder,
        give_up_at: plan.give_up_at,
    });
    drive(client, plan).await
}

impl Protocol for HttpClient {
    fn register(
        &self,
        function: Function,
        runtime: RuntimeName,
    ) -> impl Future<Output = Result<String, String>> + Send {
        register(self, function, runtime)
    }

    fn follow(
        self: Arc<Self>,
        request: Planned,
        function_id: String,
    ) -> impl Future<Output = Option<ExecutionId>> + Send {
        follow(self, request, function_id)
    }

    fn query(&self, execution: ExecutionId) -> impl Future<Output = ()> + Send {
        query(self, execution)
    }
}

async fn register(
    client: &HttpClient,
    function: Function,
    runtime: RuntimeName,
) -> Result<String, String> {
    let body = json!({
        "name": format!("sim-http-{runtime}-{}", function.code()),
        "language": runtime,
        "code": function.code(),
    });
    let mut retry = Retry::new();
    loop {
        let body = Bytes::from(body.to_string());
        let answer = call(Method::POST, "/functions", Some(body), Duration::ZERO).await;
        if let Some((StatusCode::OK, value)) = answer {
            if let Some(function_id) = value["function_id"].as_str() {
                client.record(Observation::Registered {
                    function,
                    runtime,
                    function_id: function_id.to_string(),
                });
                return Ok(function_id.to_string());
            }
        }
        if now() >= client.give_up_at {
            return Err(format!(
                "client-{} could not register {function:?} in {runtime} through the gateway",
                client.index
            ));
        }
        retry.wait().await;
    }
}

async fn follow(
    client: Arc<HttpClient>,
    request: Planned,
    function_id: String,
) -> Option<ExecutionId> {
    let execution = trigger(&client, &request, &function_id).await?;
    if wait(&client, execution).await {
        query(&client, execution).await;
    }
    Some(execution)
}

async fn trigger(client: &HttpClient, request: &Planned, function_id: &str) -> Option<ExecutionId> {
    // The gateway takes no schedule-to-start limit: scenarios with a gateway
    // leave every request's to the platform's default.
    debug_assert!(request.schedule_to_start.is_none());
    let path = format!(
        "/invoke/{function_id}?timeout_ms={}&max_attempts={}",
        request.timeout.as_millis(),
        request.max_attempts
    );
    let mut retry = Retry::new();
    loop {
        let answer = call(
            Method::POST,
            &path,
            Some(request.payload.clone()),
            Duration::ZERO,
        )
        .await;
        let reason = match answer {
            Some((StatusCode::OK, value)) => {
                let id = value["execution_id"].as_str().and_then(ExecutionId::parse);
                match id {
                    Some(execution) if value["status"] == "ACCEPTED" => {
                        client.record(Observation::Accepted {
                            request: request.id,
                            execution,
                        });
                        return Some(execution);
                    }
                    _ => format!("unexpected answer {value}"),
                }
            }
            // The gateway's 404 for an unknown function, in the words the
            // oracle looks for.
            Some((StatusCode::NOT_FOUND, value)) => format!("NotFound: {value}"),
            Some((status, value)) => format!("HTTP {status}: {value}"),
            None => "no answer from the gateway".to_string(),
        };
        client.record(Observation::TriggerFailed {
            request: request.id,
            reason,
        });
        if now() >= client.give_up_at {
            return None;
        }
        retry.wait().await;
    }
}

/// Long-polls `GET /jobs/{id}?wait=` until the execution is terminal; false
/// if the client gave up first.
async fn wait(client: &HttpClient, execution: ExecutionId) -> bool {
    let path = format!("/jobs/{execution}?wait={WAIT}");
    let mut retry = Retry::new();
    loop {
        if now() >= client.give_up_at {
            client.record(Observation::GaveUp { execution });
            return false;
        }
        match call(Method::GET, &path, None, WAIT_TIME).await {
            Some((StatusCode::OK, value)) => {
                let view = view_of(&value);
                let terminal = view.is_terminal();
                client.record(Observation::Watched { execution, view });
                if terminal {
                    return true;
                }
                retry = Retry::new();
                continue;
            }
            Some((StatusCode::NOT_FOUND, _)) => client.record(Observation::Queried {
                execution,
                view: None,
            }),
            _ => {}
        }
        retry.wait().await;
    }
}

/// `GET /jobs/{id}` until the gateway answers (or the client gives up).
async fn query(client: &HttpClient, execution: ExecutionId) {
    let path = format!("/jobs/{execution}");
    let mut retry = Retry::new();
    loop {
        match call(Method::GET, &path, None, Duration::ZERO).await {
            Some((StatusCode::OK, value)) => {
                let view = Some(view_of(&value));
                client.record(Observation::Queried { execution, view });
                return;
            }
            Some((StatusCode::NOT_FOUND, _)) => {
                client.record(Observation::Queried {
                    execution,
                    view: None,
                });
                return;
            }
            _ => {}
        }
        if now() >= client.give_up_at {
            return;
        }
        retry.wait().await;
    }
}

/// The view in a gateway job answer, with the output back as bytes.
fn view_of(job: &Value) -> View {
    let output = match (&job["output"], job["output_encoding"].as_str()) {
        (Value::Null, _) => Bytes::new(),
        (Value::String(text), Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .unwrap_or_default(),
        (Value::String(text), _) => Bytes::from(text.clone()),
        (value, _) => Bytes::from(value.to_string()),
    };
    View {
        status: job["status"].as_str().unwrap_or_default().to_string(),
        output,
        error: job["error"].as_str().unwrap_or_default().to_string(),
    }
}

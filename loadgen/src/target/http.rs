//! Driving executions through the HTTP gateway.
//!
//! One execution is one `POST /invoke/{function_id}?wait=…`, which the gateway
//! answers once the execution is terminal — it waits on the scheduler's
//! `TriggerAndWatchExecution` stream, it does not poll. If that wait runs out
//! (202), `GET /jobs/{execution_id}?wait=…` is asked until `--timeout`. The
//! accept is not seen on its own: the accept latency is recorded only for
//! executions a 202 showed accepted and unfinished.
//!
//! HTTP/1.1 carries one request at a time per connection, so the client keeps a
//! pool of keep-alive connections: a request takes an idle one (or opens one)
//! and gives it back when its answer has been read. The pool's size bounds the
//! requests in flight; in an open loop, time spent waiting for a connection
//! counts in the latency, as it should.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use taskforge_services::auth::Token;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use super::{ClusterSize, Failure, FailureKind, Observation, Stamps, TargetError, is_terminal};
use crate::workload::{Definition, Function};

/// Longest single `?wait=`; the gateway caps waits at its own limit (60 s by
/// default) anyway.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A client of one gateway.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    /// `host:port`, dialed and sent as the Host header.
    authority: String,
    /// `Bearer <token>`, sent when the gateway asks for a token.
    authorization: Option<String>,
    /// HTTPS: whom to trust; `host` is the name the certificate must carry.
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    host: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// One permit per connection the pool may hold.
    permits: Semaphore,
}

/// An answer: status and body.
type Reply = (StatusCode, Bytes);

impl HttpClient {
    /// A client of the gateway at `url` (`http://host:port`) using at most
    /// `connections` connections at once.
    pub fn new(
        url: &str,
        connections: usize,
        api_token: Option<&Token>,
        ca: Option<&std::path::Path>,
    ) -> Result<HttpClient, TargetError> {
        let invalid = |reason: &str| TargetError::Address {
            address: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match (uri.scheme_str(), ca) {
            (Some("http"), None) => None,
            (Some("http"), Some(_)) => return Err(invalid("--ca is for https:// gateways")),
            (Some("https"), Some(ca)) => {
                Some(client_config(ca).map_err(|reason| invalid(&reason))?)
            }
            (Some("https"), None) => return Err(invalid("https:// needs --ca")),
            _ => return Err(invalid("use http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(HttpClient {
            pool: Arc::new(Pool {
                authority: format!("{host}:{port}"),
                authorization: api_token.map(|token| format!("Bearer {}", token.expose())),
                tls,
                host: host.to_string(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(connections.max(1)),
            }),
        })
    }

    pub(super) async fn cluster_size(&self) -> Result<ClusterSize, TargetError> {
        #[derive(Deserialize)]
        struct Stats {
            workers: u32,
            capacity: u32,
        }
        let (status, body) = self
            .pool
            .send(Method::GET, "/stats".to_string(), None)
            .await
            .map_err(TargetError::Http)?;
        let stats: Stats = parse(status, &body).map_err(TargetError::Http)?;
        Ok(ClusterSize {
            workers: stats.workers,
            capacity: stats.capacity,
        })
    }

    pub(super) async fn register(&self, definition: Definition) -> Result<String, TargetError> {
        #[derive(Deserialize)]
        struct Registered {
            function_id: String,
        }
        // Binary code (a .wasm module) goes base64-encoded; text as it is.
        let mut body =
            serde_json::json!({"name": definition.name, "language": definition.language});
        match std::str::from_utf8(&definition.code) {
            Ok(text) if !definition.code.starts_with(b"\0asm") => body["code"] = text.into(),
            _ => body["code_base64"] = BASE64.encode(&definition.code).into(),
        }
        let body = Bytes::from(body.to_string());
        let (status, body) = self
            .pool
            .send(Method::POST, "/functions".to_string(), Some(body))
            .await
            .map_err(TargetError::Http)?;
        let registered: Registered = parse(status, &body).map_err(TargetError::Http)?;
        Ok(registered.function_id)
    }

    pub(super) async fn execute(
        &self,
        _lane: usize,
        function: &Function,
        deadline: Instant,
    ) -> Observation {
        let mut accepted = None;
        let followed = timeout_at(deadline, self.follow(function, deadline, &mut accepted)).await;
        followed.unwrap_or_else(|_| Observation::failed(accepted, timed_out()))
    }

    /// Invokes and waits in one request; if that wait runs out first (202),
    /// waits on `GET /jobs/{id}` until the outer deadline. `accepted` is set
    /// when a 202 shows the execution accepted and not yet finished; an
    /// execution answered finished in the invoke has no separate accept time.
    async fn follow(
        &self,
        function: &Function,
        deadline: Instant,
        accepted: &mut Option<Instant>,
    ) -> Observation {
        let invoke = self.pool.send(
            Method::POST,
            format!(
                "/invoke/{}?wait={}",
                function.function_id,
                wait_until(deadline)
            ),
            Some(function.payload.clone()),
        );
        let mut job = match invoke
            .await
            .and_then(|(status, body)| parse::<Job>(status, &body))
        {
            Ok(job) => job,
            Err(message) => {
                return Observation::failed(None, Failure::new(FailureKind::Trigger, message));
            }
        };
        while !is_terminal(&job.status) {
            // Not finished within this wait: wait again (the outer deadline
            // ends it).
            accepted.get_or_insert_with(Instant::now);
            let path = format!("/jobs/{}?wait={}", job.execution_id, wait_until(deadline));
            job = match self
                .pool
                .send(Method::GET, path, None)
                .await
                .and_then(|(status, body)| parse::<Job>(status, &body))
            {
                Ok(job) => job,
                Err(message) => {
                    let failure = Failure::new(FailureKind::Watch, message);
                    return Observation::failed(*accepted, failure);
                }
            };
        }
        let stamps = Stamps {
            created_at_us: job.created_at_us.unwrap_or(0),
            started_at_us: job.started_at_us.unwrap_or(0),
            finished_at_us: job.finished_at_us.unwrap_or(0),
        };
        let error = job.error.unwrap_or_default();
        let mut observation = Observation::finished(
            Instant::now(),
            &function.handler,
            job.status,
            &error,
            stamps,
        );
        observation.accepted = *accepted;
        observation
    }
}

/// A `?wait=` value: what is left until `deadline`, at most [`MAX_WAIT`].
fn wait_until(deadline: Instant) -> String {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(MAX_WAIT);
    format!("{}ms", wait.as_millis().max(1))
}

/// The gateway's job view, the fields the load generator reads.
#[derive(Deserialize)]
struct Job {
    execution_id: String,
    status: String,
    error: Option<String>,
    created_at_us: Option<u64>,
    started_at_us: Option<u64>,
    finished_at_us: Option<u64>,
}

impl Pool {
    /// Sends one request on a pooled connection and reads the whole answer.
    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Result<Reply, String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the connection pool is closed".to_string())?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut sender = match idle {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
        }
        Ok((status, body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("could not connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return handshake(stream).await;
        };
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{}: {e}", self.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {}: {e}", self.authority))?;
        handshake(stream).await
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Trusts the CA in `ca` (PEM) and nothing else.
fn client_config(ca: &std::path::Path) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A 2xx JSON answer as `T`; anything else as a message naming the status.
fn parse<T: serde::de::DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, String> {
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        return Err(format!("HTTP {}: {text}", status.as_u16()));
    }
    serde_json::from_slice(body).map_err(|e| format!("unreadable answer ({e})"))
}

fn timed_out() -> Failure {
    Failure::new(FailureKind::Timeout, "no terminal state within --timeout")
}

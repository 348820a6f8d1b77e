//! Bearer tokens on the gRPC ports: the scheduler's client API takes the API
//! token, its worker service the worker token. Both are optional (a default
//! loopback cluster has none, as the seed's had none); set, every request
//! must carry `authorization: Bearer <token>`, compared in constant time.
//!
//! [`Gate`] is the server side, [`Credentials`] the client side (workers, the
//! gateway, the client commands and the load generator send them).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::net::LeaderChannel;
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

use taskforge_proto::scheduler::scheduler_service_client::SchedulerServiceClient;

/// A secret that requests present. Never shown: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// A token as given on the command line: printable ASCII without spaces,
    /// so it fits a header unchanged.
    pub fn new(text: &str) -> Result<Token, String> {
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "the token may hold only printable ASCII without spaces (found {bad:?})"
            ));
        }
        Ok(Token(text.into()))
    }

    /// The token in `path`: its first line, surrounding whitespace ignored.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the token file {}: {error}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim();
        Token::new(line).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Whether `presented` is this token, in time independent of where they
    /// differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The secret itself, for the one place that must hold it as text (the
    /// gateway's own check).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn header(&self) -> MetadataValue<Ascii> {
        format!("Bearer {}", self.0)
            .parse()
            .expect("a token is printable ASCII")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `--api-token` / `--api-token-file`: the token of the scheduler's client
/// API and of the gateway.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ApiTokenArgs {
    /// Require (servers) or present (clients) this API token:
    /// `authorization: Bearer <token>` on the scheduler's client API and the
    /// gateway (except /health and /ready).
    #[arg(long, env = "TASKFORGE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Read the API token from this file (its first line), keeping it out of
    /// the process list.
    #[arg(long, env = "TASKFORGE_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<std::path::PathBuf>,
}

impl ApiTokenArgs {
    pub fn token(&self) -> Result<Option<Token>, String> {
        given(
            self.api_token.as_deref(),
            self.api_token_file.as_deref(),
            "--api-token",
        )
    }
}

/// `--worker-token` / `--worker-token-file`: the token a worker presents to
/// open its stream.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WorkerTokenArgs {
    /// Require (scheduler) or present (worker) this worker token.
    #[arg(long, env = "TASKFORGE_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Read the worker token from this file (its first line).
    #[arg(
        long,
        env = "TASKFORGE_WORKER_TOKEN_FILE",
        conflicts_with = "worker_token"
    )]
    pub worker_token_file: Option<std::path::PathBuf>,
}

impl WorkerTokenArgs {
    pub fn token(&self) -> Result<Option<Token>, String> {
        given(
            self.worker_token.as_deref(),
            self.worker_token_file.as_deref(),
            "--worker-token",
        )
    }
}

fn given(text: Option<&str>, file: Option<&Path>, flag: &str) -> Result<Option<Token>, String> {
    match (text, file) {
        (Some(""), None) | (None, None) => Ok(None),
        (Some(text), _) => Token::new(text)
            .map(Some)
            .map_err(|error| format!("{flag}: {error}")),
        (None, Some(path)) => Token::from_file(path).map(Some),
    }
}

/// How a server could be protected, for [`check_exposure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    On,
    /// Off; the text says how to turn it on.
    Off(&'static str),
}

/// Refuses to serve `what` on a non-loopback `address` unprotected: without
/// TLS anyone on the path reads every payload and token, and without tokens
/// anyone who reaches the port may join as a worker or trigger functions.
/// `--insecure` accepts the risk (with a warning).
pub fn check_exposure(
    what: &str,
    address: std::net::SocketAddr,
    tls: Tls,
    missing_tokens: &[&str],
    insecure: bool,
) -> Result<(), String> {
    let mut needs = Vec::new();
    if let Tls::Off(how) = tls {
        needs.push(format!("TLS ({how})"));
    }
    needs.extend(missing_tokens.iter().map(|flag| flag.to_string()));
    if address.ip().is_loopback() || needs.is_empty() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(%address, "{what} listens beyond loopback without {}: --insecure", needs.join(" and "));
        return Ok(());
    }
    Err(format!(
        "refusing to serve {what} on {address} (not loopback) without {}; bind 127.0.0.1, \
         or add --insecure to accept the risk",
        needs.join(" and ")
    ))
}

/// Which token a [`Gate`] asks for, in its refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client API (register, trigger, watch, list...).
    Api,
    /// A worker's stream.
    Worker,
}

impl Role {
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Role::Api => ("API", "--api-token or TASKFORGE_API_TOKEN"),
            Role::Worker => ("worker", "--worker-token or TASKFORGE_WORKER_TOKEN"),
        }
    }
}

/// Refuses requests without the token (when there is one), and without a
/// verified client certificate (when it requires one).
#[derive(Clone, Debug)]
pub struct Gate {
    role: Role,
    token: Option<Token>,
    require_certificate: bool,
}

impl Gate {
    pub fn new(role: Role, token: Option<Token>) -> Gate {
        Gate {
            role,
            token,
            require_certificate: false,
        }
    }

    /// Also requires a client certificate (verified by the TLS handshake
    /// against the scheduler's `--client-ca`).
    pub fn requiring_certificate(mut self, required: bool) -> Gate {
        self.require_certificate = required;
        self
    }
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.require_certificate
            && request
                .peer_certs()
                .is_none_or(|certificates| certificates.is_empty())
        {
            let (name, _) = self.role.describe();
            return Err(Status::unauthenticated(format!(
                "this scheduler requires a {name} client certificate (--tls-client-cert and \
                 --tls-client-key, signed by its --client-ca)"
            )));
        }
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let (name, flag) = self.role.describe();
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .and_then(|value| value.strip_prefix(b"Bearer "));
        match presented {
            Some(presented) if token.matches(presented) => Ok(request),
            Some(_) => Err(Status::unauthenticated(format!("wrong {name} token"))),
            None => Err(Status::unauthenticated(format!(
                "this scheduler requires the {name} token: send `authorization: Bearer <token>` \
                 (the clients take {flag})"
            ))),
        }
    }
}

/// Adds the token (if any) to every request.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    pub fn new(token: Option<&Token>) -> Credentials {
        Credentials {
            header: token.map(Token::header),
        }
    }

    /// No token (a scheduler that asks for none).
    pub fn none() -> Credentials {
        Credentials::default()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A channel whose requests carry credentials.
pub type AuthChannel = InterceptedService<LeaderChannel, Credentials>;

/// A client of the scheduler's API.
pub type SchedulerClient = SchedulerServiceClient<AuthChannel>;

/// A client of the scheduler's API on `channel`, presenting `credentials`.
pub fn scheduler_client(
    channel: impl Into<LeaderChannel>,
    credentials: Credentials,
) -> SchedulerClient {
    SchedulerServiceClient::with_interceptor(channel.into(), credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn a_gate_without_a_token_lets_everyone_in() {
        let mut gate = Gate::new(Role::Api, None);
        assert!(gate.call(request(None)).is_ok());
        assert!(gate.call(request(Some("Bearer anything"))).is_ok());
    }

    #[test]
    fn a_gate_with_a_token_says_which_is_missing_or_wrong_but_never_the_token() {
        let token = Token::new("s3cret-token").unwrap();
        let mut gate = Gate::new(Role::Worker, Some(token.clone()));
        assert!(gate.call(request(Some("Bearer s3cret-token"))).is_ok());
        let missing = gate.call(request(None)).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(
            missing.message().contains("requires the worker token"),
            "{}",
            missing.message()
        );
        assert!(missing.message().contains("--worker-token"));
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret",
            "s3cret-token",
            "Basic s3cret-token",
        ] {
            let refused = gate.call(request(Some(wrong))).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{wrong}");
            assert!(
                !refused.message().contains("s3cret"),
                "{}",
                refused.message()
            );
        }
        // Credentials carry exactly what the gate expects.
        let mut credentials = Credentials::new(Some(&token));
        let sent = credentials.call(Request::new(())).unwrap();
        assert!(gate.call(sent).is_ok());
        assert!(
            gate.call(Credentials::none().call(Request::new(())).unwrap())
                .is_err()
        );
    }

    #[test]
    fn tokens_are_checked_and_never_printed() {
        assert!(Token::new("").is_err());
        assert!(
            Token::new("has space")
                .unwrap_err()
                .contains("printable ASCII")
        );
        assert!(Token::new("tab\there").is_err());
        let token = Token::new("visible").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let dir = std::env::temp_dir().join(format!("taskforge-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  from-a-file \n").unwrap();
        assert!(Token::from_file(&file).unwrap().matches(b"from-a-file"));
        std::fs::write(&file, "\n").unwrap();
        assert!(Token::from_file(&file).unwrap_err().contains("empty"));
        assert!(
            Token::from_file(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

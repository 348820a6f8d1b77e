//! TLS on the scheduler's gRPC port (rustls through tonic, with ring: no
//! OpenSSL, no system package), optionally requiring workers' client
//! certificates, and `taskforge certs`, which makes a development CA and the
//! certificates to turn it on.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// `--tls-cert`, `--tls-key`, `--client-ca`: the scheduler's side.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerTlsArgs {
    /// Serve gRPC over TLS with this certificate (PEM, its chain after it).
    #[arg(long, env = "TASKFORGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TASKFORGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require workers to present a certificate signed by this CA (PEM):
    /// mutual TLS for worker streams (API clients may present one too, and
    /// it must then be valid).
    #[arg(long, env = "TASKFORGE_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The TLS configuration, or `None` when no certificate was given.
    pub fn config(&self) -> Result<Option<ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            // Optional at the handshake, so API clients need none; the worker
            // service then refuses a stream that came without one.
            config = config
                .client_ca_root(Certificate::from_pem(read(ca, "--client-ca")?))
                .client_auth_optional(true);
        }
        Ok(Some(config))
    }
}

/// `--ca`, `--tls-client-cert`, `--tls-client-key`: a client's side.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientTlsArgs {
    /// Trust this CA (PEM) for an https:// scheduler.
    #[arg(long, env = "TASKFORGE_CA")]
    pub ca: Option<PathBuf>,
    /// Present this client certificate (PEM), for a scheduler started with
    /// --client-ca.
    #[arg(long, env = "TASKFORGE_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "TASKFORGE_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS configuration for a scheduler at `url`: required for
    /// https://, refused for http://.
    pub fn config(&self, url: &str) -> Result<Option<ClientTlsConfig>, String> {
        let https = url.starts_with("https://");
        match (&self.ca, https) {
            (None, false) => Ok(None),
            (Some(_), false) => Err(format!(
                "--ca is for https:// schedulers; {url} is plaintext"
            )),
            (None, true) => Err(format!(
                "{url} is TLS: give --ca with the CA that signed its certificate"
            )),
            (Some(ca), true) => {
                let mut config =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--ca")?));
                if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                    config = config.identity(Identity::from_pem(
                        read(cert, "--tls-client-cert")?,
                        read(key, "--tls-client-key")?,
                    ));
                }
                Ok(Some(config))
            }
        }
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|error| format!("{flag}: cannot read {}: {error}", path.display()))?;
    if !pem.starts_with(b"-----BEGIN") {
        return Err(format!("{flag}: {} is not PEM", path.display()));
    }
    Ok(pem)
}

/// The files `taskforge certs` writes.
pub const CA_CERT: &str = "ca.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const WORKER_CERT: &str = "worker.pem";
pub const WORKER_KEY: &str = "worker.key";

/// Writes a development CA, a server certificate for `hosts` (names or IP
/// addresses) and a worker client certificate, all signed by that CA, into
/// `dir`; returns the paths written. Keys are written readable by their
/// owner only. For development and tests: a production CA keeps its key
/// elsewhere.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    if hosts.is_empty() {
        return Err("name at least one --host (the name or address workers dial)".into());
    }
    fn failed(what: &'static str) -> impl Fn(rcgen::Error) -> String {
        move |error| format!("cannot make {what}: {error}")
    }
    let ca_key = KeyPair::generate().map_err(failed("the CA's key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed("the CA"))?;
    ca.distinguished_name
        .push(DnType::CommonName, "TaskForge development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(failed("the CA"))?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(Vec::<String>::new()).map_err(failed("the server"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, "TaskForge scheduler");
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|error| format!("--host {host:?}: {error}"))?,
            ),
        };
        server.subject_alt_names.push(san);
    }
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(failed("the server's key"))?;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(failed("the server certificate"))?;

    let mut worker = CertificateParams::new(Vec::<String>::new()).map_err(failed("the worker"))?;
    worker
        .distinguished_name
        .push(DnType::CommonName, "TaskForge worker");
    worker.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let worker_key = KeyPair::generate().map_err(failed("the worker's key"))?;
    let worker_cert = worker
        .signed_by(&worker_key, &issuer)
        .map_err(failed("the worker certificate"))?;

    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let files = [
        (CA_CERT, ca_cert.pem(), false),
        (SERVER_CERT, server_cert.pem(), false),
        (SERVER_KEY, server_key.serialize_pem(), true),
        (WORKER_CERT, worker_cert.pem(), false),
        (WORKER_KEY, worker_key.serialize_pem(), true),
    ];
    let mut written = Vec::new();
    for (name, pem, secret) in files {
        let path = dir.join(name);
        write(&path, pem.as_bytes(), secret)?;
        written.push(path);
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_need_a_ca_for_https_and_only_for_https() {
        let none = ClientTlsArgs::default();
        assert!(none.config("http://127.0.0.1:1").unwrap().is_none());
        let error = none.config("https://127.0.0.1:1").unwrap_err();
        assert!(error.contains("give --ca"), "{error}");
        let with_ca = ClientTlsArgs {
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientTlsArgs::default()
        };
        assert!(
            with_ca
                .config("http://127.0.0.1:1")
                .unwrap_err()
                .contains("plaintext")
        );
        assert!(
            with_ca
                .config("https://127.0.0.1:1")
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn generated_certificates_are_pem_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("taskforge-certs-{}", std::process::id()));
        let written = generate(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(written.len(), 5);
        for path in &written {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{}", path.display());
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let secret = path.extension().is_some_and(|ext| ext == "key");
            assert_eq!(mode == 0o600, secret, "{}: {mode:o}", path.display());
        }
        let args = ServerTlsArgs {
            tls_cert: Some(dir.join(SERVER_CERT)),
            tls_key: Some(dir.join(SERVER_KEY)),
            client_ca: Some(dir.join(CA_CERT)),
        };
        assert!(args.config().unwrap().is_some());
        assert!(generate(&dir, &[]).unwrap_err().contains("--host"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

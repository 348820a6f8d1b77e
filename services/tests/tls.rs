//! TLS on the real `taskforge scheduler`: certificates from `taskforge
//! certs`' generator, a worker with a client certificate and the worker
//! token running work for a client with the API token; a plaintext client,
//! a client trusting another CA and a worker without a certificate refused
//! while the scheduler keeps serving the others.

mod support;

use std::path::Path;

use bytes::Bytes;
use taskforge_proto::scheduler::{
    ListWorkersRequest, RegisterFunctionRequest, TriggerExecutionRequest,
};
use taskforge_proto::worker::WorkerMessage;
use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_services::auth::{self, Credentials, SchedulerClient, Token};
use taskforge_services::net::{self, ChannelConfig};
use taskforge_services::tls::{self, ClientTlsArgs};
use taskforge_services::worker::{self, WorkerConfig};
use tonic::transport::Channel;

use support::processes::{TempDir, scheduler};
use support::watch::{is_terminal, watch_until};

fn tls_channel(url: &str, ca: &Path, client_cert: Option<(&Path, &Path)>) -> Channel {
    let args = ClientTlsArgs {
        ca: Some(ca.to_path_buf()),
        tls_client_cert: client_cert.map(|(cert, _)| cert.to_path_buf()),
        tls_client_key: client_cert.map(|(_, key)| key.to_path_buf()),
    };
    let tls = args.config(url).unwrap();
    net::connect_lazy_tls(url, &ChannelConfig::default(), tls).unwrap()
}

fn api(channel: Channel) -> SchedulerClient {
    auth::scheduler_client(channel, Credentials::new(Some(&Token::new("api").unwrap())))
}

#[tokio::test]
async fn work_flows_over_tls_and_the_unprotected_are_refused() {
    let dir = TempDir::new("tls");
    let certs = dir.path().join("certs");
    tls::generate(&certs, &["127.0.0.1".to_string()]).unwrap();
    let other = dir.path().join("other");
    tls::generate(&other, &["127.0.0.1".to_string()]).unwrap();
    let file = |name: &str| certs.join(name);
    let data = dir.path().join("data");
    let (_scheduler, addr) = scheduler(
        &data,
        &[
            "--tls-cert",
            file(tls::SERVER_CERT).to_str().unwrap(),
            "--tls-key",
            file(tls::SERVER_KEY).to_str().unwrap(),
            "--client-ca",
            file(tls::CA_CERT).to_str().unwrap(),
            "--api-token",
            "api",
            "--worker-token",
            "workers",
        ],
    );
    let url = format!("https://{addr}");
    let ca = file(tls::CA_CERT);
    let worker_cert = (file(tls::WORKER_CERT), file(tls::WORKER_KEY));

    // A worker with its certificate and token.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = WorkerConfig {
        token: Some(Token::new("workers").unwrap()),
        ..WorkerConfig::new("tls-worker", 2)
    };
    let channel = tls_channel(&url, &ca, Some((&worker_cert.0, &worker_cert.1)));
    let running = tokio::spawn(worker::run(
        config,
        channel,
        taskforge_services::clock::system_clock(),
        async move {
            let _ = stopped.await;
        },
    ));

    // A client trusting the CA, with the API token, gets work done.
    let mut client = api(tls_channel(&url, &ca, None));
    let function_id = client
        .register_function(RegisterFunctionRequest {
            name: "echo".into(),
            language: "builtin".into(),
            code: Bytes::from_static(b"echo"),
            ..Default::default()
        })
        .await
        .expect("register over TLS")
        .into_inner()
        .function_id;
    let id = client
        .trigger_execution(TriggerExecutionRequest {
            function_id,
            payload: Bytes::from_static(b"\"sealed\""),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let done = watch_until(&mut client, &id, "done", is_terminal).await;
    assert_eq!(done.status, "COMPLETED", "{}", done.error);
    assert_eq!(done.worker_id, "tls-worker");
    assert_eq!(done.output, Bytes::from_static(b"\"sealed\""));

    // Plaintext to the TLS port: refused.
    let plain = net::connect_lazy(&format!("http://{addr}"), &ChannelConfig::default()).unwrap();
    assert!(
        api(plain)
            .list_workers(ListWorkersRequest {})
            .await
            .is_err()
    );
    // A client trusting another CA: refused by its own check of the server.
    let stranger = tls_channel(&url, &other.join(tls::CA_CERT), None);
    let refused = api(stranger)
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}")
            .to_lowercase()
            .contains("certificate"),
        "{refused:?}"
    );
    // A worker stream without a client certificate: refused, saying why.
    let mut no_cert = WorkerServiceClient::with_interceptor(
        tls_channel(&url, &ca, None),
        Credentials::new(Some(&Token::new("workers").unwrap())),
    );
    let refused = no_cert
        .worker_stream(tokio_stream::iter([WorkerMessage::default()]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("client certificate"),
        "{}",
        refused.message()
    );

    // The scheduler still serves the legitimate ones.
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "tls-worker");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// One HTTPS request to the gateway, trusting `ca`.
async fn https(
    addr: std::net::SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the gateway");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_gateway_serves_https_in_front_of_a_tls_scheduler() {
    let dir = TempDir::new("tls-gateway");
    let certs = dir.path().join("certs");
    tls::generate(&certs, &["127.0.0.1".to_string()]).unwrap();
    let file = |name: &str| certs.join(name).to_str().unwrap().to_string();
    let (_scheduler, addr) = scheduler(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &file(tls::SERVER_CERT),
            "--tls-key",
            &file(tls::SERVER_KEY),
            "--api-token",
            "api",
        ],
    );
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_taskforge"))
        .args(["gateway", "--http", "127.0.0.1:0"])
        .args([
            "--scheduler",
            &format!("https://{addr}"),
            "--ca",
            &file(tls::CA_CERT),
        ])
        .args(["--api-token", "api"])
        .args([
            "--tls-cert",
            &file(tls::SERVER_CERT),
            "--tls-key",
            &file(tls::SERVER_KEY),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(gateway.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _gateway = support::processes::Process::from(gateway);
    let http: std::net::SocketAddr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let ca = certs.join(tls::CA_CERT);

    let (status, _) = https(http, &ca, "GET", "/health", None, "").await;
    assert_eq!(status, 200);
    let register = r#"{"name":"echo","language":"builtin","code":"echo"}"#;
    let (status, _) = https(http, &ca, "POST", "/functions", None, register).await;
    assert_eq!(status, 401, "the gateway wants its token");
    let (status, body) = https(http, &ca, "POST", "/functions", Some("api"), register).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("function_id"), "{body}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(http).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

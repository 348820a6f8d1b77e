//! A stock tonic client, with default settings, against the scheduler: long
//! sequential loops of calls must all succeed on the client's first
//! connection.
//!
//! hyper's HTTP/2 client counts the streams it resets because of an error it
//! detected itself and, past 1,024 on one connection, drops the connection
//! with GOAWAY(ENHANCE_YOUR_CALM, "too_many_internal_resets"); the channel
//! then reconnects, so the tests count connections rather than trust that
//! every call succeeded. The loops are several times that limit.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use taskforge_proto::scheduler::TriggerExecutionRequest;
use taskforge_services::cluster::{Cluster, ClusterConfig};
use tonic::transport::Endpoint;

use support::watch::{Client, register};

/// Calls per loop: well past the 1,024 resets hyper allows a connection.
const CALLS: usize = 5_000;

async fn start_in_memory() -> Cluster {
    // RUST_LOG=h2=debug shows which side reset what.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = ClusterConfig {
        data_dir: None,
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        ..ClusterConfig::default()
    };
    Cluster::start(config).await.expect("start the cluster")
}

/// A client with every setting at tonic's default, and the number of TCP
/// connections it has opened: each test must finish on its first.
async fn stock_client(cluster: &Cluster) -> (Client, Arc<AtomicUsize>) {
    let address = cluster.grpc_addr;
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let stream = tokio::net::TcpStream::connect(address).await?;
            // As tonic's own connector does by default.
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid address")
        .connect_with_connector(connector)
        .await
        .expect("connect");
    let client = taskforge_services::auth::scheduler_client(
        channel,
        taskforge_services::auth::Credentials::none(),
    );
    (client, connections)
}

fn echo_request(function_id: &str, n: usize) -> TriggerExecutionRequest {
    TriggerExecutionRequest {
        function_id: function_id.to_string(),
        payload: Bytes::from(n.to_string()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sequential_trigger_loop_keeps_its_connection() {
    let cluster = start_in_memory().await;
    let (mut client, connections) = stock_client(&cluster).await;
    let function_id = register(&mut client, "echo").await;
    for n in 0..CALLS {
        if let Err(status) = client
            .trigger_execution(echo_request(&function_id, n))
            .await
        {
            panic!("trigger {n} of {CALLS} failed: {status:?}");
        }
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sequential_trigger_and_watch_loop_keeps_its_connection() {
    let cluster = start_in_memory().await;
    let (mut client, connections) = stock_client(&cluster).await;
    let function_id = register(&mut client, "echo").await;
    for n in 0..CALLS {
        let outcome = async {
            let mut stream = client
                .trigger_and_watch_execution(echo_request(&function_id, n))
                .await?
                .into_inner();
            let mut last = None;
            while let Some(info) = stream.message().await? {
                last = Some(info.status);
            }
            Ok::<_, tonic::Status>(last)
        }
        .await;
        match outcome {
            Ok(Some(status)) if status == "COMPLETED" => {}
            other => panic!("trigger-and-watch {n} of {CALLS}: {other:?}"),
        }
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was replaced"
    );
}

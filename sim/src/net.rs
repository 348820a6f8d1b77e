//! The services' network seams, filled with turmoil's simulated sockets.
//!
//! The services never bind or dial on their own (see `taskforge_services::net`):
//! the scheduler serves on a stream of accepted connections, workers and
//! clients talk over a tonic [`Channel`] built by their caller, and the gateway
//! serves on any `axum` listener. Here those seams get turmoil's TCP instead of
//! the kernel's, so every byte between hosts goes through the simulated network
//! — where links can be partitioned, held, slowed down or cut by a crash.
//!
//! turmoil's TCP never retransmits: a segment dropped by a partition wedges its
//! connection for good. Every channel therefore gets the services' own
//! [`ChannelConfig`] (HTTP/2 keepalive and a connect timeout), so both ends
//! notice a silent peer and start over.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};
use turmoil::net::{TcpListener, TcpStream};

use taskforge_services::net::ChannelConfig;

/// The port the scheduler's gRPC server listens on.
pub const SCHEDULER_PORT: u16 = 50051;
/// The port the gateway's HTTP server listens on.
pub const GATEWAY_PORT: u16 = 3000;

/// Binds a simulated listener on every address of the current host.
pub async fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await
}

/// An accepted simulated connection, as tonic's server wants it.
#[derive(Debug)]
pub struct Accepted(TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts, as the stream the scheduler serves on.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<Accepted>> + Send {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| Accepted(stream));
        Some((accepted, listener))
    })
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

/// Dials `uri`'s authority (`host:port`, resolved by turmoil's DNS) over the
/// simulated network.
fn dial(uri: Uri) -> Connecting {
    Box::pin(async move {
        let authority = uri
            .authority()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no authority in uri"))?
            .to_string();
        Ok(TokioIo::new(TcpStream::connect(authority).await?))
    })
}

/// A lazily connecting channel to `host:port` over the simulated network. Like
/// the binary's channels it connects on first use and reconnects by itself
/// after the peer restarts. Must be called on a simulated host.
pub fn channel(host: &str, port: u16, config: &ChannelConfig) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
        .expect("a host name and a port make a valid uri");
    config
        .apply(endpoint)
        .connect_with_connector_lazy(tower::service_fn(dial))
}

/// A simulated listener for `axum::serve` (the gateway).
pub struct HttpListener(pub TcpListener);

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HttpListener")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Wait a little, as axum does, rather than spin on a failing accept.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Opens an HTTP/1 connection to `host:port` over the simulated network.
pub async fn http_connect(
    host: &str,
    port: u16,
) -> io::Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let stream = TcpStream::connect((host, port)).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the connection closes or fails; the sender then reports it.
        let _ = connection.await;
    });
    Ok(sender)
}

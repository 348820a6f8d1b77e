//! The network seams.
//!
//! No service binds or dials on its own. The scheduler serves on whatever stream
//! of accepted connections its caller hands it; workers and the gateway talk to
//! the scheduler over a [`Channel`] their caller built. The binary passes real
//! tokio sockets (the helpers below); the simulation passes turmoil's.
//!
//! Every channel gets HTTP/2 keepalive and a connect timeout: a peer that goes
//! silent without closing its connection (a partition, a dead machine) must be
//! noticed by both ends, not waited on forever.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

mod leader;

pub use leader::LeaderChannel;

/// Largest message a worker or the gateway reads from the scheduler. The
/// scheduler is a trusted peer that enforces its own, smaller limit (its
/// largest payload, output or code plus 64 KiB); this only has to be above
/// anything it may be configured to send (see the binary's flag ranges).
pub const FROM_SCHEDULER_LIMIT: usize = 64 << 20;

/// Timeouts for a channel to the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct ChannelConfig {
    pub connect_timeout: Duration,
    /// How often an idle connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl ChannelConfig {
    /// Applies these timeouts to an endpoint.
    pub fn apply(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            // The scheduler often answers a unary call before the client has
            // sent its end of stream; the server then resets the finished
            // stream, and hyper's client counts each such reset towards a
            // limit (1024 per connection) meant for misbehaving peers, after
            // which it drops the connection with GOAWAY(ENHANCE_YOUR_CALM).
            // Our scheduler is a trusted peer: no limit.
            .http2_max_local_error_reset_streams(None)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid scheduler address {address:?}: {reason}")]
pub struct AddressError {
    address: String,
    reason: String,
}

/// A lazily connecting channel to the scheduler at `address` over real TCP
/// (`http://host:port`). It connects on first use and reconnects by itself after
/// the scheduler restarts.
pub fn connect_lazy(address: &str, config: &ChannelConfig) -> Result<Channel, AddressError> {
    connect_lazy_tls(address, config, None)
}

/// [`connect_lazy`], over TLS when `tls` is given (an `https://` address).
pub fn connect_lazy_tls(
    address: &str,
    config: &ChannelConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, AddressError> {
    let invalid = |reason: String| AddressError {
        address: address.to_string(),
        reason,
    };
    let mut endpoint =
        Endpoint::from_shared(address.to_string()).map_err(|e| invalid(e.to_string()))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(config.apply(endpoint).connect_lazy())
}

/// A channel to whichever of the schedulers in `addresses` (comma-separated:
/// `http://a:50051,http://b:50051`) leads, each dialed lazily with the TLS
/// settings `tls` gives for its address.
pub fn connect_schedulers(
    addresses: &str,
    config: &ChannelConfig,
    tls: impl Fn(&str) -> Result<Option<tonic::transport::ClientTlsConfig>, String>,
) -> Result<LeaderChannel, String> {
    let mut schedulers = Vec::new();
    for address in addresses.split(',').map(str::trim) {
        if address.is_empty() {
            return Err(format!(
                "{addresses:?} has an empty scheduler address: give URL[,URL...]"
            ));
        }
        let channel =
            connect_lazy_tls(address, config, tls(address)?).map_err(|error| error.to_string())?;
        schedulers.push((address.to_string(), channel));
    }
    Ok(LeaderChannel::new(schedulers))
}

/// Accepted connections of a real listener, as the scheduler's `serve` takes
/// them, with Nagle's algorithm off: small gRPC frames must not wait for the
/// peer's delayed ACK (tens of milliseconds per round trip otherwise).
pub fn tcp_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        // Best effort: a socket that refuses the option still works, slower.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    })
}

/// A real listener for the HTTP gateway, with Nagle's algorithm off on every
/// accepted connection.
pub fn http_listener(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    })
}

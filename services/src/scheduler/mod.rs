//! The scheduler service: the seed's `SchedulerService` and `WorkerService` over
//! gRPC, plus the extensions (watch, listing, cancel, workers, stats).
//!
//! One task, the [`actor`], owns the core state machine, the function registry,
//! the worker streams and the watchers. gRPC handlers turn requests into commands
//! on a channel and await the actor's reply; nothing else touches the state, so
//! there are no locks and every decision happens in one defined order. Records go
//! to the store through the [`committer`] (group commit); replies that promise
//! durability wait for it.

mod actor;
mod api;
mod committer;
mod convert;
mod elected;
mod filed;
mod idempotency;
mod observer;
mod paging;
mod route;
mod streams;
mod watchers;

use tonic::service::interceptor::InterceptedService;

use crate::auth::{Gate, Role, Token};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use taskforge_core::Policy;
use taskforge_core::scheduler::SchedulerConfig;
use taskforge_proto::scheduler::scheduler_service_server::SchedulerServiceServer;
use taskforge_proto::worker::worker_service_server::WorkerServiceServer;

use crate::clock::WallClock;
use crate::languages::Languages;
use crate::store::{HistoryReader, Store};
pub use committer::StoreRunner;
pub use elected::Candidate;
pub use observer::{SchedulerEvent, SchedulerObserver};
pub use route::LEADER_HEADER;
use std::sync::Arc;

/// Everything the scheduler service can be tuned with.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    pub core: SchedulerConfig,
    /// Applied where neither the invocation nor the function says otherwise.
    pub default_policy: Policy,
    /// Largest payload a trigger may carry.
    pub max_payload_bytes: usize,
    /// Largest output a worker may report; a larger one fails the execution.
    pub max_output_bytes: usize,
    /// Largest code a function may be registered with.
    pub max_code_bytes: usize,
    /// The languages registration accepts, and how it checks each one's code.
    pub languages: Languages,
    /// Most open watches of one execution, and of all executions together;
    /// beyond them a watch is refused with RESOURCE_EXHAUSTED (HTTP 429).
    pub max_watchers_per_execution: usize,
    pub max_watchers: usize,
    /// Pool size assumed for a worker whose hello does not say (a seed worker).
    pub default_pool_size: u32,
    /// Seed for execution and function ids. Ids are random 64-bit values, so
    /// they stay unique across restarts without coordination.
    pub id_seed: u64,
    pub store_runner: StoreRunner,
    /// How long the committer may hold a group's fsync for the results of
    /// quick executions it accepted, so acceptance and end share one fsync
    /// (zero: never). Only an idle committer waits; see `committer`.
    pub commit_delay: Duration,
    /// HTTP/2 keepalive towards clients and workers, so a silent peer is noticed.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Sees every decision of the scheduler, in order (the simulation builds
    /// its trace and checks its invariants with it). `None` costs nothing.
    pub observer: Option<SchedulerObserver>,
    /// When set, the client API requires it (`authorization: Bearer`).
    pub api_token: Option<Token>,
    /// When set, a worker's stream requires it.
    pub worker_token: Option<Token>,
    /// When set, gRPC is served over TLS (and may require client
    /// certificates).
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Worker streams must come with a client certificate (`--client-ca`).
    pub require_worker_certificates: bool,
}

/// Long enough for an echo's round trip through a worker on loopback
/// (~100–150 µs), short against the fsync it saves (~110 µs on the
/// reference disk) plus the hand-offs around a second group.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(250);

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            core: SchedulerConfig::default(),
            default_policy: Policy::default(),
            max_payload_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_code_bytes: 1 << 20,
            languages: Languages::standard(),
            max_watchers_per_execution: 1_000,
            max_watchers: 100_000,
            default_pool_size: 4,
            id_seed: 0,
            store_runner: StoreRunner::Thread,
            commit_delay: DEFAULT_COMMIT_DELAY,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            observer: None,
            api_token: None,
            worker_token: None,
            tls: None,
            require_worker_certificates: false,
        }
    }
}

/// Room, beyond the largest blob a message carries, for everything else in it
/// (ids, stamps, error text, framing).
const MESSAGE_OVERHEAD: usize = 64 << 10;

impl SchedulerOptions {
    /// The largest blob any one message carries: a payload, an output or code.
    fn largest_blob(&self) -> usize {
        self.max_payload_bytes
            .max(self.max_output_bytes)
            .max(self.max_code_bytes)
    }

    /// Largest gRPC message either side of either service may send.
    pub fn message_limit(&self) -> usize {
        self.largest_blob() + MESSAGE_OVERHEAD
    }

    /// Bytes of items one listing page may hold: the message limit less room
    /// for the rest of the response.
    pub(crate) fn response_budget(&self) -> usize {
        self.largest_blob()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("could not load the store: {0}")]
    Load(#[from] crate::store::StoreError),
    #[error("could not start the store's committer: {0}")]
    Committer(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("bad TLS certificate or key: {0}")]
    Tls(tonic::transport::Error),
}

/// A loaded scheduler, ready to serve.
pub struct SchedulerService {
    actor: actor::Actor,
    commands: mpsc::Sender<actor::Command>,
    history: Arc<dyn HistoryReader>,
    options: SchedulerOptions,
}

impl std::fmt::Debug for SchedulerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerService").finish_non_exhaustive()
    }
}

impl SchedulerService {
    /// Loads the store (recovering what an earlier run left) and prepares the
    /// actor. Must be called inside a tokio runtime.
    pub fn load(
        options: SchedulerOptions,
        mut store: Box<dyn Store>,
        clock: WallClock,
    ) -> Result<SchedulerService, SchedulerError> {
        // Timed for the log only: how long a start takes with a long history.
        let started = std::time::Instant::now();
        let recovered = store.load()?;
        for warning in &recovered.warnings {
            tracing::warn!("store: {warning}");
        }
        let loaded_in = started.elapsed();
        let history = store.history();
        let (commands, inbox) = mpsc::channel(4096);
        let (pending, finished) = (recovered.executions.len(), recovered.history.len());
        let actor = actor::Actor::new(options.clone(), store, clock, inbox, recovered)
            .map_err(SchedulerError::Committer)?;
        if pending + finished > 0 {
            tracing::info!(
                pending,
                finished,
                load_ms = loaded_in.as_millis() as u64,
                restore_ms = (started.elapsed() - loaded_in).as_millis() as u64,
                "recovered from the store"
            );
        }
        Ok(SchedulerService {
            actor,
            commands,
            history,
            options,
        })
    }

    /// Serves both gRPC services on `incoming` until `shutdown` resolves.
    /// As [`load`](Self::load), on a thread of its own that ends with it,
    /// so that what a start holds only while it reads the history (a
    /// summary of every finished execution, before the actor takes what it
    /// keeps) is returned to the system with the thread rather than kept by
    /// the caller's allocator. For real disks only: a simulated disk belongs
    /// to its host's thread.
    pub fn load_on_own_thread(
        options: SchedulerOptions,
        store: Box<dyn Store>,
        clock: WallClock,
    ) -> Result<SchedulerService, SchedulerError> {
        std::thread::scope(|scope| {
            let loading = std::thread::Builder::new()
                .name("taskforge-load".into())
                .spawn_scoped(scope, move || SchedulerService::load(options, store, clock))
                .map_err(SchedulerError::Committer)?;
            loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    pub async fn serve<S, IO, E>(
        self,
        incoming: S,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError>
    where
        S: Stream<Item = Result<IO, E>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Before anything runs: a bad certificate or key ends here.
        let server = server_builder(&self.options)?;
        let options = self.options.clone();
        let (leading, actor) = self.start();
        // On shutdown the actor first ends every worker stream and watch (they
        // would keep the server's graceful close waiting forever), then the
        // server stops.
        let (stopped, mut stop) = tokio::sync::watch::channel(false);
        let notify = leading.commands.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = notify.send(actor::Command::Shutdown).await;
            let _ = stopped.send(true);
        });
        let route = route::Route::Fixed(leading);
        let served = serve_routes(server, &options, route, incoming, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
        // Every command sender is gone with the server: the actor flushes and ends.
        let _ = actor.await;
        served
    }

    /// Runs the actor; returns the way to reach it.
    fn start(self) -> (route::Leading, tokio::task::JoinHandle<()>) {
        let SchedulerService {
            actor,
            commands,
            history,
            options,
        } = self;
        let actor = tokio::spawn(actor.run());
        let history = filed::History::new(history, options.store_runner);
        (route::Leading { commands, history }, actor)
    }
}

/// The gRPC server, with TLS when the options ask for it.
fn server_builder(options: &SchedulerOptions) -> Result<tonic::transport::Server, SchedulerError> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = options.tls.clone() {
        server = server.tls_config(tls).map_err(SchedulerError::Tls)?;
    }
    Ok(server)
}

/// Serves both gRPC services, each call going where `route` says, until
/// `stop` resolves.
async fn serve_routes<S, IO, E>(
    server: tonic::transport::Server,
    options: &SchedulerOptions,
    route: route::Route,
    incoming: S,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SchedulerError>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = options.message_limit();
    let api = api::Api::new(route.clone(), options.response_budget());
    let api = SchedulerServiceServer::new(api)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let api = InterceptedService::new(api, Gate::new(Role::Api, options.api_token.clone()));
    let workers = WorkerServiceServer::new(streams::WorkerStreams::new(route))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let workers = InterceptedService::new(
        workers,
        Gate::new(Role::Worker, options.worker_token.clone())
            .requiring_certificate(options.require_worker_certificates),
    );
    server
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(api)
        .add_service(workers)
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;
    Ok(())
}

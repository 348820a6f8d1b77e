//! A whole cluster in one process: the scheduler, W workers × P slots and the
//! gateway, on loopback sockets.
//!
//! `taskforge up` runs one; so do the end-to-end tests and the load generator's
//! embedded mode. Each part talks to the others over real TCP and gRPC, exactly
//! as separate processes would.

use crate::auth::{self, Credentials};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{WallClock, system_clock};
use crate::gateway::{self, GatewayConfig};
use crate::net::{self, ChannelConfig};
use crate::scheduler::{Candidate, SchedulerError, SchedulerOptions, SchedulerService};
use crate::store::{JsonlStore, MemoryStore, StdFileSystem, Store, StoreError};
use crate::worker::{self, WorkerConfig};
use taskforge_core::lease::LeaseConfig;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub workers: u32,
    pub pool_size: u32,
    /// Where the store keeps its files; `None` keeps everything in memory
    /// (nothing survives the process).
    pub data_dir: Option<PathBuf>,
    /// Keep the state in PostgreSQL at this address instead of `data_dir`.
    pub database_url: Option<String>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub scheduler: SchedulerOptions,
    pub gateway: GatewayConfig,
    pub channel: ChannelConfig,
    /// Template for every worker; its id and seed are set per worker.
    pub worker: WorkerConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: 2,
            pool_size: 4,
            data_dir: Some(PathBuf::from("data")),
            database_url: None,
            http: SocketAddr::from(([127, 0, 0, 1], 3000)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            scheduler: SchedulerOptions::default(),
            gateway: GatewayConfig::default(),
            channel: ChannelConfig::default(),
            worker: WorkerConfig::new("worker", 4),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Address(#[from] net::AddressError),
}

/// A running cluster. Dropping it without [`Cluster::shutdown`] leaves its tasks
/// running until the runtime ends.
#[derive(Debug)]
pub struct Cluster {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Stops the gateway and the workers (which drain first).
    stop_edge: watch::Sender<bool>,
    /// Stops the scheduler, once the rest has stopped.
    stop_scheduler: watch::Sender<bool>,
    edge: Vec<JoinHandle<()>>,
    scheduler: JoinHandle<()>,
}

impl Cluster {
    /// Binds both addresses, loads the store and starts every part.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Cluster::start_with_clock(config, system_clock()).await
    }

    pub async fn start_with_clock(
        config: ClusterConfig,
        clock: WallClock,
    ) -> Result<Cluster, ClusterError> {
        let grpc = bind(config.grpc).await?;
        let http = bind(config.http).await?;
        let grpc_addr = local_addr(&grpc, config.grpc)?;
        let http_addr = local_addr(&http, config.http)?;

        let (stop_scheduler, scheduler_stop) = watch::channel(false);
        let incoming = net::tcp_incoming(grpc);
        let scheduler = match &config.database_url {
            // On a shared database the scheduler leads under the lease, as
            // one of possibly several (`taskforge scheduler --store`).
            Some(url) => {
                let candidate = Candidate {
                    options: config.scheduler.clone(),
                    database_url: url.clone(),
                    advertise: format!("http://{grpc_addr}"),
                    holder: format!("taskforge up on {grpc_addr}"),
                    lease: LeaseConfig::default(),
                };
                let clock = clock.clone();
                tokio::spawn(async move {
                    let served = candidate
                        .serve(clock, incoming, stopped(scheduler_stop))
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "scheduler stopped");
                    }
                })
            }
            None => {
                let store: Box<dyn Store> = match &config.data_dir {
                    Some(dir) => Box::new(JsonlStore::open(Arc::new(StdFileSystem), dir.clone())?),
                    None => Box::new(MemoryStore::new()),
                };
                let scheduler = SchedulerService::load_on_own_thread(
                    config.scheduler.clone(),
                    store,
                    clock.clone(),
                )?;
                tokio::spawn(async move {
                    if let Err(error) = scheduler.serve(incoming, stopped(scheduler_stop)).await {
                        tracing::error!(%error, "scheduler stopped");
                    }
                })
            }
        };

        let address = format!("http://{grpc_addr}");
        let (stop_edge, edge_stop) = watch::channel(false);
        let mut edge = Vec::new();
        for index in 1..=config.workers {
            let worker_config = WorkerConfig {
                id: format!("{}-{index}", config.worker.id),
                pool_size: config.pool_size,
                seed: config.worker.seed.wrapping_add(u64::from(index)),
                ..config.worker.clone()
            };
            let channel = net::connect_lazy(&address, &config.channel)?;
            let clock = clock.clone();
            let stop = stopped(edge_stop.clone());
            edge.push(tokio::spawn(async move {
                if let Err(error) = worker::run(worker_config, channel, clock, stop).await {
                    tracing::error!(%error, "worker stopped");
                }
            }));
        }
        let credentials = Credentials::new(config.scheduler.api_token.as_ref());
        let client =
            auth::scheduler_client(net::connect_lazy(&address, &config.channel)?, credentials)
                .max_decoding_message_size(net::FROM_SCHEDULER_LIMIT);
        let router = gateway::router(client, config.gateway.clone());
        let stop = stopped(edge_stop);
        edge.push(tokio::spawn(async move {
            if let Err(error) = gateway::serve(net::http_listener(http), router, stop).await {
                tracing::error!(%error, "gateway stopped");
            }
        }));

        Ok(Cluster {
            http_addr,
            grpc_addr,
            stop_edge,
            stop_scheduler,
            edge,
            scheduler,
        })
    }

    /// Stops the gateway and lets the workers finish what they run, then stops
    /// the scheduler, which flushes its store.
    pub async fn shutdown(self) {
        let _ = self.stop_edge.send(true);
        for task in self.edge {
            let _ = task.await;
        }
        let _ = self.stop_scheduler.send(true);
        let _ = self.scheduler.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ClusterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ClusterError> {
    listener
        .local_addr()
        .map_err(|source| ClusterError::Bind { addr, source })
}

/// Resolves once the watched flag turns true (or its sender is gone).
pub async fn stopped(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

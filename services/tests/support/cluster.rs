//! A whole cluster in the test's process, on loopback ports the system picks.

use taskforge_proto::scheduler::{ListWorkersRequest, WorkerInfo};
use taskforge_services::clock::system_clock;
use taskforge_services::cluster::{Cluster, ClusterConfig};
use taskforge_services::net::{self, ChannelConfig};
use taskforge_services::runtime::Runtimes;
use taskforge_services::worker::{self, WorkerConfig};
use tokio::sync::oneshot;

use super::http::{Call, Reply};
use super::processes::{TempDir, scheduler_client};
use super::watch::{Client, GUARD};

/// `workers` × `pool_size` on ephemeral loopback ports, storing in `dir`.
pub fn loopback(dir: &TempDir, workers: u32, pool_size: u32) -> ClusterConfig {
    ClusterConfig {
        workers,
        pool_size,
        data_dir: Some(dir.path().to_path_buf()),
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        ..ClusterConfig::default()
    }
}

/// A loopback cluster whose workers run `runtimes`, and any workers added
/// beside them.
pub struct Running {
    pub cluster: Cluster,
    _dir: TempDir,
    /// Extra workers started beside the cluster's: dropping the sender
    /// stops them.
    extra: Vec<oneshot::Sender<()>>,
}

impl Running {
    pub async fn start(label: &str, workers: u32, pool_size: u32, runtimes: Runtimes) -> Running {
        let dir = TempDir::new(label);
        let config = ClusterConfig {
            worker: WorkerConfig {
                runtimes,
                ..WorkerConfig::new("worker", pool_size)
            },
            ..loopback(&dir, workers, pool_size)
        };
        let cluster = Cluster::start(config).await.expect("start the cluster");
        Running {
            cluster,
            _dir: dir,
            extra: Vec::new(),
        }
    }

    pub fn client(&self) -> Client {
        scheduler_client(self.cluster.grpc_addr)
    }

    /// Starts one more worker, named `id`, running `runtimes`.
    pub fn add_worker(&mut self, id: &str, pool_size: u32, runtimes: Runtimes) {
        let address = format!("http://{}", self.cluster.grpc_addr);
        let channel = net::connect_lazy(&address, &ChannelConfig::default()).unwrap();
        let config = WorkerConfig {
            runtimes,
            ..WorkerConfig::new(id, pool_size)
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(worker::run(config, channel, system_clock(), async move {
            let _ = stopped.await;
        }));
        self.extra.push(stop);
    }

    pub async fn workers(&self) -> Vec<WorkerInfo> {
        let mut client = self.client();
        client
            .list_workers(ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    /// Waits (through repeated listings) until `n` workers are connected.
    pub async fn workers_settle_at(&self, n: usize) {
        let settle = async {
            while self.workers().await.len() != n {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(GUARD, settle)
            .await
            .expect("workers connected");
    }

    /// An HTTP request to the gateway with a JSON body.
    pub async fn call(&self, method: &'static str, path: &str, body: &str) -> Reply {
        Call::new(method, path)
            .json(body)
            .send(self.cluster.http_addr)
            .await
    }
}

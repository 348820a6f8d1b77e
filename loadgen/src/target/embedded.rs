//! An embedded cluster: the real scheduler, W workers × P slots and the
//! gateway, started in this process on loopback sockets.
//!
//! The cluster runs on a tokio runtime of its own, separate from the one that
//! generates load, so a busy load generator cannot starve the scheduler's actor
//! or a worker of their runtime's attention — they compete only for CPU time,
//! the way separate processes on one machine would. Durability is on by
//! default: the JSONL store with group commit, in a fresh directory that is
//! removed afterwards; `in_memory` swaps in the memory store.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use taskforge_services::cluster::{Cluster, ClusterConfig};
use taskforge_services::runtime::builtin::BuiltinRuntime;
use taskforge_services::runtime::process::{Interpreter, Language, ProcessConfig, ProcessRuntime};
use taskforge_services::runtime::wasm::{WasmConfig, WasmRuntime};
use taskforge_services::runtime::{Runtime as RuntimeTrait, Runtimes};
use taskforge_services::scheduler::SchedulerOptions;
use taskforge_services::worker::WorkerConfig;
use tokio::runtime::Runtime;

/// Workers × pool size, written `2x4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    pub workers: u32,
    pub pool_size: u32,
}

impl Shape {
    /// Σ pool sizes.
    pub fn capacity(self) -> u32 {
        self.workers * self.pool_size
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.workers, self.pool_size)
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(text: &str) -> Result<Shape, String> {
        let bad = || format!("{text:?} is not WORKERSxPOOL, e.g. 2x4");
        let (workers, pool) = text.split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=1024).contains(&n))
        };
        Ok(Shape {
            workers: number(workers).ok_or_else(bad)?,
            pool_size: number(pool).ok_or_else(bad)?,
        })
    }
}

/// How to start an embedded cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    pub shape: Shape,
    /// Keep the store in memory instead of JSONL files (no fsync).
    pub in_memory: bool,
    /// Where the store's temporary directory is made; the system's temp dir
    /// when `None`.
    pub data_parent: Option<PathBuf>,
    /// Executions a worker may hold beyond its pool size; the scheduler's
    /// default when `None`.
    pub prefetch: Option<u32>,
    /// How long the store may hold an fsync for quick executions' results;
    /// the scheduler's default when `None`.
    pub commit_delay: Option<Duration>,
    /// Threads of the cluster's runtime.
    pub threads: usize,
    /// Interpreted languages the load runs (their runtimes start only then:
    /// each keeps sandboxes started ahead).
    pub interpreted: Vec<Language>,
}

/// A running embedded cluster; [`EmbeddedCluster::stop`] shuts it down.
#[derive(Debug)]
pub struct EmbeddedCluster {
    runtime: Runtime,
    cluster: Cluster,
    shape: Shape,
    /// The store's directory (removed on drop), if durable.
    data: Option<TempDir>,
}

impl EmbeddedCluster {
    /// Starts the cluster on a runtime of its own and returns once it listens.
    pub fn start(options: &EmbeddedOptions) -> io::Result<EmbeddedCluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("taskforge-cluster")
            .enable_all()
            .build()?;
        let data = match options.in_memory {
            true => None,
            false => Some(TempDir::new(options.data_parent.as_deref())?),
        };
        let mut scheduler = SchedulerOptions::default();
        if let Some(prefetch) = options.prefetch {
            scheduler.core.prefetch = prefetch;
        }
        if let Some(delay) = options.commit_delay {
            scheduler.commit_delay = delay;
        }
        // The workers run what the binary's do: built-ins and WebAssembly
        // (one engine, with an instance slot for every worker slot and more).
        let slots = options
            .shape
            .workers
            .saturating_mul(options.shape.pool_size);
        let wasm = WasmConfig {
            max_instances: slots.saturating_mul(2).max(16),
            ..WasmConfig::default()
        };
        let mut runtimes: Vec<Arc<dyn RuntimeTrait>> = vec![
            Arc::new(BuiltinRuntime::new()),
            Arc::new(WasmRuntime::new(wasm).map_err(io::Error::other)?),
        ];
        for &language in &options.interpreted {
            runtimes.push(Arc::new(
                runtime
                    .block_on(interpreted(language, slots))
                    .map_err(io::Error::other)?,
            ));
        }
        let runtimes = Runtimes::new(runtimes);
        let config = ClusterConfig {
            workers: options.shape.workers,
            pool_size: options.shape.pool_size,
            data_dir: data.as_ref().map(|d| d.path().to_path_buf()),
            http: "127.0.0.1:0".parse().expect("a socket address"),
            grpc: "127.0.0.1:0".parse().expect("a socket address"),
            scheduler,
            worker: WorkerConfig {
                runtimes,
                ..WorkerConfig::new("worker", options.shape.pool_size)
            },
            ..ClusterConfig::default()
        };
        let cluster = runtime
            .block_on(Cluster::start(config))
            .map_err(io::Error::other)?;
        Ok(EmbeddedCluster {
            runtime,
            cluster,
            shape: options.shape,
            data,
        })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// `http://…` of the scheduler's gRPC API.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.cluster.grpc_addr)
    }

    /// `http://…` of the gateway.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.cluster.http_addr)
    }

    /// The store's directory, if the store is durable.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data.as_ref().map(TempDir::path)
    }

    /// Stops the gateway and workers, then the scheduler (which flushes its
    /// store), and removes the store's directory.
    pub fn stop(self) {
        let EmbeddedCluster {
            runtime,
            cluster,
            data,
            ..
        } = self;
        runtime.block_on(cluster.shutdown());
        runtime.shutdown_timeout(Duration::from_secs(5));
        drop(data);
    }
}

/// A directory removed (with its contents) when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: Option<&Path>) -> io::Result<TempDir> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!(
            "taskforge-loadgen-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `language` in sandboxes launched through this binary (its `main` runs
/// the sandbox's processes), as `taskforge up` would run it for `slots`.
async fn interpreted(language: Language, slots: u32) -> Result<ProcessRuntime, String> {
    let interpreter = Interpreter::find(language, language.default_command().as_ref())?;
    let launcher = std::env::current_exe().map_err(|error| error.to_string())?;
    let config = ProcessConfig {
        warm: usize::try_from(slots.div_ceil(2).clamp(1, 8)).unwrap_or(1),
        ..ProcessConfig::new(launcher)
    };
    ProcessRuntime::start(interpreter, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        let shape = |w, p| Shape {
            workers: w,
            pool_size: p,
        };
        assert_eq!("2x4".parse(), Ok(shape(2, 4)));
        assert_eq!("1X8".parse(), Ok(shape(1, 8)));
        assert_eq!("4×2".parse(), Ok(shape(4, 2)));
        assert!("2".parse::<Shape>().is_err());
        assert!("0x4".parse::<Shape>().is_err());
        assert!("2x".parse::<Shape>().is_err());
        assert_eq!(shape(2, 4).to_string(), "2x4");
        assert_eq!(shape(2, 4).capacity(), 8);
    }
}

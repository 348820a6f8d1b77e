//! Real `taskforge` processes for tests that kill them, and throwaway data
//! directories.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_services::auth::{self, Credentials, SchedulerClient};
use tonic::transport::{Channel, Endpoint};

/// A directory under the system's temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("taskforge-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    /// Sends `signal` (SIGSTOP to pause it, SIGCONT to let it go on).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the process");
    }

    /// Kills the process the hard way, as a crash would.
    pub fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl From<Child> for Process {
    fn from(child: Child) -> Process {
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn taskforge() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskforge"));
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Starts `taskforge scheduler` on an ephemeral port, storing in `data_dir`.
/// Returns once it listens, with its address.
pub fn scheduler(data_dir: &Path, extra: &[&str]) -> (Process, SocketAddr) {
    let mut child = taskforge()
        .args(["scheduler", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the scheduler");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the scheduler's first line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (Process(child), addr)
}

/// Starts `taskforge worker` against the scheduler at `addr`.
pub fn worker(addr: SocketAddr, id: &str, pool: u32) -> Process {
    worker_of(&[addr], id, pool)
}

/// `schedulers` as a `--scheduler` list.
pub fn scheduler_list(schedulers: &[SocketAddr]) -> String {
    let urls: Vec<String> = schedulers
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect();
    urls.join(",")
}

/// Starts `taskforge worker` against whichever of `schedulers` leads.
pub fn worker_of(schedulers: &[SocketAddr], id: &str, pool: u32) -> Process {
    let child = taskforge()
        .args([
            "worker",
            "--scheduler",
            &scheduler_list(schedulers),
            "--id",
            id,
        ])
        .args(["--pool", &pool.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start a worker");
    Process(child)
}

pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .connect_lazy()
}

/// A client of the scheduler's API, presenting no token.
pub fn scheduler_client(addr: SocketAddr) -> SchedulerClient {
    auth::scheduler_client(channel(addr), Credentials::none())
}

pub fn worker_client(addr: SocketAddr) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::new(channel(addr))
}

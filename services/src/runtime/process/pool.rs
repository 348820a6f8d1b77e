//! Sandboxes started ahead of need.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::ChildStdout;

use crate::sandbox::{Sandbox, Spec};

/// How long a sandbox may take to start before it is given up on.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A sandbox whose interpreter said it is ready for its one request.
#[derive(Debug)]
pub(super) struct Warm {
    pub(super) sandbox: Sandbox,
    /// The result pipe, past the "ready" line.
    pub(super) results: BufReader<ChildStdout>,
}

/// Up to `target` ready sandboxes of one spec, replaced in the background
/// as they are used; a sandbox that fails to start is not retried here (the
/// next execution starts one itself and reports why).
#[derive(Debug)]
pub(super) struct WarmPool {
    launcher: PathBuf,
    spec: Spec,
    target: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    ready: Vec<Warm>,
    starting: usize,
}

impl WarmPool {
    pub(super) fn new(launcher: PathBuf, spec: Spec, target: usize) -> WarmPool {
        WarmPool {
            launcher,
            spec,
            target,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// A ready sandbox: a warm one if there is one, else one started now.
    /// The caller refills ([`fill`](WarmPool::fill)) once its execution is
    /// done, so the replacement's start does not compete with it for CPU.
    pub(super) async fn take(self: &Arc<Self>) -> Result<Warm, String> {
        let warm = self.lock().ready.pop();
        match warm {
            Some(warm) => Ok(warm),
            None => start(&self.launcher, &self.spec).await,
        }
    }

    /// Starts sandboxes until `target` are ready or starting (in the
    /// background: outside a Tokio runtime, it does nothing).
    pub(super) fn fill(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.lock();
        while state.ready.len() + state.starting < self.target {
            state.starting += 1;
            let pool = self.clone();
            runtime.spawn(async move {
                let started = start(&pool.launcher, &pool.spec).await;
                let mut state = pool.lock();
                state.starting -= 1;
                match started {
                    Ok(warm) => state.ready.push(warm),
                    Err(error) => tracing::warn!(%error, "a sandbox failed to start ahead of need"),
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Nothing panics while holding it; a poisoned pool is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Refills the pool when dropped: held by an execution for its lifetime.
#[derive(Debug)]
pub(super) struct Refill(pub(super) Arc<WarmPool>);

impl Drop for Refill {
    fn drop(&mut self) {
        self.0.fill();
    }
}

/// Starts a sandbox and waits until its interpreter is ready.
pub(super) async fn start(launcher: &Path, spec: &Spec) -> Result<Warm, String> {
    let mut sandbox = Sandbox::spawn(launcher, spec)
        .map_err(|error| format!("cannot start a sandbox ({}): {error}", launcher.display()))?;
    let stdout = sandbox
        .stdout
        .take()
        .ok_or("the sandbox has no result pipe")?;
    let mut results = BufReader::new(stdout);
    let mut line = String::new();
    let ready = tokio::time::timeout(START_TIMEOUT, results.read_line(&mut line)).await;
    match ready {
        Ok(Ok(_)) if line == "ready\n" => Ok(Warm { sandbox, results }),
        Ok(_) => {
            // It died: its stderr says why.
            let mut why = String::new();
            if let Some(mut stderr) = sandbox.stderr.take() {
                let _ = (&mut stderr).take(8192).read_to_string(&mut why).await;
            }
            let status = sandbox.kill().await.map(crate::sandbox::exit_status_text);
            Err(format!(
                "the sandbox did not start ({}): {}",
                status.unwrap_or_else(|error| error.to_string()),
                why.trim()
            ))
        }
        Err(_) => Err(format!(
            "the sandbox did not start within {START_TIMEOUT:?}"
        )),
    }
}

//! One measured run against a target: wait for its workers, register the
//! workload's functions, drive the load shape with one execution per request,
//! and hand back the measurements with the cluster's size.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::load::{self, Operation, Plan};
use crate::measure::{Clock, Measurements, Recorder};
use crate::memory::{MemoryTrace, Sampler, Watched};
use crate::progress::{Progress, ProgressMode};
use crate::target::{Client, ClusterSize, Observation, TargetError};
use crate::workload::{FunctionSpec, Workload};

/// How long a run waits for the cluster's workers to connect.
const WORKERS_WAIT: Duration = Duration::from_secs(15);

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub plan: Plan,
    pub function: FunctionSpec,
    pub payload_bytes: usize,
    /// Per-execution limit, trigger to terminal state.
    pub timeout: Duration,
    /// Workers to wait for before starting (at least one).
    pub expect_workers: u32,
    /// Width of a timeline interval.
    pub bucket: Duration,
    pub progress: ProgressMode,
    /// Shown before the progress bar.
    pub label: String,
    /// Whose resident memory to sample every interval.
    pub memory: Option<Watched>,
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub measurements: Measurements,
    /// The cluster's size when the load started.
    pub size: ClusterSize,
    /// Its size after the load ended; a change means workers came or went.
    pub size_after: ClusterSize,
    /// The sampled process's resident memory over the run.
    pub memory: Option<MemoryTrace>,
}

/// The operation of a run: trigger one execution of the workload's next
/// function and follow it to its end.
#[derive(Debug)]
struct Execute {
    client: Client,
    workload: Workload,
    timeout: Duration,
}

impl Operation for Execute {
    async fn call(&self, lane: usize, seq: u64) -> Observation {
        let function = self.workload.pick(seq);
        let deadline = Instant::now() + self.timeout;
        self.client.execute(lane, function, deadline).await
    }
}

/// Runs `spec` against `client`.
pub async fn run(client: Client, spec: &RunSpec) -> Result<Run, TargetError> {
    let size = client
        .await_workers(spec.expect_workers, WORKERS_WAIT)
        .await?;
    let mut registered = Vec::new();
    for (handler, _) in spec.function.entries() {
        registered.push(client.register(handler).await?);
    }
    let workload = Workload::new(&spec.function, registered, spec.payload_bytes);
    let operation = Arc::new(Execute {
        client: client.clone(),
        workload,
        timeout: spec.timeout,
    });

    let clock = Clock::now();
    let start = clock.origin();
    let (from, until) = spec.plan.window(start);
    let recorder = Arc::new(Recorder::new(clock, from, until, spec.bucket));
    let progress = Progress::start(
        spec.progress,
        recorder.clone(),
        spec.plan,
        start,
        spec.label.clone(),
    );
    let sampler = spec
        .memory
        .map(|watched| Sampler::start(watched, start, spec.bucket));
    load::drive(operation, spec.plan, start, recorder.clone()).await;
    progress.finish().await;
    let memory = match sampler {
        Some(sampler) => sampler.finish().await,
        None => None,
    };
    let recorder = Arc::into_inner(recorder).expect("every load task has ended");
    let measurements = recorder.finish();

    let size_after = client.cluster_size().await.unwrap_or(size);
    if size_after != size {
        tracing::warn!(
            ?size,
            ?size_after,
            "the cluster changed size during the run"
        );
    }
    Ok(Run {
        measurements,
        size,
        size_after,
        memory,
    })
}

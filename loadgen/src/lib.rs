//! TaskForge's load generator and report writer.
//!
//! It drives executions through a scheduler (gRPC), a gateway (HTTP) or a
//! cluster it starts in-process, in a closed loop or an open loop without
//! coordinated omission, and reports what it saw: throughput, HdrHistogram
//! latency percentiles (accept, queue wait, run, end-to-end, overhead), the
//! cluster's capacity, the concurrency actually observed on the workers and
//! its Little's-law cross-check, utilization, and — with `--baseline` — all of
//! it against the transport ceiling measured in the same sitting.
//!
//! The parts, in the order a run uses them:
//!
//! - [`cli`]: arguments → [`Config`].
//! - [`baseline`]: the transport ceiling (a trivial gRPC server).
//! - [`target`]: where the load goes; [`target::embedded`] starts a cluster.
//! - [`workload`]: which functions, which payloads.
//! - [`load`]: closed and open loops, warm-up and measurement window.
//! - [`execute`]: one measured run against a target.
//! - [`measure`]: histograms, counts, timeline, run intervals.
//! - [`concurrency`]: time-weighted concurrency, Little's law, utilization.
//! - [`summary`]: the figures of a run.
//! - [`sweep`]: the W × P grid.
//! - [`report`] and [`svg`]: `report.json`, `report.md`, `latency.hgrm`, plots.
//! - [`progress`], [`machine`]: the live display, the machine's description.
//!
//! [`run`] ties them together. The load generator and an embedded cluster run
//! on separate tokio runtimes; the orchestration between them is plain
//! blocking code.

pub mod baseline;
pub mod cli;
pub mod concurrency;
pub mod execute;
pub mod load;
pub mod machine;
pub mod measure;
pub mod memory;
pub mod progress;
pub mod report;
pub mod summary;
pub mod svg;
pub mod sweep;
pub mod target;
pub mod workload;

use taskforge_services::auth::Credentials;
use tokio::runtime::Runtime;

pub use cli::Config;
pub use report::Report;

use crate::baseline::BaselineSpec;
use crate::cli::{Protocol, Target};
use crate::execute::RunSpec;
use crate::load::Plan;
use crate::machine::Machine;
use crate::progress::ProgressMode;
use crate::report::Outcome;
use crate::summary::Summary;
use crate::sweep::Cell;
use crate::target::embedded::{EmbeddedCluster, EmbeddedOptions};
use crate::target::grpc::GrpcClient;
use crate::target::http::HttpClient;
use crate::target::{Client, TargetError};

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Carries out `config`: the baseline if asked, then the run or the sweep.
///
/// Blocks until everything has run; call it outside any async runtime.
pub fn run(config: &Config) -> Result<Report, RunError> {
    let mut machine = Machine::probe();
    let cpu = machine::CpuClock::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()?;

    let baseline = match config.baseline {
        Some(duration) => {
            let concurrency = config.baseline_concurrency();
            let closed = Plan {
                shape: load::Shape::Closed { concurrency },
                ..config.plan
            };
            let spec = BaselineSpec {
                concurrency,
                connections: config.connections_for(&closed),
                warmup: config.plan.warmup.min(std::time::Duration::from_secs(1)),
                duration,
                payload: workload::Handler::Echo.payload(config.payload_bytes),
                server_threads: config.server_threads,
                progress: config.progress,
            };
            say(
                config,
                &format!(
                    "baseline: unary gRPC against a trivial server, {concurrency} clients over {} connections",
                    spec.connections
                ),
            );
            Some(baseline::measure(&runtime, &spec)?)
        }
        None => None,
    };

    let outcome = match &config.sweep {
        None => {
            let label = match &config.target {
                Target::Embedded { options, .. } => options.shape.to_string(),
                _ => "run".to_string(),
            };
            Outcome::Single(Box::new(run_target(
                &runtime,
                config,
                &config.target,
                config.plan,
                label,
            )?))
        }
        Some(grid) => {
            let Target::Embedded { options, protocol } = &config.target else {
                unreachable!("the command line only sweeps embedded clusters");
            };
            let shapes = grid.cells();
            let mut cells = Vec::with_capacity(shapes.len());
            for (i, shape) in shapes.iter().enumerate() {
                let target = Target::Embedded {
                    options: EmbeddedOptions {
                        shape: *shape,
                        ..options.clone()
                    },
                    protocol: *protocol,
                };
                let plan = sweep::plan_for(config, *shape);
                let label = format!("{shape} ({}/{})", i + 1, shapes.len());
                let summary = run_target(&runtime, config, &target, plan, label)?;
                cells.push(Cell::new(config, *shape, &plan, summary));
            }
            Outcome::Sweep(cells)
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    machine.cpu_use = cpu.and_then(|c| c.since());
    Ok(Report::new(config, machine, baseline, outcome))
}

/// One measured run of `plan` against `target`.
fn run_target(
    runtime: &Runtime,
    config: &Config,
    target: &Target,
    plan: Plan,
    label: String,
) -> Result<Summary, RunError> {
    let connections = config.connections_for(&plan);
    let mut spec = RunSpec {
        plan,
        function: config.function.clone(),
        payload_bytes: config.payload_bytes,
        timeout: config.timeout,
        expect_workers: 1,
        bucket: config.interval,
        progress: config.progress,
        label,
        memory: config.memory,
    };
    let measure = |url: String, http: bool, spec: &RunSpec| {
        runtime.block_on(async {
            let client = match http {
                true => Client::Http(HttpClient::new(
                    &url,
                    connections,
                    config.api_token.as_ref(),
                    config.tls.ca.as_deref(),
                )?),
                false => Client::Grpc(GrpcClient::new(
                    &url,
                    connections,
                    config.grpc_call,
                    Credentials::new(config.api_token.as_ref()),
                    config
                        .tls
                        .config(&url)
                        .map_err(|reason| TargetError::Address {
                            address: url.clone(),
                            reason,
                        })?,
                )?),
            };
            execute::run(client, spec).await
        })
    };
    let run = match target {
        Target::Gateway(url) => measure(url.clone(), true, &spec)?,
        Target::Scheduler(url) => measure(url.clone(), false, &spec)?,
        Target::Embedded { options, protocol } => {
            let cluster = EmbeddedCluster::start(options)?;
            let store = match cluster.data_dir() {
                Some(dir) => format!("JSONL store in {}", dir.display()),
                None => "memory store".to_string(),
            };
            say(
                config,
                &format!("embedded cluster {} up ({store})", cluster.shape()),
            );
            spec.expect_workers = options.shape.workers;
            let url = match protocol {
                Protocol::Grpc => cluster.grpc_url(),
                Protocol::Http => cluster.http_url(),
            };
            let run = measure(url, *protocol == Protocol::Http, &spec);
            cluster.stop();
            run?
        }
    };
    let mut summary = Summary::new(run.measurements, run.size);
    summary.memory = run.memory;
    Ok(summary)
}

/// A line of narration on stderr, unless progress is off.
fn say(config: &Config, line: &str) {
    if config.progress != ProgressMode::Off {
        eprintln!("{line}");
    }
}

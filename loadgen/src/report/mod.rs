//! The report of a run, and the files it is written to.
//!
//! A [`Report`] is everything a run found — the settings it ran with, the
//! machine, the baseline, and either one run's [`Summary`] or a sweep's cells
//! — and serializes to `report.json` as it stands. `--out DIR` writes:
//!
//! | file | what |
//! |---|---|
//! | `report.json` | every figure, machine-readable |
//! | `report.md` | the same as tables ([`markdown`]) |
//! | `latency.hgrm` | end-to-end latency, HdrHistogram percentile distribution in ms ([`hgrm`]); for a sweep, of its largest cell |
//! | `latency.svg` | percentile curves ([`plots`]) |
//! | `timeline.svg` | throughput, errors, p99 and running executions over time (single runs) |
//! | `sweep.svg` | throughput against W × P / run time, and utilization (sweeps) |

pub mod hgrm;
pub mod markdown;
pub mod plots;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::baseline::Baseline;
use crate::cli::{Config, Protocol, Target};
use crate::load::{Shape, Stop};
use crate::machine::Machine;
use crate::measure::Percentiles;
use crate::summary::Summary;
use crate::sweep::Cell;

/// What the load was aimed at.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    /// `embedded`, `scheduler` or `gateway`.
    pub kind: &'static str,
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// The gRPC calls one execution takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_call: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// `jsonl (fsync)` or `memory`, for an embedded cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_delay_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_threads: Option<usize>,
}

/// The load the run applied.
#[derive(Clone, Debug, Serialize)]
pub struct LoadInfo {
    /// `closed` or `open`.
    pub shape: &'static str,
    pub concurrency: Option<usize>,
    pub rate_per_s: Option<f64>,
    pub max_in_flight: Option<usize>,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: Option<f64>,
    pub count: Option<u64>,
    pub function: String,
    pub payload_bytes: usize,
    pub timeout_s: f64,
    pub client_threads: usize,
    pub interval_s: f64,
}

/// What a run produced: one summary, or a sweep's cells.
#[derive(Clone, Debug)]
pub enum Outcome {
    Single(Box<Summary>),
    Sweep(Vec<Cell>),
}

/// Everything a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub command: String,
    pub generated_at_unix_s: u64,
    pub machine: Machine,
    pub target: TargetInfo,
    pub load: LoadInfo,
    /// A single run's figures, at the top level.
    #[serde(flatten)]
    pub run: Option<Box<Summary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_per_s: Option<f64>,
    /// `throughput_per_s / baseline_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_baseline: Option<f64>,
    /// The baseline's sequential round trips (one caller), in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_latency_us: Option<Percentiles>,
    /// The run's end-to-end p50 over `baseline_latency_us.p50`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_p50_to_baseline_p50: Option<f64>,
    /// The nominal run time of the function (`sleep`, `spin`), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nominal_run_time_ms: Option<f64>,
    /// `throughput × nominal run time / capacity`: the share of the slots'
    /// time spent on the work asked for (1.0: no slot ever idle, no run
    /// longer than asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<Cell>>,
}

impl Report {
    pub fn new(
        config: &Config,
        machine: Machine,
        baseline: Option<Baseline>,
        outcome: Outcome,
    ) -> Report {
        let (run, sweep) = match outcome {
            Outcome::Single(summary) => (Some(summary), None),
            Outcome::Sweep(cells) => (None, Some(cells)),
        };
        let baseline_per_s = baseline.as_ref().map(|b| b.throughput_per_s);
        let ratio_to_baseline = match (&run, baseline_per_s) {
            (Some(run), Some(ceiling)) if ceiling > 0.0 => Some(run.throughput_per_s / ceiling),
            _ => None,
        };
        let baseline_latency_us = baseline.as_ref().map(|b| b.sequential_latency_us);
        let e2e_p50_to_baseline_p50 = match (&run, &baseline_latency_us) {
            (Some(run), Some(sequential)) if sequential.p50 > 0 => {
                Some(run.latency_us.e2e.p50 as f64 / sequential.p50 as f64)
            }
            _ => None,
        };
        let nominal = config.function.nominal_run_time();
        let efficiency = match (&run, nominal) {
            (Some(run), Some(nominal)) if run.capacity > 0 => {
                Some(run.throughput_per_s * nominal.as_secs_f64() / f64::from(run.capacity))
            }
            _ => None,
        };
        Report {
            name: config.name.clone().unwrap_or_else(|| default_name(config)),
            command: config.command_line.clone(),
            generated_at_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine,
            target: target_info(config),
            load: load_info(config),
            run,
            baseline_per_s,
            ratio_to_baseline,
            baseline_latency_us,
            e2e_p50_to_baseline_p50,
            nominal_run_time_ms: nominal.map(|n| n.as_secs_f64() * 1e3),
            efficiency,
            baseline,
            sweep,
        }
    }

    /// Errors over issued requests, over every run of the report.
    pub fn error_rate(&self) -> f64 {
        let (issued, errors) = match (&self.run, &self.sweep) {
            (Some(run), _) => (run.issued, run.errors),
            (None, Some(cells)) => cells.iter().fold((0, 0), |(i, e), c| {
                (i + c.summary.issued, e + c.summary.errors)
            }),
            (None, None) => (0, 0),
        };
        match issued {
            0 => 0.0,
            n => errors as f64 / n as f64,
        }
    }

    /// Writes every file of the report into `dir` (created if need be) and
    /// returns their paths.
    pub fn write(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<(&str, String)> = vec![
            (
                "report.json",
                serde_json::to_string_pretty(self).map_err(io::Error::other)? + "\n",
            ),
            ("report.md", markdown::report(self)),
        ];
        let baseline = self.baseline.as_ref();
        if let Some(run) = &self.run {
            files.push((
                "latency.hgrm",
                hgrm::percentile_distribution(&run.latencies.e2e, 5, 1000.0),
            ));
            files.push(("latency.svg", plots::latency(run, baseline)));
            files.push(("timeline.svg", plots::timeline(run, baseline)));
        }
        if let Some(cells) = &self.sweep {
            let largest = cells
                .iter()
                .max_by_key(|c| (c.workers * c.pool_size, c.workers));
            if let Some(cell) = largest {
                let e2e = &cell.summary.latencies.e2e;
                files.push((
                    "latency.hgrm",
                    hgrm::percentile_distribution(e2e, 5, 1000.0),
                ));
            }
            files.push(("latency.svg", plots::sweep_latency(cells)));
            files.push(("sweep.svg", plots::sweep(cells)));
        }
        let mut written = Vec::new();
        for (name, contents) in files {
            let path = dir.join(name);
            std::fs::write(&path, contents)?;
            written.push(path);
        }
        Ok(written)
    }
}

fn target_info(config: &Config) -> TargetInfo {
    let grpc_call = (!config.over_http()).then(|| config.grpc_call.as_str());
    let remote = |kind, protocol, address: &String| TargetInfo {
        kind,
        protocol,
        grpc_call,
        address: Some(address.clone()),
        workers: None,
        pool_size: None,
        store: None,
        prefetch: None,
        commit_delay_us: None,
        server_threads: None,
    };
    match &config.target {
        Target::Gateway(url) => remote("gateway", "http", url),
        Target::Scheduler(url) => remote("scheduler", "grpc", url),
        Target::Embedded { options, protocol } => TargetInfo {
            kind: "embedded",
            protocol: match protocol {
                Protocol::Grpc => "grpc",
                Protocol::Http => "http",
            },
            grpc_call,
            address: None,
            workers: config.sweep.is_none().then_some(options.shape.workers),
            pool_size: config.sweep.is_none().then_some(options.shape.pool_size),
            store: Some(match options.in_memory {
                true => "memory",
                false => "jsonl (fsync)",
            }),
            prefetch: options.prefetch,
            commit_delay_us: options.commit_delay.map(|delay| delay.as_micros() as u64),
            server_threads: Some(options.threads),
        },
    }
}

fn load_info(config: &Config) -> LoadInfo {
    let plan = &config.plan;
    let (shape, concurrency, rate, max_in_flight) = match plan.shape {
        Shape::Closed { concurrency } => ("closed", Some(concurrency), None, None),
        Shape::Open {
            rate,
            max_in_flight,
        } => ("open", None, Some(rate), Some(max_in_flight)),
    };
    let (duration_s, count) = match plan.stop {
        Stop::After(d) => (Some(d.as_secs_f64()), None),
        Stop::Count(n) => (None, Some(n)),
    };
    LoadInfo {
        shape,
        // A sweep sizes its clients per cell unless told.
        concurrency: match &config.sweep {
            Some(_) => config.concurrency,
            None => concurrency,
        },
        rate_per_s: rate,
        max_in_flight,
        connections: config.connections_for(plan),
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s,
        count,
        function: config.function.to_string(),
        payload_bytes: config.payload_bytes,
        timeout_s: config.timeout.as_secs_f64(),
        client_threads: config.client_threads,
        interval_s: config.interval.as_secs_f64(),
    }
}

fn default_name(config: &Config) -> String {
    let target = match &config.target {
        _ if config.sweep.is_some() => "a W × P sweep".to_string(),
        Target::Gateway(url) => format!("the gateway at {url}"),
        Target::Scheduler(url) => format!("the scheduler at {url}"),
        Target::Embedded { options, .. } => {
            format!(
                "an embedded {} × {}",
                options.shape.workers, options.shape.pool_size
            )
        }
    };
    let load = match config.plan.shape {
        Shape::Closed { concurrency } if config.sweep.is_none() => {
            format!("closed loop of {concurrency}")
        }
        Shape::Closed { .. } => "closed loop".to_string(),
        Shape::Open { rate, .. } => format!("open loop at {}/s", crate::svg::compact(rate)),
    };
    format!("{} on {target}, {load}", config.function)
}

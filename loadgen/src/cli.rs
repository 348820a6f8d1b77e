//! The command line, and the [`Config`] it resolves to.
//!
//! Parsing checks everything that can be checked before anything starts —
//! exactly one target, a load shape that makes sense, a sweep only on an
//! embedded cluster — so a run never dies half-way over a typo. The defaults
//! are the reference settings: a closed loop of 64 over gRPC, `echo` with a
//! 16-byte payload, 1 s of warm-up and 10 s of measurement.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use taskforge_services::auth::Token;
use taskforge_services::duration::parse_duration;
use taskforge_services::tls::ClientTlsArgs;

use crate::load::{Plan, Shape, Stop};
use crate::memory::Watched;
use crate::progress::ProgressMode;
use crate::sweep::Grid;
use crate::target::embedded::{EmbeddedOptions, Shape as ClusterShape};
use crate::target::grpc::GrpcCall;
use crate::workload::FunctionSpec;

/// Closed-loop concurrency when none is given.
pub const DEFAULT_CONCURRENCY: usize = 64;

const AFTER_HELP: &str = "\
Examples:
  taskforge-loadgen --embedded 2x4 --function echo --concurrency 64 --baseline --out reports/echo
  taskforge-loadgen --embedded 2x4 --concurrency 1 --count 5000
  taskforge-loadgen --scheduler http://127.0.0.1:50051 --rate 5000 --duration 30s
  taskforge-loadgen --sweep-workers 1,2,4 --sweep-pool 1,4,8 --function sleep:10ms

Exit status: 0 when the run ended within --max-error-rate, 1 when its error
rate passed it, 2 when it could not run.";

/// TaskForge's load generator: drives executions through a scheduler (gRPC),
/// a gateway (HTTP) or an embedded cluster, and reports throughput, latency
/// percentiles (HdrHistogram), concurrency and utilization.
#[derive(Debug, Parser)]
#[command(name = "taskforge-loadgen", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Load a gateway over HTTP, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL", help_heading = "Target")]
    pub gateway: Option<String>,
    /// Load a scheduler over gRPC, e.g. http://127.0.0.1:50051.
    #[arg(long, value_name = "URL", help_heading = "Target")]
    pub scheduler: Option<String>,
    /// Start a cluster in this process: W workers × P slots, the scheduler and
    /// the gateway on loopback, on a runtime of their own.
    #[arg(long, value_name = "WxP", help_heading = "Target")]
    pub embedded: Option<ClusterShape>,
    /// Embedded: drive the scheduler over gRPC or the gateway over HTTP.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc, help_heading = "Target")]
    pub protocol: Protocol,
    /// TLS to an https:// scheduler: the CA to trust (and a client
    /// certificate, if it asks for one).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// The target's API token (`authorization: Bearer`), if it asks for one.
    #[arg(long, env = "TASKFORGE_API_TOKEN", hide_env_values = true, value_parser = api_token, help_heading = "Target")]
    pub api_token: Option<Token>,
    /// gRPC: one TriggerAndWatchExecution stream per execution, or
    /// TriggerExecution then a WatchExecution stream (schedulers without the
    /// combined call).
    #[arg(long, value_enum, default_value_t = GrpcCall::TriggerAndWatch, help_heading = "Target")]
    pub grpc_call: GrpcCall,
    /// Embedded: keep the store in memory (default: JSONL files in a temporary
    /// directory, fsynced — durability on).
    #[arg(long, help_heading = "Target")]
    pub in_memory: bool,
    /// Sample this process's resident memory (a scheduler or `taskforge up`
    /// on this machine) into the timeline. An embedded cluster's is always
    /// sampled.
    #[arg(long, value_name = "PID", help_heading = "Target")]
    pub target_pid: Option<u32>,
    /// Embedded: make the store's temporary directory under DIR.
    #[arg(long, value_name = "DIR", help_heading = "Target")]
    pub data_dir: Option<PathBuf>,
    /// Embedded: executions a worker may hold beyond its pool size.
    #[arg(long, value_name = "N", help_heading = "Target")]
    pub prefetch: Option<u32>,
    /// Embedded: how long the store may hold an fsync for the results of
    /// quick executions it just accepted (0s: never) [default: the
    /// scheduler's].
    #[arg(long, value_name = "DURATION", value_parser = duration, help_heading = "Target")]
    pub commit_delay: Option<Duration>,
    /// Embedded (and the baseline server): threads of the cluster's runtime
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N", help_heading = "Target")]
    pub server_threads: Option<usize>,

    /// Closed loop: C clients, each sending when its last request ended
    /// [default: 64].
    #[arg(
        long,
        short = 'c',
        value_name = "C",
        conflicts_with = "rate",
        help_heading = "Load"
    )]
    pub concurrency: Option<usize>,
    /// Open loop: R requests per second on a fixed schedule, latency measured
    /// from each request's intended send time.
    #[arg(long, short = 'r', value_name = "R", help_heading = "Load")]
    pub rate: Option<f64>,
    /// Open loop: most requests out at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Load"
    )]
    pub max_in_flight: usize,
    /// Measurement time after the warm-up.
    #[arg(long, short = 'd', value_name = "DURATION", value_parser = duration, default_value = "10s", help_heading = "Load")]
    pub duration: Duration,
    /// Time before measuring (its requests are not counted).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1s", help_heading = "Load")]
    pub warmup: Duration,
    /// Stop after N measured requests instead of after --duration.
    #[arg(long, short = 'n', value_name = "N", help_heading = "Load")]
    pub count: Option<u64>,
    /// echo | sleep:10ms | spin:1ms | fail | wasm:PATH (.wasm or .wat echo module) | python:PATH | javascript:PATH (a handler of {"name": ...}) | mix:echo=80,sleep:10ms=20
    #[arg(long, short = 'f', value_parser = FunctionSpec::parse, default_value = "echo", help_heading = "Load")]
    pub function: FunctionSpec,
    /// Payload size in bytes (a JSON string for echo and fail; padded for
    /// sleep and spin).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 16,
        help_heading = "Load"
    )]
    pub payload_bytes: usize,
    /// Connections to the target [default: gRPC: one per 16 clients, at most
    /// 16, and 8 for an open loop; HTTP: one per request in flight].
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub connections: Option<usize>,
    /// Longest an execution may take from trigger to terminal state.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "30s", help_heading = "Load")]
    pub timeout: Duration,
    /// Threads of the load generator's runtime [default: the number of CPUs].
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub client_threads: Option<usize>,

    /// First measure the transport ceiling (unary gRPC against a trivial
    /// server, same concurrency) and report throughput as a ratio of it.
    #[arg(long, help_heading = "Baseline")]
    pub baseline: bool,
    /// How long the baseline measures (after the same warm-up).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5s", help_heading = "Baseline")]
    pub baseline_duration: Duration,

    /// Sweep: worker counts (with --sweep-pool; runs every cell on an embedded
    /// cluster).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "W,..",
        requires = "sweep_pool",
        help_heading = "Sweep"
    )]
    pub sweep_workers: Vec<u32>,
    /// Sweep: pool sizes.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "P,..",
        requires = "sweep_workers",
        help_heading = "Sweep"
    )]
    pub sweep_pool: Vec<u32>,

    /// Write report.json, report.md, latency.hgrm and SVG plots to DIR.
    #[arg(long, value_name = "DIR", help_heading = "Report")]
    pub out: Option<PathBuf>,
    /// Title of the report [default: from the run].
    #[arg(long, help_heading = "Report")]
    pub name: Option<String>,
    /// Exit with status 1 when errors / issued exceeds this fraction.
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.0,
        help_heading = "Report"
    )]
    pub max_error_rate: f64,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, help_heading = "Report")]
    pub progress: ProgressMode,
    /// Width of a timeline interval (throughput and p99 over time).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1s", help_heading = "Report")]
    pub interval: Duration,
}

/// The protocol an embedded cluster is driven over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

/// What the load is aimed at.
#[derive(Clone, Debug)]
pub enum Target {
    Gateway(String),
    Scheduler(String),
    Embedded {
        options: EmbeddedOptions,
        protocol: Protocol,
    },
}

/// Everything a run needs, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    /// The load shape; in a sweep, a closed loop without `--concurrency` is
    /// sized per cell.
    pub plan: Plan,
    /// `--concurrency` as given.
    pub concurrency: Option<usize>,
    pub connections: Option<usize>,
    pub grpc_call: GrpcCall,
    pub function: FunctionSpec,
    pub payload_bytes: usize,
    pub timeout: Duration,
    pub client_threads: usize,
    pub server_threads: usize,
    pub baseline: Option<Duration>,
    pub sweep: Option<Grid>,
    pub out: Option<PathBuf>,
    pub name: Option<String>,
    pub api_token: Option<Token>,
    pub tls: ClientTlsArgs,
    pub max_error_rate: f64,
    pub progress: ProgressMode,
    pub interval: Duration,
    /// Whose resident memory to sample, if anyone's.
    pub memory: Option<Watched>,
    /// The command line, for the report.
    pub command_line: String,
}

fn api_token(text: &str) -> Result<Token, String> {
    Token::new(text)
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Config {
    /// Parses the process's arguments; prints help or an error and exits if
    /// they say so.
    pub fn from_env() -> Config {
        let args: Vec<String> = std::env::args().collect();
        Config::try_from_args(args).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the first is the program name).
    pub fn try_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let command_line = command_line(&args);
        let parsed = Args::try_parse_from(&args)?;
        parsed.resolve(command_line)
    }
}

impl Args {
    fn resolve(self, command_line: String) -> Result<Config, clap::Error> {
        let fail =
            |message: String| Err(Args::command().error(ErrorKind::ArgumentConflict, message));
        let sweep = match (self.sweep_workers.is_empty(), self.sweep_pool.is_empty()) {
            (true, true) => None,
            _ => Some(Grid {
                workers: self.sweep_workers.clone(),
                pools: self.sweep_pool.clone(),
            }),
        };
        if let Some(grid) = &sweep {
            if grid
                .workers
                .iter()
                .chain(&grid.pools)
                .any(|&n| n == 0 || n > 1024)
            {
                return fail("sweep sizes must be from 1 to 1024".into());
            }
        }
        let server_threads = self.server_threads.unwrap_or_else(cpus).max(1);
        let embedded = |shape: ClusterShape| Target::Embedded {
            options: EmbeddedOptions {
                shape,
                in_memory: self.in_memory,
                data_parent: self.data_dir.clone(),
                prefetch: self.prefetch,
                commit_delay: self.commit_delay,
                threads: server_threads,
                interpreted: self.function.interpreted(),
            },
            protocol: self.protocol,
        };
        let target = match (&self.gateway, &self.scheduler, self.embedded, &sweep) {
            (Some(url), None, None, None) => Target::Gateway(url.clone()),
            (None, Some(url), None, None) => Target::Scheduler(url.clone()),
            (None, None, Some(shape), _) => embedded(shape),
            // A sweep starts its own clusters; its first cell stands in here.
            (None, None, None, Some(grid)) => embedded(ClusterShape {
                workers: grid.workers[0],
                pool_size: grid.pools[0],
            }),
            (None, None, None, None) => {
                return fail(
                    "say what to load: --gateway URL, --scheduler URL or --embedded WxP".into(),
                );
            }
            (_, _, _, Some(_)) => {
                return fail(
                    "a sweep runs on embedded clusters: drop --gateway/--scheduler".into(),
                );
            }
            _ => return fail("give only one of --gateway, --scheduler and --embedded".into()),
        };
        let embedded_only = matches!(target, Target::Embedded { .. });
        let memory = match (self.target_pid, embedded_only) {
            (Some(_), true) => {
                return fail(
                    "--target-pid is for --gateway/--scheduler: an embedded cluster's memory \
                     is sampled anyway"
                        .into(),
                );
            }
            (Some(pid), false) => Some(Watched::Pid(pid)),
            (None, true) => Some(Watched::Loadgen),
            (None, false) => None,
        };
        if let Some(Watched::Pid(pid)) = memory {
            if Watched::Pid(pid).rss_bytes().is_none() {
                return fail(format!(
                    "--target-pid {pid}: no such process on this machine (or /proc/{pid}/status \
                     is not readable)"
                ));
            }
        }
        if !embedded_only
            && (self.in_memory
                || self.prefetch.is_some()
                || self.commit_delay.is_some()
                || self.data_dir.is_some())
        {
            return fail(
                "--in-memory, --prefetch, --commit-delay and --data-dir apply to --embedded only"
                    .into(),
            );
        }

        let shape = match self.rate {
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                return fail(format!("--rate must be a positive number, got {rate}"));
            }
            Some(rate) => Shape::Open {
                rate,
                max_in_flight: self.max_in_flight.max(1),
            },
            None => Shape::Closed {
                concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
            },
        };
        let stop = match self.count {
            Some(0) => return fail("--count must be at least 1".into()),
            Some(count) => Stop::Count(count),
            None if self.duration.is_zero() => {
                return fail("--duration must be more than 0s".into());
            }
            None => Stop::After(self.duration),
        };
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return fail("--max-error-rate is a fraction from 0 to 1".into());
        }
        if self.connections == Some(0) {
            return fail("--connections must be at least 1".into());
        }
        if self.interval < Duration::from_millis(10) {
            return fail("--interval must be at least 10ms".into());
        }
        Ok(Config {
            target,
            plan: Plan {
                shape,
                warmup: self.warmup,
                stop,
            },
            concurrency: self.concurrency,
            connections: self.connections,
            grpc_call: self.grpc_call,
            function: self.function,
            payload_bytes: self.payload_bytes,
            timeout: self.timeout,
            client_threads: self.client_threads.unwrap_or_else(cpus).max(1),
            server_threads,
            baseline: self.baseline.then_some(self.baseline_duration),
            sweep,
            out: self.out,
            name: self.name,
            api_token: self.api_token,
            tls: self.tls,
            max_error_rate: self.max_error_rate,
            progress: self.progress,
            interval: self.interval,
            memory,
            command_line,
        })
    }
}

impl Config {
    /// Whether requests go over HTTP.
    pub fn over_http(&self) -> bool {
        matches!(
            self.target,
            Target::Gateway(_)
                | Target::Embedded {
                    protocol: Protocol::Http,
                    ..
                }
        )
    }

    /// The connections to open for `plan`: as given, or for gRPC one per 16
    /// closed-loop clients (at most 16; 8 for an open loop), for HTTP one per
    /// request that may be out at once (at most 1024). Fewer connections batch
    /// more frames into each write; on two cores, 4 for 64 clients measured
    /// best for the baseline and the cluster alike.
    pub fn connections_for(&self, plan: &Plan) -> usize {
        if let Some(n) = self.connections {
            return n;
        }
        match (self.over_http(), plan.shape) {
            (false, Shape::Closed { concurrency }) => concurrency.div_ceil(16).clamp(1, 16),
            (false, Shape::Open { .. }) => 8,
            (true, Shape::Closed { concurrency }) => concurrency,
            (true, Shape::Open { max_in_flight, .. }) => max_in_flight.min(1024),
        }
    }

    /// The closed-loop concurrency the baseline uses: the run's, or the
    /// default for an open loop.
    pub fn baseline_concurrency(&self) -> usize {
        match self.plan.shape {
            Shape::Closed { concurrency } => concurrency,
            Shape::Open { .. } => self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        }
    }
}

/// The command line as one shell-readable string (program name shortened).
fn command_line(args: &[String]) -> String {
    let quote = |arg: &String| {
        if !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
        {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        }
    };
    std::iter::once("taskforge-loadgen".to_string())
        .chain(args.iter().skip(1).map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Config, clap::Error> {
        Config::try_from_args(std::iter::once("taskforge-loadgen").chain(args.split_whitespace()))
    }

    #[test]
    fn the_defaults_are_a_closed_loop_of_64_for_10_seconds() {
        let config = parse("--embedded 2x4").unwrap();
        assert_eq!(
            config.plan,
            Plan {
                shape: Shape::Closed { concurrency: 64 },
                warmup: Duration::from_secs(1),
                stop: Stop::After(Duration::from_secs(10)),
            }
        );
        assert_eq!(config.connections_for(&config.plan), 4);
        assert!(!config.over_http());
        assert_eq!(config.command_line, "taskforge-loadgen --embedded 2x4");
    }

    #[test]
    fn an_open_loop_with_a_count() {
        let config = parse("--scheduler http://h:1 --rate 2500 --count 100 --warmup 0s").unwrap();
        assert_eq!(
            config.plan.shape,
            Shape::Open {
                rate: 2500.0,
                max_in_flight: 10_000
            }
        );
        assert_eq!(config.plan.stop, Stop::Count(100));
        assert_eq!(config.baseline_concurrency(), 64);
    }

    #[test]
    fn a_sweep_runs_embedded() {
        let config = parse("--sweep-workers 1,2 --sweep-pool 4,8 --function sleep:10ms").unwrap();
        let grid = config.sweep.unwrap();
        assert_eq!((grid.workers, grid.pools), (vec![1, 2], vec![4, 8]));
        assert!(matches!(config.target, Target::Embedded { .. }));
    }

    #[test]
    fn mistakes_are_refused_up_front() {
        for args in [
            "",
            "--gateway http://h:1 --scheduler http://h:2",
            "--embedded 2x4 --concurrency 8 --rate 100",
            "--embedded 2x4 --rate 0",
            "--embedded 2x4 --count 0",
            "--scheduler http://h:1 --in-memory",
            "--scheduler http://h:1 --sweep-workers 1 --sweep-pool 1",
            "--embedded 2x4 --sweep-workers 1",
            "--embedded 2x4 --function nap",
            "--embedded 2x4 --max-error-rate 2",
            "--embedded 2y4",
        ] {
            assert!(parse(args).is_err(), "accepted: {args}");
        }
    }

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args = ["x", "--function", "mix:echo=1,fail=1", "--name", "it's"].map(String::from);
        assert_eq!(
            command_line(&args),
            r"taskforge-loadgen --function mix:echo=1,fail=1 --name 'it'\''s'"
        );
    }
}

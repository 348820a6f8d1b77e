//! `taskforge`: the whole cluster in one process (`up`), or one of its parts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use taskforge_core::Policy;
use taskforge_core::lease::LeaseConfig;
use taskforge_core::scheduler::{Backoff, Retention, SchedulerConfig};
use taskforge_services::auth::{
    self, ApiTokenArgs, Credentials, Tls, Token, WorkerTokenArgs, check_exposure,
};
use taskforge_services::client;
use taskforge_services::clock::system_clock;
use taskforge_services::cluster::{Cluster, ClusterConfig};
use taskforge_services::duration::parse_duration;
use taskforge_services::gateway::{self, GatewayConfig};
use taskforge_services::net::{self, ChannelConfig};
use taskforge_services::runtime::builtin::BuiltinRuntime;
use taskforge_services::runtime::process::{Interpreter, Language, ProcessConfig, ProcessRuntime};
use taskforge_services::runtime::wasm::{WasmConfig, WasmRuntime};
use taskforge_services::runtime::{Runtime, Runtimes};
use taskforge_services::sandbox;
use taskforge_services::scheduler::{Candidate, SchedulerOptions, SchedulerService, StoreRunner};
use taskforge_services::store::{JsonlStore, MemoryStore, PostgresStore, StdFileSystem, Store};
use taskforge_services::tls::{ClientTlsArgs, ServerTlsArgs};
use taskforge_services::worker::{self, WorkerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "taskforge",
    version,
    about = "TaskForge: an event-driven distributed execution platform",
    long_about = "Register functions, trigger executions, get results. A scheduler dispatches \
                  each execution to the least-loaded worker; each worker runs a pool of slots.\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scheduler, the workers and the HTTP gateway in one process.
    Up(UpArgs),
    /// Run the scheduler alone (gRPC).
    Scheduler(SchedulerArgs),
    /// Run one worker, connecting to a scheduler.
    Worker(WorkerArgs),
    /// Run the HTTP gateway alone, in front of a scheduler.
    Gateway(GatewayArgs),
    /// Register a function from a file (a .wasm or .wat module, ...).
    Deploy(client::DeployArgs),
    /// Trigger an execution of a function; with --wait, print its result.
    Invoke(client::InvokeArgs),
    /// List executions, newest ids last.
    Jobs(client::JobsArgs),
    /// List the connected workers, their load and runtimes.
    Workers(client::WorkersArgs),
    /// Write a development CA, a scheduler certificate and a worker client
    /// certificate (PEM) into DIR, to turn on TLS across machines.
    Certs(CertsArgs),
}

#[derive(Args, Debug)]
struct CertsArgs {
    /// Where to write ca.pem, server.pem, server.key, worker.pem, worker.key.
    dir: PathBuf,
    /// A name or IP address workers and clients dial the scheduler at
    /// (repeat for each).
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Number of workers.
    #[arg(long, env = "TASKFORGE_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=256))]
    workers: u32,
    /// Slots per worker (executions each runs at once).
    #[arg(long, env = "TASKFORGE_POOL", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pool: u32,
    /// HTTP address of the gateway.
    #[arg(long, env = "TASKFORGE_HTTP", default_value = "127.0.0.1:3000")]
    http: SocketAddr,
    /// gRPC address of the scheduler.
    #[arg(long, env = "TASKFORGE_GRPC", default_value = "127.0.0.1:50051")]
    grpc: SocketAddr,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    tuning: SchedulerTuning,
    #[command(flatten)]
    gateway: GatewayTuning,
    #[command(flatten)]
    api_token: ApiTokenArgs,
    #[command(flatten)]
    worker_token: WorkerTokenArgs,
    /// Listen beyond loopback without TLS or tokens (warns at start).
    #[arg(long, env = "TASKFORGE_INSECURE")]
    insecure: bool,
    #[command(flatten)]
    runtimes: RuntimeArgs,
}

/// What the workers run.
#[derive(Args, Debug)]
struct RuntimeArgs {
    /// The runtimes the workers run, comma-separated: builtin, wasm, python,
    /// javascript. Python and JavaScript are skipped, with a warning saying
    /// why, where their interpreter or the sandbox is missing.
    #[arg(
        long,
        env = "TASKFORGE_RUNTIMES",
        default_value = "builtin,wasm,python,javascript",
        value_delimiter = ','
    )]
    runtimes: Vec<String>,
    /// Linear memory one WebAssembly execution may use, in bytes.
    #[arg(long, env = "TASKFORGE_WASM_MAX_MEMORY_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(65_536..=(4u64 << 30)))]
    wasm_max_memory_bytes: u64,
    /// The Python interpreter (a name on PATH or a path).
    #[arg(long, env = "TASKFORGE_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// The JavaScript interpreter, node (a name on PATH or a path).
    #[arg(long, env = "TASKFORGE_NODE", default_value = "node")]
    node: PathBuf,
    /// Memory one Python or JavaScript execution may use (its address space;
    /// a function may ask for less), in bytes.
    #[arg(long, env = "TASKFORGE_SANDBOX_MEMORY_BYTES", default_value_t = 512 << 20, value_parser = clap::value_parser!(u64).range((16 << 20)..=(64u64 << 30)))]
    sandbox_memory_bytes: u64,
    /// Size of each sandbox's writable /tmp, in bytes.
    #[arg(long, env = "TASKFORGE_SANDBOX_TMP_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range((1 << 20)..=(16u64 << 30)))]
    sandbox_tmp_bytes: u64,
    /// Processes and threads one sandbox may run at once.
    #[arg(long, env = "TASKFORGE_SANDBOX_PROCESSES", default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=4096))]
    sandbox_processes: u64,
    /// Sandboxes started ahead of need, per language [default: half the
    /// slots, 1 to 8]; 0 starts each when its execution comes.
    #[arg(long, env = "TASKFORGE_SANDBOX_WARM", value_parser = clap::value_parser!(u32).range(0..=256))]
    sandbox_warm: Option<u32>,
    /// A host path Python and JavaScript functions may read (bound
    /// read-only into every sandbox); repeat for more.
    #[arg(long, env = "TASKFORGE_SANDBOX_READ_ONLY", value_delimiter = ',')]
    sandbox_read_only: Vec<PathBuf>,
    /// Run Python and JavaScript without namespaces (only resource limits
    /// and a process group) where the kernel refuses them. Unsafe with
    /// untrusted code.
    #[arg(long, env = "TASKFORGE_ALLOW_UNSANDBOXED")]
    allow_unsandboxed: bool,
}

impl RuntimeArgs {
    /// The runtimes for workers running `slots` executions at once in all
    /// (one engine serves every worker of this process), with outputs capped
    /// at `max_output_bytes`.
    async fn build(&self, slots: u32, max_output_bytes: usize) -> Result<Runtimes, String> {
        let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
        for name in &self.runtimes {
            match name.trim() {
                name @ ("python" | "javascript") => {
                    let language = Language::from_name(name).expect("matched above");
                    match self.interpreted(language, slots, max_output_bytes).await {
                        Ok(runtime) => runtimes.push(Arc::new(runtime)),
                        Err(error) => tracing::warn!("not running {language}: {error}"),
                    }
                }
                "builtin" => runtimes.push(Arc::new(BuiltinRuntime::new())),
                "wasm" => {
                    let config = WasmConfig {
                        max_memory_bytes: self.wasm_max_memory_bytes as usize,
                        max_output_bytes,
                        // Every slot may run a module at once, with room to spare
                        // for attempts still stopping.
                        max_instances: slots.saturating_mul(2).max(16),
                        ..WasmConfig::default()
                    };
                    runtimes.push(Arc::new(WasmRuntime::new(config)?));
                }
                other => {
                    return Err(format!(
                        "unknown runtime {other:?} in --runtimes: use builtin, wasm, python, javascript"
                    ));
                }
            }
        }
        if runtimes.is_empty() {
            return Err("--runtimes names no runtime that can run here".to_string());
        }
        Ok(Runtimes::new(runtimes))
    }

    /// Python or JavaScript in sandboxes: the interpreter found, and a probe
    /// execution run, or why not.
    async fn interpreted(
        &self,
        language: Language,
        slots: u32,
        max_output_bytes: usize,
    ) -> Result<ProcessRuntime, String> {
        let command = match language {
            Language::Python => &self.python,
            Language::JavaScript => &self.node,
        };
        let command = command.clone();
        let interpreter =
            tokio::task::spawn_blocking(move || Interpreter::find(language, command.as_os_str()))
                .await
                .map_err(|error| error.to_string())??;
        let launcher = std::env::current_exe()
            .map_err(|error| format!("cannot find this program to launch sandboxes: {error}"))?;
        let config = ProcessConfig {
            memory_bytes: self.sandbox_memory_bytes,
            tmp_bytes: self.sandbox_tmp_bytes,
            processes: self.sandbox_processes,
            // Started ahead: half the slots, so a burst finds some ready
            // while the rest start.
            warm: usize::try_from(
                self.sandbox_warm
                    .unwrap_or_else(|| slots.div_ceil(2).clamp(1, 8)),
            )
            .unwrap_or(1),
            max_output_bytes,
            extra_read_only: self.sandbox_read_only.clone(),
            ..ProcessConfig::new(launcher)
        };
        match ProcessRuntime::start(interpreter.clone(), config.clone()).await {
            Ok(runtime) => {
                tracing::info!(program = %interpreter.program.display(), "running {language} in sandboxes");
                Ok(runtime)
            }
            Err(error) if self.allow_unsandboxed => {
                tracing::warn!(
                    "{error}; running {language} WITHOUT a sandbox (--allow-unsandboxed): \
                     only resource limits and a process group contain it"
                );
                ProcessRuntime::start(
                    interpreter,
                    ProcessConfig {
                        isolate: false,
                        ..config
                    },
                )
                .await
            }
            Err(error) => Err(format!(
                "{error} (start with --allow-unsandboxed to run it without namespaces)"
            )),
        }
    }
}

#[derive(Args, Debug)]
struct SchedulerArgs {
    /// gRPC address to listen on.
    #[arg(long, env = "TASKFORGE_GRPC", default_value = "127.0.0.1:50051")]
    grpc: SocketAddr,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    tuning: SchedulerTuning,
    #[command(flatten)]
    api_token: ApiTokenArgs,
    #[command(flatten)]
    worker_token: WorkerTokenArgs,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Listen beyond loopback without TLS or tokens (warns at start).
    #[arg(long, env = "TASKFORGE_INSECURE")]
    insecure: bool,
    /// With --store: the URL clients and workers reach this scheduler at,
    /// which standbys hand them while it leads (default: http[s]://the
    /// --grpc address; give it when listening on all interfaces).
    #[arg(
        long,
        env = "TASKFORGE_ADVERTISE",
        value_name = "URL",
        requires = "store"
    )]
    advertise: Option<String>,
    /// With --store: how long a leader's lease lasts unrenewed; a standby
    /// takes over a dead leader's work after about this long.
    #[arg(long, env = "TASKFORGE_LEASE", default_value = "4s", value_parser = lease_duration)]
    lease: Duration,
}

/// A lease of 1 s to 1 h; the renewal and retry intervals follow from it.
fn lease_duration(text: &str) -> Result<Duration, String> {
    let lease = duration(text)?;
    match (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&lease) {
        true => Ok(lease),
        false => Err(format!("a lease of {text} is outside 1s..=1h")),
    }
}

/// The lease timings for a lease of `duration`: renewed at a quarter of it,
/// standbys asking at an eighth, a leader stopping an eighth early.
fn lease_config(duration: Duration) -> LeaseConfig {
    LeaseConfig {
        duration,
        renew_every: duration / 4,
        retry_every: duration / 8,
        margin: duration / 8,
    }
}

#[derive(Args, Debug)]
struct StorageArgs {
    /// Directory for the store's files (functions.jsonl, executions.jsonl,
    /// and the finished executions' history/).
    #[arg(long, env = "TASKFORGE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Keep everything in memory: nothing survives a restart.
    #[arg(long, env = "TASKFORGE_IN_MEMORY", conflicts_with = "store")]
    in_memory: bool,
    /// Keep the state in PostgreSQL instead of --data-dir
    /// (postgres://user[:password]@host[:port]/database); the schema is
    /// created and migrated on start.
    #[arg(long, env = "TASKFORGE_DATABASE_URL", value_name = "URL", value_parser = database_url, hide_env_values = true)]
    store: Option<String>,
}

fn database_url(text: &str) -> Result<String, String> {
    match text.starts_with("postgres://") || text.starts_with("postgresql://") {
        true => Ok(text.to_string()),
        false => Err(format!(
            "{text:?} is not a PostgreSQL address: give postgres://user@host:port/database \
             (or leave --store out for the JSON Lines files in --data-dir)"
        )),
    }
}

#[derive(Args, Debug)]
struct SchedulerTuning {
    /// A worker not heard from for this long is declared lost.
    #[arg(long, env = "TASKFORGE_HEARTBEAT_TIMEOUT", default_value = "2500ms", value_parser = duration)]
    heartbeat_timeout: Duration,
    /// Most executions waiting to start; beyond it a trigger gets 429.
    #[arg(long, env = "TASKFORGE_QUEUE_LIMIT", default_value_t = 100_000)]
    queue_limit: usize,
    /// Executions a worker may hold beyond its pool size (prefetched), so a
    /// freed slot starts the next one without waiting a round trip.
    #[arg(long, env = "TASKFORGE_PREFETCH", default_value_t = 2)]
    prefetch: u32,
    /// How long an idle store may hold an fsync for the results of quick
    /// executions it just accepted, so one fsync makes both durable (0: never).
    #[arg(long, env = "TASKFORGE_COMMIT_DELAY", default_value = "250us", value_parser = commit_delay)]
    commit_delay: Duration,
    /// Default starts per execution before it fails (per function or invocation otherwise).
    #[arg(long, env = "TASKFORGE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Default start-to-close timeout of an execution.
    #[arg(long, env = "TASKFORGE_DEFAULT_TIMEOUT", default_value = "5m", value_parser = duration)]
    default_timeout: Duration,
    /// How long an execution may wait for its first start.
    #[arg(long, env = "TASKFORGE_SCHEDULE_TO_START", default_value = "10m", value_parser = duration)]
    schedule_to_start: Duration,
    /// Terminal executions are forgotten after this long.
    #[arg(long, env = "TASKFORGE_RETENTION_AGE", default_value = "24h", value_parser = duration)]
    retention_age: Duration,
    /// At most this many terminal executions are remembered.
    #[arg(long, env = "TASKFORGE_RETENTION_COUNT", default_value_t = 1_000_000)]
    retention_count: usize,
    /// Largest payload (and output) accepted, in bytes.
    #[arg(long, env = "TASKFORGE_MAX_PAYLOAD_BYTES", default_value_t = 1 << 20, value_parser = blob_limit)]
    max_payload_bytes: usize,
    /// Largest code a function may be registered with, in bytes.
    #[arg(long, env = "TASKFORGE_MAX_CODE_BYTES", default_value_t = 1 << 20, value_parser = blob_limit)]
    max_code_bytes: usize,
    /// Attempts in a row a worker may leave unanswered (timed out by the
    /// scheduler) before it gets no new work until it answers.
    #[arg(long, env = "TASKFORGE_QUARANTINE_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    quarantine_after: u32,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// Scheduler to connect to; with standbys, all of them (URL,URL,...):
    /// the worker finds the leader and follows it.
    #[arg(
        long,
        env = "TASKFORGE_SCHEDULER",
        default_value = "http://127.0.0.1:50051"
    )]
    scheduler: String,
    /// Slots: executions run at once.
    #[arg(long, env = "TASKFORGE_POOL", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pool: u32,
    /// This worker's id (unique in the cluster). Default: worker-<pid>.
    #[arg(long, env = "TASKFORGE_WORKER_ID")]
    id: Option<String>,
    /// How often to send a heartbeat.
    #[arg(long, env = "TASKFORGE_HEARTBEAT_INTERVAL", default_value = "500ms", value_parser = duration)]
    heartbeat_interval: Duration,
    /// Largest output reported, in bytes; a larger one fails its execution.
    /// Keep it at the scheduler's --max-payload-bytes.
    #[arg(long, env = "TASKFORGE_MAX_OUTPUT_BYTES", default_value_t = 1 << 20, value_parser = blob_limit)]
    max_output_bytes: usize,
    #[command(flatten)]
    worker_token: WorkerTokenArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    runtimes: RuntimeArgs,
}

#[derive(Args, Debug)]
struct GatewayArgs {
    /// HTTP address to listen on.
    #[arg(long, env = "TASKFORGE_HTTP", default_value = "127.0.0.1:3000")]
    http: SocketAddr,
    /// Scheduler to send requests to; with standbys, all of them
    /// (URL,URL,...): requests go to whichever leads.
    #[arg(
        long,
        env = "TASKFORGE_SCHEDULER",
        default_value = "http://127.0.0.1:50051"
    )]
    scheduler: String,
    #[command(flatten)]
    gateway: GatewayTuning,
    #[command(flatten)]
    api_token: ApiTokenArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Serve HTTPS with this certificate (PEM, its chain after it).
    #[arg(long, env = "TASKFORGE_GATEWAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS certificate's private key (PEM).
    #[arg(long, env = "TASKFORGE_GATEWAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen beyond loopback without TLS or a token (warns at start).
    #[arg(long, env = "TASKFORGE_INSECURE")]
    insecure: bool,
}

#[derive(Args, Debug)]
struct GatewayTuning {
    /// Largest request body, in bytes.
    #[arg(long, env = "TASKFORGE_BODY_LIMIT", default_value_t = 1 << 20)]
    body_limit: usize,
}

/// Limits on payloads, outputs and code: 1 byte to 32 MiB, so every message
/// stays under what workers and the gateway read (`net::FROM_SCHEDULER_LIMIT`).
fn blob_limit(text: &str) -> Result<usize, String> {
    const MAX: usize = 32 << 20;
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if bytes == 0 || bytes > MAX {
        return Err(format!("{bytes} is not between 1 and {MAX} bytes (32 MiB)"));
    }
    Ok(bytes)
}

/// At most 10 ms: every acknowledgement of a quick execution may wait this long.
fn commit_delay(text: &str) -> Result<Duration, String> {
    let delay = duration(text)?;
    match delay <= Duration::from_millis(10) {
        true => Ok(delay),
        false => Err(format!("{text:?} is too long a commit delay: at most 10ms")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| format!("{text:?} is not a duration: {error}"))
}

impl SchedulerTuning {
    fn options(&self) -> SchedulerOptions {
        SchedulerOptions {
            core: SchedulerConfig {
                heartbeat_timeout: self.heartbeat_timeout,
                queue_limit: self.queue_limit,
                prefetch: self.prefetch,
                retry_backoff: Backoff::default(),
                timeout_grace: Duration::from_secs(5),
                retention: Retention {
                    max_age: self.retention_age,
                    max_count: self.retention_count,
                },
                quarantine_after: self.quarantine_after,
                // Heartbeats come every second by default: a session silent
                // for half the timeout has missed several.
                takeover_after: self.heartbeat_timeout / 2,
                // A worker that has not reconnected by then would be
                // declared lost anyway.
                adoption_window: self.heartbeat_timeout,
            },
            default_policy: Policy {
                max_attempts: self.max_attempts,
                timeout: self.default_timeout,
                schedule_to_start: Some(self.schedule_to_start),
            },
            max_payload_bytes: self.max_payload_bytes,
            max_output_bytes: self.max_payload_bytes,
            max_code_bytes: self.max_code_bytes,
            id_seed: id_seed(),
            store_runner: StoreRunner::Thread,
            commit_delay: self.commit_delay,
            ..SchedulerOptions::default()
        }
    }
}

impl GatewayTuning {
    fn config(&self, api_token: Option<&Token>) -> GatewayConfig {
        GatewayConfig {
            body_limit: self.body_limit,
            api_token: api_token.map(|token| token.expose().to_string()),
            ..GatewayConfig::default()
        }
    }
}

/// The gateway without its own certificate.
const GATEWAY_TLS: Tls = Tls::Off("--tls-cert and --tls-key on `taskforge gateway`");

/// The flags of the tokens a server lacks (for `check_exposure`).
fn missing(tokens: &[(&'static str, &Option<Token>)]) -> Vec<&'static str> {
    tokens
        .iter()
        .filter(|(_, token)| token.is_none())
        .map(|(flag, _)| *flag)
        .collect()
}

impl StorageArgs {
    fn open(&self) -> Result<Box<dyn Store>, String> {
        if self.in_memory {
            return Ok(Box::new(MemoryStore::new()));
        }
        if let Some(url) = &self.store {
            return PostgresStore::open(url)
                .map(|store| Box::new(store) as Box<dyn Store>)
                .map_err(|error| error.to_string());
        }
        JsonlStore::open(Arc::new(StdFileSystem), self.data_dir.clone())
            .map(|store| Box::new(store) as Box<dyn Store>)
            .map_err(|error| error.to_string())
    }
}

/// Ids only need to differ between runs; the wall clock at start is enough.
fn id_seed() -> u64 {
    (system_clock())() ^ u64::from(std::process::id()).rotate_left(32)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The sandbox's own processes (see `taskforge_services::sandbox`): started
    // by workers, not by people, so not in the help; single-threaded, before
    // any runtime or logging starts.
    if let Some(code) = sandbox::run_if_sandbox_process() {
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, String> {
    let served = match command {
        Command::Up(args) => up(args).await,
        Command::Scheduler(args) => scheduler(args).await,
        Command::Worker(args) => run_worker(args).await,
        Command::Gateway(args) => run_gateway(args).await,
        Command::Deploy(args) => return print(client::deploy(args).await),
        Command::Invoke(args) => return print(client::invoke(args).await),
        Command::Jobs(args) => return print(client::jobs(args).await),
        Command::Workers(args) => return print(client::workers(args).await),
        Command::Certs(args) => {
            for path in taskforge_services::tls::generate(&args.dir, &args.hosts)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    };
    served.map(|()| ExitCode::SUCCESS)
}

/// Prints a client command's answer; exit code 2 when it reports an
/// execution that did not complete (1 is for errors).
fn print(printed: Result<client::Printed, String>) -> Result<ExitCode, String> {
    let printed = printed?;
    print!("{}", printed.text);
    Ok(if printed.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn up(args: UpArgs) -> Result<(), String> {
    let api_token = args.api_token.token()?;
    let worker_token = args.worker_token.token()?;
    let missing_tokens = missing(&[
        ("--api-token", &api_token),
        ("--worker-token", &worker_token),
    ]);
    // Its own workers and gateway dial it over loopback in plaintext: for
    // TLS, run the parts as separate processes.
    let tls = Tls::Off("run `taskforge scheduler` with --tls-cert and --tls-key");
    check_exposure(
        "the scheduler's gRPC",
        args.grpc,
        tls,
        &missing_tokens,
        args.insecure,
    )?;
    let gateway_tokens = missing(&[("--api-token", &api_token)]);
    check_exposure(
        "the gateway",
        args.http,
        GATEWAY_TLS,
        &gateway_tokens,
        args.insecure,
    )?;
    let config = ClusterConfig {
        workers: args.workers,
        pool_size: args.pool,
        data_dir: (!args.storage.in_memory).then(|| args.storage.data_dir.clone()),
        database_url: args.storage.store.clone(),
        http: args.http,
        grpc: args.grpc,
        scheduler: SchedulerOptions {
            api_token: api_token.clone(),
            worker_token: worker_token.clone(),
            ..args.tuning.options()
        },
        gateway: args.gateway.config(api_token.as_ref()),
        channel: ChannelConfig::default(),
        worker: WorkerConfig {
            max_output_bytes: args.tuning.max_payload_bytes,
            runtimes: args
                .runtimes
                .build(
                    args.workers.saturating_mul(args.pool),
                    args.tuning.max_payload_bytes,
                )
                .await?,
            token: worker_token,
            ..WorkerConfig::new("worker", args.pool)
        },
    };
    let cluster = Cluster::start(config)
        .await
        .map_err(|error| error.to_string())?;
    let url = format!("http://{}", cluster.http_addr);
    println!(
        "TaskForge is up: {} workers x {} slots, gateway {url}, scheduler gRPC {}",
        args.workers, args.pool, cluster.grpc_addr
    );
    println!("  curl -s {url}/functions -H 'content-type: application/json' \\");
    println!("    -d '{{\"name\":\"greet\",\"language\":\"builtin\",\"code\":\"sum_and_greet\"}}'");
    println!(
        "  curl -s '{url}/invoke/<function_id>?wait=5s' -H 'content-type: application/json' -d '{{\"name\":\"Ada\",\"a\":2,\"b\":3}}'"
    );
    println!("Press Ctrl-C to stop.");
    terminated().await;
    tracing::info!("shutting down: draining workers");
    cluster.shutdown().await;
    Ok(())
}

async fn scheduler(args: SchedulerArgs) -> Result<(), String> {
    let api_token = args.api_token.token()?;
    let worker_token = args.worker_token.token()?;
    let missing_tokens = missing(&[
        ("--api-token", &api_token),
        ("--worker-token", &worker_token),
    ]);
    let tls = args.tls.config()?;
    let exposed = match tls {
        Some(_) => Tls::On,
        None => Tls::Off("--tls-cert and --tls-key"),
    };
    check_exposure(
        "the scheduler's gRPC",
        args.grpc,
        exposed,
        &missing_tokens,
        args.insecure,
    )?;
    let options = SchedulerOptions {
        api_token,
        worker_token,
        tls,
        require_worker_certificates: args.tls.client_ca.is_some(),
        ..args.tuning.options()
    };
    if let Some(database_url) = args.storage.store.clone() {
        return elected_scheduler(args, options, database_url).await;
    }
    let store = args.storage.open()?;
    let service = SchedulerService::load_on_own_thread(options, store, system_clock())
        .map_err(|error| error.to_string())?;
    let (listener, _) = listen(args.grpc).await?;
    service
        .serve(net::tcp_incoming(listener), terminated())
        .await
        .map_err(|error| error.to_string())
}

/// Binds the scheduler's gRPC address and says where it listens.
async fn listen(grpc: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(grpc)
        .await
        .map_err(|error| format!("could not listen on {grpc}: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("could not listen on {grpc}: {error}"))?;
    // On stdout, so a supervisor (or a test) asking for port 0 learns the port.
    println!("scheduler listening on {addr}");
    Ok((listener, addr))
}

/// One of any number of schedulers on one database: it serves as a standby
/// and leads while it holds the lease.
async fn elected_scheduler(
    args: SchedulerArgs,
    options: SchedulerOptions,
    database_url: String,
) -> Result<(), String> {
    let (listener, addr) = listen(args.grpc).await?;
    let scheme = match options.tls {
        Some(_) => "https",
        None => "http",
    };
    let advertise = args
        .advertise
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let holder = format!("{advertise} (pid {})", std::process::id());
    let candidate = Candidate {
        options,
        database_url,
        advertise,
        holder,
        lease: lease_config(args.lease),
    };
    candidate
        .serve(system_clock(), net::tcp_incoming(listener), terminated())
        .await
        .map_err(|error| error.to_string())
}

async fn run_worker(args: WorkerArgs) -> Result<(), String> {
    let channel = net::connect_schedulers(&args.scheduler, &ChannelConfig::default(), |url| {
        args.tls.config(url)
    })?;
    let id = args
        .id
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let config = WorkerConfig {
        heartbeat_interval: args.heartbeat_interval,
        max_output_bytes: args.max_output_bytes,
        runtimes: args
            .runtimes
            .build(args.pool, args.max_output_bytes)
            .await?,
        seed: id_seed(),
        token: args.worker_token.token()?,
        ..WorkerConfig::new(id, args.pool)
    };
    worker::run(config, channel, system_clock(), terminated())
        .await
        .map_err(|error| error.to_string())
}

async fn run_gateway(args: GatewayArgs) -> Result<(), String> {
    let channel = net::connect_schedulers(&args.scheduler, &ChannelConfig::default(), |url| {
        args.tls.config(url)
    })?;
    let api_token = args.api_token.token()?;
    let https = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(gateway::https::server_config(cert, key)?),
        _ => None,
    };
    let gateway_tokens = missing(&[("--api-token", &api_token)]);
    let exposed = match https {
        Some(_) => Tls::On,
        None => GATEWAY_TLS,
    };
    check_exposure(
        "the gateway",
        args.http,
        exposed,
        &gateway_tokens,
        args.insecure,
    )?;
    let config = args.gateway.config(api_token.as_ref());
    let credentials = Credentials::new(api_token.as_ref());
    let client = auth::scheduler_client(channel, credentials)
        .max_decoding_message_size(net::FROM_SCHEDULER_LIMIT);
    let router = gateway::router(client, config);
    let listener = TcpListener::bind(args.http)
        .await
        .map_err(|error| format!("could not listen on {}: {error}", args.http))?;
    // On stdout, so a supervisor (or a test) asking for port 0 learns it.
    let addr = listener
        .local_addr()
        .map_err(|error| format!("could not listen on {}: {error}", args.http))?;
    println!("gateway listening on {addr}");
    let served = match https {
        Some(config) => {
            let listener = gateway::https::TlsListener::new(listener, config)
                .map_err(|error| error.to_string())?;
            gateway::serve(listener, router, terminated()).await
        }
        None => gateway::serve(net::http_listener(listener), router, terminated()).await,
    };
    served.map_err(|error| error.to_string())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

//! The cluster under test: the real scheduler, workers and gateway, each on a
//! turmoil host, wired through the services' network and filesystem seams.
//!
//! Every host runs the same library code the `taskforge` binary runs — not a
//! model of it. A host's software is a closure that builds the service from
//! scratch, so `bounce` (and the restart after a crash) re-runs start-up the
//! way a real restart does: the scheduler reloads its JSON Lines store from the
//! simulated disk (whatever survived the crash), workers dial in again under
//! the same id and start over with an empty pool.
//!
//! The timings are scaled down from the binary's defaults so that a run of a
//! few simulated seconds sees workers declared lost, reconnects and retries;
//! they keep the relations the design asks for: every timeout well above the
//! worst simulated round trip, the heartbeat timeout a few heartbeat intervals,
//! and the keepalive timeout (which closes a wedged connection) above the
//! heartbeat timeout (which declares its worker lost), so that results held on
//! a link can still arrive after their worker was declared lost — and must be
//! fenced off.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskforge_core::Policy;
use taskforge_core::scheduler::{Backoff, Retention, SchedulerConfig};
use taskforge_services::auth::{self, Credentials};
use taskforge_services::clock::WallClock;
use taskforge_services::functions::SleepClock;
use taskforge_services::gateway::{self, GatewayConfig};
use taskforge_services::languages::Languages;
use taskforge_services::net::ChannelConfig;
use taskforge_services::runtime::builtin::BuiltinRuntime;
use taskforge_services::runtime::{Runtime, Runtimes};
use taskforge_services::scheduler::{SchedulerOptions, SchedulerService, StoreRunner};
use taskforge_services::store::JsonlStore;
use taskforge_services::worker::{self, WorkerConfig};

use crate::fs::{Power, SimFileSystem};
use crate::net::{self, GATEWAY_PORT, SCHEDULER_PORT};
use crate::seed::Seed;
use crate::trace::{Event, Recorder, WorkerIndex};

/// Host names.
pub const SCHEDULER: &str = "scheduler";
pub const GATEWAY: &str = "gateway";

pub fn worker_host(worker: WorkerIndex) -> String {
    format!("worker-{worker}")
}

/// A runtime, by the language name functions are registered in and workers
/// announce in their hello.
pub type RuntimeName = &'static str;

/// The runtimes a worker runs.
pub type RuntimeSet = &'static [RuntimeName];

/// The platform's own runtime of built-in handlers.
pub const BUILTIN: RuntimeName = "builtin";
/// The same handlers under another name, so that workers can differ in what
/// they run without a second real runtime (wasm would start threads the
/// simulation cannot step).
pub const ALT: RuntimeName = "alt";
/// A language the scheduler accepts but no worker runs: its executions can
/// only fail, once their schedule-to-start deadline passes.
pub const GHOST: RuntimeName = "ghost";

pub const ONLY_BUILTIN: RuntimeSet = &[BUILTIN];
pub const ONLY_ALT: RuntimeSet = &[ALT];
pub const BUILTIN_AND_ALT: RuntimeSet = &[BUILTIN, ALT];

/// 2025-01-01T00:00:00Z: the simulated wall clock starts here, in every run.
pub const EPOCH_SECS: u64 = 1_735_689_600;

pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_SECS)
}

/// Where the scheduler keeps its store on its simulated disk.
const DATA_DIR: &str = "/var/lib/taskforge";

/// How often workers send heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// Silence after which the scheduler declares a worker lost.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);
/// HTTP/2 keepalive on every connection, both ends.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(1000);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long past an attempt's own timeout the scheduler waits for its result
/// before it counts the attempt lost.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(2);
/// Scheduler-side timeouts in a row after which a session gets no new work.
pub const QUARANTINE_AFTER: u32 = 3;
/// A second connection under a worker id is refused while the first was heard
/// from within this long: above the heartbeat interval, below the heartbeat
/// timeout.
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(500);

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Pool size of `worker-1`, `worker-2`, ...
    pub pool_sizes: Vec<u32>,
    /// What `worker-1`, `worker-2`, ... run (as many as `pool_sizes`).
    pub runtimes: Vec<RuntimeSet>,
    /// Executions the scheduler may put on a worker beyond its pool size.
    pub prefetch: u32,
    /// Whether a gateway host serves HTTP.
    pub gateway: bool,
}

impl Shape {
    pub fn workers(&self) -> impl Iterator<Item = WorkerIndex> {
        1..=self.pool_sizes.len()
    }

    /// What `worker` runs.
    pub fn runtimes_of(&self, worker: WorkerIndex) -> RuntimeSet {
        self.runtimes[worker - 1]
    }

    /// Whether some worker of `workers` runs `runtime`.
    pub fn served_by(&self, workers: &[WorkerIndex], runtime: RuntimeName) -> bool {
        workers
            .iter()
            .any(|&worker| self.runtimes_of(worker).contains(&runtime))
    }
}

/// The channel settings of every client of the scheduler.
pub fn channel_config() -> ChannelConfig {
    ChannelConfig {
        connect_timeout: Duration::from_millis(500),
        keepalive_interval: KEEPALIVE_INTERVAL,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
    }
}

/// The simulated wall clock, in microseconds since the Unix epoch.
pub fn clock() -> WallClock {
    Arc::new(|| {
        let since_epoch = turmoil::since_epoch().unwrap_or(Duration::from_secs(EPOCH_SECS));
        since_epoch.as_micros() as u64
    })
}

/// The policy of an execution that asks for nothing else.
pub fn default_policy() -> Policy {
    Policy::default()
}

/// The scheduler's options, scaled for the simulation.
fn scheduler_options(shape: &Shape, seed: Seed, incarnation: u32) -> SchedulerOptions {
    SchedulerOptions {
        core: SchedulerConfig {
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
            queue_limit: 10_000,
            prefetch: shape.prefetch,
            retry_backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(800),
            },
            timeout_grace: TIMEOUT_GRACE,
            // Nothing is forgotten during a run: a status query at the end
            // must still find every execution.
            retention: Retention {
                max_age: Duration::from_secs(24 * 3600),
                max_count: 1_000_000,
            },
            quarantine_after: QUARANTINE_AFTER,
            takeover_after: TAKEOVER_AFTER,
            adoption_window: HEARTBEAT_TIMEOUT,
        },
        default_policy: default_policy(),
        // A restarted scheduler draws other ids (the actor also mixes in what
        // it recovered).
        id_seed: seed
            .derive("execution ids")
            .wrapping_add(u64::from(incarnation)),
        // No threads in the simulation: the committer is a task on the host.
        store_runner: StoreRunner::Task,
        keepalive_interval: KEEPALIVE_INTERVAL,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
        // Functions may be registered in any runtime of the simulation; which
        // worker runs them is dispatch's business, not registration's.
        languages: Languages::standard()
            .with_builtin_alias(ALT)
            .with_builtin_alias(GHOST),
        ..SchedulerOptions::default()
    }
}

/// Registers the scheduler, the workers and (if the shape says so) the
/// gateway on `sim`.
pub fn install(
    sim: &mut turmoil::Sim<'_>,
    shape: &Shape,
    seed: Seed,
    recorder: &Recorder,
    power: &Power,
) {
    install_scheduler(sim, shape, seed, recorder, power);
    for worker in shape.workers() {
        install_worker(sim, shape, worker, seed, recorder);
    }
    if shape.gateway {
        sim.host(GATEWAY, || async {
            let channel = net::channel(SCHEDULER, SCHEDULER_PORT, &channel_config());
            let config = GatewayConfig {
                rpc_timeout: Duration::from_secs(2),
                max_wait: Duration::from_secs(5),
                ..GatewayConfig::default()
            };
            let router =
                gateway::router(auth::scheduler_client(channel, Credentials::none()), config);
            let listener = net::bind(GATEWAY_PORT).await?;
            gateway::serve(net::HttpListener(listener), router, std::future::pending()).await?;
            Ok(())
        });
    }
}

fn install_scheduler(
    sim: &mut turmoil::Sim<'_>,
    shape: &Shape,
    seed: Seed,
    recorder: &Recorder,
    power: &Power,
) {
    let shape = shape.clone();
    let recorder = recorder.clone();
    let power = power.clone();
    let incarnations = AtomicU32::new(0);
    sim.host(SCHEDULER, move || {
        let incarnation = incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        let options = SchedulerOptions {
            observer: Some(recorder.scheduler_observer(incarnation)),
            ..scheduler_options(&shape, seed, incarnation)
        };
        let recorder = recorder.clone();
        let power = power.clone();
        async move {
            recorder.record(Event::SchedulerStarted { incarnation });
            let fs = Arc::new(SimFileSystem::new(power.clone()));
            let service = JsonlStore::open(fs, PathBuf::from(DATA_DIR))
                .map_err(taskforge_services::scheduler::SchedulerError::from)
                .and_then(|store| SchedulerService::load(options, Box::new(store), clock()));
            let service = match service {
                Ok(service) => service,
                // The power went out while it started: it is about to be
                // crashed. Anything else is a real failure to start.
                Err(_) if power.is_cut() => std::future::pending().await,
                Err(error) => return Err(format!("the scheduler cannot start: {error}").into()),
            };
            let listener = net::bind(SCHEDULER_PORT).await?;
            service
                .serve(net::incoming(listener), std::future::pending())
                .await?;
            Ok(())
        }
    });
}

fn install_worker(
    sim: &mut turmoil::Sim<'_>,
    shape: &Shape,
    worker: WorkerIndex,
    seed: Seed,
    recorder: &Recorder,
) {
    let pool_size = shape.pool_sizes[worker - 1];
    let runtimes = shape.runtimes_of(worker);
    let recorder = recorder.clone();
    let incarnations = AtomicU32::new(0);
    let jitter = seed.derive(&worker_host(worker));
    sim.host(worker_host(worker), move || {
        let incarnation = incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        let config = WorkerConfig {
            heartbeat_interval: HEARTBEAT_INTERVAL,
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            seed: jitter.wrapping_add(u64::from(incarnation)),
            observer: Some(recorder.task_observer(worker, incarnation)),
            runtimes: builtin_runtimes(runtimes),
            ..WorkerConfig::new(worker_host(worker), pool_size)
        };
        let recorder = recorder.clone();
        run_worker(worker, incarnation, runtimes, config, recorder)
    });
}

/// The built-in handlers under each name of `names`.
fn builtin_runtimes(names: RuntimeSet) -> Runtimes {
    Runtimes::new(names.iter().map(|&name| {
        let runtime = BuiltinRuntime::named(name).sleeping_on(SleepClock::Tokio);
        Arc::new(runtime) as Arc<dyn Runtime>
    }))
}

async fn run_worker(
    worker: WorkerIndex,
    incarnation: u32,
    runtimes: RuntimeSet,
    config: WorkerConfig,
    recorder: Recorder,
) -> turmoil::Result {
    recorder.record(Event::WorkerStarted {
        worker,
        incarnation,
        runtimes,
    });
    let channel = net::channel(SCHEDULER, SCHEDULER_PORT, &channel_config());
    worker::run(config, channel, clock(), std::future::pending()).await?;
    Ok(())
}

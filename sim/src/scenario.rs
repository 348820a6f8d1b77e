//! The scenarios: for each, what a seed turns into — the cluster's shape, the
//! workload, the network's latency and the fault schedule.
//!
//! Every scenario runs the same cluster and clients; they differ in the faults
//! they inject, each aimed at one part of the failure semantics:
//!
//! | scenario | faults | what it presses on |
//! |---|---|---|
//! | `steady_load` | none | dispatch, pool limits, outputs, the watch/status agreement |
//! | `worker_crash` | a busy worker dies for good, cleanly or silently | re-queueing lost work; the heartbeat timeout catching a silent death |
//! | `worker_bounce` | a busy worker restarts under the same id, sometimes behind a held link | replacing a session; fencing its stale results |
//! | `partition` | scheduler ↔ worker (and client) links cut, then repaired | heartbeat loss, reconnects, late results dropped |
//! | `hold_release` | links held for a while, then released all at once | long delays; stale results fenced; no duplicate visible |
//! | `scheduler_crash` | the scheduler crashes (or its disk loses power mid-write) and restarts | ACCEPTED survives; unsynced writes lost; recovery; workers reconnect |
//! | `random` | a mix of all of these, plus latency changes | their interactions |
//! | `black_hole` | a rogue worker takes work and never answers, an impostor keeps claiming `worker-1`'s id; sometimes a real worker crashes or is cut off | scheduler-side timeouts retried elsewhere; quarantine; refused id takeover |
//! | `runtimes` | workers that run `builtin`, `alt` or both crash, bounce, are cut off or held — sometimes every worker of one runtime at once — and a few requests need `ghost`, which no worker runs | capability-aware dispatch; one runtime's wait not blocking another's; the schedule-to-start failure of a runtime nobody runs |

use std::ops::Range;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::cluster::{
    self, ALT, BUILTIN, BUILTIN_AND_ALT, GHOST, ONLY_ALT, ONLY_BUILTIN, QUARANTINE_AFTER,
    RuntimeName, RuntimeSet, SCHEDULER, TIMEOUT_GRACE, worker_host,
};
use crate::faults::{Fault, Schedule};
use crate::rogue::{IMPOSTOR_POSES_AS, ImpostorPlan};
use crate::seed::Seed;
use crate::trace::WorkerIndex;
use crate::workload::{self, Request};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    SteadyLoad,
    WorkerCrash,
    WorkerBounce,
    Partition,
    HoldRelease,
    SchedulerCrash,
    Random,
    BlackHole,
    Runtimes,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::SteadyLoad,
        Scenario::WorkerCrash,
        Scenario::WorkerBounce,
        Scenario::Partition,
        Scenario::HoldRelease,
        Scenario::SchedulerCrash,
        Scenario::Random,
        Scenario::BlackHole,
        Scenario::Runtimes,
    ];

    /// The scenario's name; also the name of its test.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SteadyLoad => "steady_load",
            Scenario::WorkerCrash => "worker_crash",
            Scenario::WorkerBounce => "worker_bounce",
            Scenario::Partition => "partition",
            Scenario::HoldRelease => "hold_release",
            Scenario::SchedulerCrash => "scheduler_crash",
            Scenario::Random => "random",
            Scenario::BlackHole => "black_hole",
            Scenario::Runtimes => "runtimes",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a run will do, decided up front from its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub seed: Seed,
    pub cluster: cluster::Shape,
    pub clients: usize,
    pub rogues: Rogues,
    pub requests: Vec<Request>,
    /// The runtimes clients register every function in: those the requests
    /// may need.
    pub runtimes: Vec<RuntimeName>,
    /// Message latency on every link, before any fault changes it.
    pub max_latency: Duration,
    pub faults: Schedule,
    /// Clients stop waiting for executions then.
    pub give_up_at: Duration,
}

/// The hand-made worker hosts (see [`crate::rogue`]) a run adds to the
/// cluster.
#[derive(Clone, Debug, Default)]
pub struct Rogues {
    pub black_hole: bool,
    pub impostor: Option<ImpostorPlan>,
}

/// After the last fault healed (and the last request was sent), how long
/// every ACCEPTED execution has to finish.
const LIVENESS_WINDOW: Duration = Duration::from_secs(12);

/// With a gateway, this client speaks HTTP to it.
pub const HTTP_CLIENT: usize = 2;

/// Faults fall in this window.
const FAULT_WINDOW: Range<Duration> = Duration::from_millis(800)..Duration::from_millis(5500);

impl Plan {
    pub fn new(scenario: Scenario, seed: Seed) -> Plan {
        let mut rng = seed.rng("cluster");
        let workers = match scenario {
            // A worker for each runtime set of `runtimes_run`, sometimes one
            // more.
            Scenario::Runtimes => rng.random_range(3..=4),
            _ => rng.random_range(2..=4),
        };
        // The gateway (and a client speaking HTTP to it) joins the scenarios
        // that are about the whole system rather than one failure.
        let gateway = matches!(scenario, Scenario::SteadyLoad | Scenario::Random);
        let mut cluster = cluster::Shape {
            pool_sizes: (0..workers).map(|_| rng.random_range(1..=4)).collect(),
            runtimes: vec![ONLY_BUILTIN; workers],
            prefetch: [0, 1, 1, 2][rng.random_range(0..4)],
            gateway,
        };
        let max_latency = Duration::from_micros(rng.random_range(500..15_000));
        let clients = if gateway { 3 } else { 2 };
        let mut shape = workload::Shape {
            clients,
            http_client: gateway.then_some(HTTP_CLIENT),
            ..workload::Shape::default()
        };
        let mut rogues = Rogues::default();
        match scenario {
            Scenario::BlackHole => black_hole_run(&mut cluster, &mut shape, &mut rogues),
            Scenario::Runtimes => runtimes_run(&mut rng, &mut cluster, &mut shape),
            _ => {}
        }
        let requests = workload::generate(seed, &shape);
        let mut runtimes = shape.runtimes.to_vec();
        runtimes.sort_unstable();
        runtimes.dedup();
        let faults = faults(scenario, &mut seed.rng("faults"), &cluster, max_latency);
        let last_request = requests.last().map_or(Duration::ZERO, |r| r.at);
        let surviving = surviving_workers(&cluster, &faults);
        // Each attempt the black hole keeps (at most the strikes that
        // quarantine it) holds its execution up for the attempt's deadline.
        let held_up = match rogues.black_hole {
            true => (shape.timeout + TIMEOUT_GRACE) * QUARANTINE_AFTER,
            false => Duration::ZERO,
        };
        let give_up_at = faults.healed_at.max(last_request)
            + LIVENESS_WINDOW
            + held_up
            + rerun_time(&requests, &cluster, &surviving);
        Plan {
            scenario,
            seed,
            cluster,
            clients,
            rogues,
            requests,
            runtimes,
            max_latency,
            faults,
            give_up_at,
        }
    }
}

/// The workers the schedule does not crash for good.
pub fn surviving_workers(cluster: &cluster::Shape, faults: &Schedule) -> Vec<WorkerIndex> {
    cluster
        .workers()
        .filter(|&worker| {
            !faults.steps().iter().any(
                |step| matches!(step.fault, Fault::CrashWorker { worker: w, .. } if w == worker),
            )
        })
        .collect()
}

/// Enough time to run the whole workload again on the slots that survive the
/// schedule: for each runtime, its requests' work on the surviving slots
/// that run it; the slowest runtime sets the pace. (Requests of a runtime no
/// surviving worker runs wait only for their schedule-to-start limit, within
/// [`LIVENESS_WINDOW`].)
fn rerun_time(
    requests: &[Request],
    cluster: &cluster::Shape,
    surviving: &[WorkerIndex],
) -> Duration {
    let mut runtimes: Vec<RuntimeName> = requests.iter().map(|r| r.runtime).collect();
    runtimes.sort_unstable();
    runtimes.dedup();
    runtimes
        .into_iter()
        .map(|runtime| {
            let slots: u32 = surviving
                .iter()
                .filter(|&&worker| cluster.runtimes_of(worker).contains(&runtime))
                .map(|&worker| cluster.pool_sizes[worker - 1])
                .sum();
            let work: Duration = requests
                .iter()
                .filter(|r| r.runtime == runtime)
                .map(|r| r.runs_for)
                .sum();
            work.checked_div(slots).unwrap_or(Duration::ZERO)
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// What the first workers of `runtimes` run: one set each, so that every
/// runtime has a worker of its own and one it shares. A fourth worker runs
/// one of them, drawn.
const RUNTIME_SETS: [RuntimeSet; 3] = [ONLY_BUILTIN, BUILTIN_AND_ALT, ONLY_ALT];

/// The runtimes `runtimes` requests need, evenly drawn: `builtin` and `alt`
/// alike, and about one request in eleven `ghost`, which no worker runs.
const RUNTIMES_MIX: &[RuntimeName] = &[
    BUILTIN, ALT, BUILTIN, ALT, BUILTIN, ALT, BUILTIN, ALT, BUILTIN, ALT, GHOST,
];

/// The schedule-to-start limit of `ghost` requests: they fail once it passes,
/// well within the run. The other requests keep the platform's default (far
/// beyond the run), so a runtime whose workers are all busy, down or cut off
/// for a while makes its executions wait, never fail.
pub const GHOST_START_LIMIT: Duration = Duration::from_millis(1500);

const _: () = assert!(GHOST_START_LIMIT.as_millis() < LIVENESS_WINDOW.as_millis());

/// The `runtimes` scenario's cluster and workload: workers that run
/// `builtin`, `alt` or both, and requests for each runtime — a few for one
/// no worker runs.
fn runtimes_run(rng: &mut SmallRng, cluster: &mut cluster::Shape, shape: &mut workload::Shape) {
    for (index, runtimes) in cluster.runtimes.iter_mut().enumerate() {
        *runtimes = match RUNTIME_SETS.get(index) {
            Some(&set) => set,
            None => RUNTIME_SETS[rng.random_range(0..RUNTIME_SETS.len())],
        };
    }
    shape.runtimes = RUNTIMES_MIX;
    shape.start_limits = &[(GHOST, GHOST_START_LIMIT)];
}

/// Whether, with `worker` gone too, the workers in `alive` still run every
/// runtime some worker of the cluster runs: a crash for good must leave each
/// runtime a worker, so that every ACCEPTED execution can still finish (an
/// execution whose runtime lost its last worker after it started would wait
/// forever: its schedule-to-start limit no longer applies).
fn keeps_every_runtime(
    cluster: &cluster::Shape,
    alive: &[WorkerIndex],
    worker: WorkerIndex,
) -> bool {
    let rest: Vec<WorkerIndex> = alive.iter().copied().filter(|&w| w != worker).collect();
    cluster
        .workers()
        .flat_map(|w| cluster.runtimes_of(w).iter().copied())
        .all(|runtime| cluster.served_by(&rest, runtime))
}

/// The `black_hole` scenario's cluster and workload: a black hole that joins
/// at once (it has the most free slots, so it gets the first work), an
/// impostor claiming `worker-1`'s id while `worker-1` is healthy, and
/// attempts whose deadline (timeout plus grace) falls well within the run.
fn black_hole_run(cluster: &mut cluster::Shape, shape: &mut workload::Shape, rogues: &mut Rogues) {
    // Without prefetch an attempt starts on a real worker the moment it
    // arrives, so none waits its deadline away in a worker's queue: only the
    // black hole lets attempts time out.
    cluster.prefetch = 0;
    shape.timeout = Duration::from_secs(1);
    // Well under the timeout, so that no real worker times a sleep out.
    shape.sleep_ms = [20..250, 250..600];
    // Every execution can be retried; most have more attempts than the black
    // hole (QUARANTINE_AFTER) and one worker fault together can take.
    shape.max_attempts = &[2, 3, 5, 5, 6, 6];
    rogues.black_hole = true;
    rogues.impostor = Some(ImpostorPlan {
        from: Duration::from_millis(500),
        until: FAULT_WINDOW.end,
        every: Duration::from_millis(250),
    });
}

/// In `black_hole`, the work the black hole kept reaches the real workers
/// from its first deadline on; a fault then hits a worker that has some.
const BLACK_HOLE_FAULT_WINDOW: Range<Duration> =
    Duration::from_millis(3_500)..Duration::from_millis(6_500);

fn pick_time(rng: &mut SmallRng, window: Range<Duration>) -> Duration {
    let (from, to) = (
        window.start.as_micros() as u64,
        window.end.as_micros() as u64,
    );
    Duration::from_micros(rng.random_range(from..to.max(from + 1)))
}

fn pick_worker(rng: &mut SmallRng, cluster: &cluster::Shape) -> WorkerIndex {
    rng.random_range(1..=cluster.pool_sizes.len())
}

/// How long a link stays held. Half the time just past the heartbeat
/// timeout (1 s) and short of the keepalive's (a ping unanswered for 1.5 s):
/// the worker is declared lost, yet its connection survives, so the results
/// it sent meanwhile arrive after the release — and must be fenced off.
fn hold_duration(rng: &mut SmallRng) -> Duration {
    let ms = match rng.random_range(0..4) {
        0 => rng.random_range(50..900),
        1 | 2 => rng.random_range(1_050..1_500),
        _ => rng.random_range(1_500..3_500),
    };
    Duration::from_millis(ms)
}

fn faults(
    scenario: Scenario,
    rng: &mut SmallRng,
    cluster: &cluster::Shape,
    base_latency: Duration,
) -> Schedule {
    let mut schedule = Schedule::default();
    match scenario {
        Scenario::SteadyLoad => {}
        Scenario::WorkerCrash => {
            let mut alive: Vec<WorkerIndex> = cluster.workers().collect();
            let crashes = if alive.len() > 2 && rng.random_bool(0.3) {
                2
            } else {
                1
            };
            for _ in 0..crashes {
                let at = pick_time(rng, FAULT_WINDOW);
                let worker = alive.remove(rng.random_range(0..alive.len()));
                crash_worker(rng, &mut schedule, at, worker);
            }
        }
        Scenario::WorkerBounce => {
            for _ in 0..rng.random_range(1..=2) {
                let at = pick_time(rng, FAULT_WINDOW);
                let worker = pick_worker(rng, cluster);
                bounce_worker(rng, &mut schedule, at, worker);
            }
        }
        Scenario::Partition => {
            let mut at = pick_time(rng, FAULT_WINDOW.start..Duration::from_secs(3));
            for _ in 0..rng.random_range(1..=2) {
                let host = worker_host(pick_worker(rng, cluster));
                let lasts = Duration::from_millis(rng.random_range(1_500..4_000));
                cut(&mut schedule, at, lasts, SCHEDULER, &host);
                at += lasts / 2;
            }
            if rng.random_bool(0.4) {
                let at = pick_time(rng, FAULT_WINDOW);
                let lasts = Duration::from_millis(rng.random_range(300..3_000));
                cut(&mut schedule, at, lasts, SCHEDULER, &client_host(rng));
            }
        }
        Scenario::HoldRelease => {
            let mut at = pick_time(rng, FAULT_WINDOW.start..Duration::from_secs(2));
            for _ in 0..rng.random_range(2..=4) {
                let lasts = hold_duration(rng);
                let peer = if rng.random_bool(0.75) {
                    worker_host(pick_worker(rng, cluster))
                } else {
                    client_host(rng)
                };
                hold(&mut schedule, at, lasts, SCHEDULER, &peer);
                at += lasts + Duration::from_millis(rng.random_range(100..800));
            }
        }
        Scenario::SchedulerCrash => {
            let mut at = pick_time(rng, FAULT_WINDOW.start..Duration::from_secs(3));
            for _ in 0..rng.random_range(1..=2) {
                let down = crash_scheduler(rng, &mut schedule, at);
                at += down + Duration::from_millis(rng.random_range(500..2_000));
            }
        }
        Scenario::BlackHole => {
            // `worker-1` stays healthy: it is the one the impostor poses as.
            let others: Vec<WorkerIndex> = cluster
                .workers()
                .filter(|&worker| worker != IMPOSTOR_POSES_AS)
                .collect();
            let worker = others[rng.random_range(0..others.len())];
            let at = pick_time(rng, BLACK_HOLE_FAULT_WINDOW);
            match rng.random_range(0..3) {
                0 => {}
                1 => crash_worker(rng, &mut schedule, at, worker),
                _ => {
                    let lasts = Duration::from_millis(rng.random_range(1_500..3_000));
                    cut(&mut schedule, at, lasts, SCHEDULER, &worker_host(worker));
                }
            }
        }
        Scenario::Runtimes => runtimes_faults(rng, &mut schedule, cluster),
        Scenario::Random => {
            let mut alive: Vec<WorkerIndex> = cluster.workers().collect();
            let mut at = pick_time(rng, FAULT_WINDOW.start..Duration::from_secs(2));
            for _ in 0..rng.random_range(3..=6) {
                let lasts = match rng.random_range(0..7) {
                    0 if alive.len() > 1 => {
                        let worker = alive.remove(rng.random_range(0..alive.len()));
                        crash_worker(rng, &mut schedule, at, worker);
                        Duration::from_millis(500)
                    }
                    0 | 1 => {
                        let worker = alive[rng.random_range(0..alive.len())];
                        bounce_worker(rng, &mut schedule, at, worker)
                    }
                    2 => {
                        let worker = alive[rng.random_range(0..alive.len())];
                        let lasts = Duration::from_millis(rng.random_range(300..3_500));
                        cut(&mut schedule, at, lasts, SCHEDULER, &worker_host(worker));
                        lasts
                    }
                    3 => {
                        let lasts = Duration::from_millis(rng.random_range(300..2_500));
                        cut(&mut schedule, at, lasts, SCHEDULER, &client_host(rng));
                        lasts
                    }
                    4 => {
                        let (a, b) = match rng.random_range(0..10) {
                            0..7 => (
                                SCHEDULER,
                                worker_host(alive[rng.random_range(0..alive.len())]),
                            ),
                            7 | 8 => (SCHEDULER, client_host(rng)),
                            // The gateway's own link to the scheduler.
                            _ => (SCHEDULER, cluster::GATEWAY.to_string()),
                        };
                        let lasts = hold_duration(rng);
                        hold(&mut schedule, at, lasts, a, &b);
                        lasts
                    }
                    5 => crash_scheduler(rng, &mut schedule, at),
                    _ => {
                        let lasts = Duration::from_millis(rng.random_range(500..3_000));
                        let latency = Duration::from_millis(rng.random_range(20..120));
                        schedule.add(at, Fault::MaxLatency(latency));
                        schedule.add(at + lasts, Fault::MaxLatency(base_latency));
                        lasts
                    }
                };
                at += lasts + Duration::from_millis(rng.random_range(100..1_000));
            }
        }
    }
    schedule
}

/// The `runtimes` scenario's faults: worker crashes (never of a runtime's
/// last worker), bounces, cuts and holds, one after another as in `random`,
/// and now and then every worker of one runtime cut off at once, so that its
/// executions wait while the other runtime's carry on.
fn runtimes_faults(rng: &mut SmallRng, schedule: &mut Schedule, cluster: &cluster::Shape) {
    let mut alive: Vec<WorkerIndex> = cluster.workers().collect();
    let mut at = pick_time(rng, FAULT_WINDOW.start..Duration::from_secs(2));
    for _ in 0..rng.random_range(3..=6) {
        let worker = alive[rng.random_range(0..alive.len())];
        let lasts = match rng.random_range(0..5) {
            0 if keeps_every_runtime(cluster, &alive, worker) => {
                alive.retain(|&w| w != worker);
                crash_worker(rng, schedule, at, worker);
                Duration::from_millis(500)
            }
            0 | 1 => bounce_worker(rng, schedule, at, worker),
            2 => {
                let lasts = Duration::from_millis(rng.random_range(300..3_500));
                cut(schedule, at, lasts, SCHEDULER, &worker_host(worker));
                lasts
            }
            3 => {
                let lasts = hold_duration(rng);
                hold(schedule, at, lasts, SCHEDULER, &worker_host(worker));
                lasts
            }
            _ => {
                let runtime = [BUILTIN, ALT][rng.random_range(0..2)];
                let lasts = Duration::from_millis(rng.random_range(1_000..3_000));
                for &worker in &alive {
                    if cluster.runtimes_of(worker).contains(&runtime) {
                        cut(schedule, at, lasts, SCHEDULER, &worker_host(worker));
                    }
                }
                lasts
            }
        };
        at += lasts + Duration::from_millis(rng.random_range(100..1_000));
    }
}

fn client_host(rng: &mut SmallRng) -> String {
    format!("client-{}", rng.random_range(0..2))
}

/// Crashes a busy worker for good; half the time silently.
fn crash_worker(rng: &mut SmallRng, schedule: &mut Schedule, at: Duration, worker: WorkerIndex) {
    let silent = rng.random_bool(0.5);
    schedule.add_when_busy(at, worker, Fault::CrashWorker { worker, silent });
}

/// Bounces a busy worker; half the time behind a held link, so that what it
/// sent before going down arrives after it came back. Returns how long the
/// episode lasts.
fn bounce_worker(
    rng: &mut SmallRng,
    schedule: &mut Schedule,
    at: Duration,
    worker: WorkerIndex,
) -> Duration {
    if rng.random_bool(0.5) {
        let held = hold_duration(rng);
        let before = Duration::from_millis(rng.random_range(0..300));
        schedule.add(at, Fault::Hold(SCHEDULER.into(), worker_host(worker)));
        schedule.add_when_busy(at + before, worker, Fault::BounceWorker { worker });
        schedule.add(
            at + before + held,
            Fault::Release(SCHEDULER.into(), worker_host(worker)),
        );
        before + held
    } else {
        schedule.add_when_busy(at, worker, Fault::BounceWorker { worker });
        Duration::from_millis(500)
    }
}

/// Crashes the scheduler — cleanly between two steps, or by cutting its
/// disk's power in the middle of an operation — and restarts it. Returns how
/// long the episode lasts.
fn crash_scheduler(rng: &mut SmallRng, schedule: &mut Schedule, at: Duration) -> Duration {
    let downtime = Duration::from_millis(rng.random_range(200..2_000));
    if rng.random_bool(0.6) {
        let after = rng.random_range(0..6);
        schedule.add(at, Fault::PowerCut { after, downtime });
        downtime + Duration::from_secs(1)
    } else {
        schedule.add(at, Fault::CrashScheduler);
        schedule.add(at + downtime, Fault::RestartScheduler);
        downtime
    }
}

fn cut(schedule: &mut Schedule, at: Duration, lasts: Duration, a: &str, b: &str) {
    schedule.add(at, Fault::Partition(a.into(), b.into()));
    schedule.add(at + lasts, Fault::Repair(a.into(), b.into()));
}

fn hold(schedule: &mut Schedule, at: Duration, lasts: Duration, a: &str, b: &str) {
    schedule.add(at, Fault::Hold(a.into(), b.into()));
    schedule.add(at + lasts, Fault::Release(a.into(), b.into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle expects every `builtin` and `alt` execution to finish right:
    /// that holds only if no plan leaves one of them without a worker.
    #[test]
    fn runtimes_plans_keep_a_worker_for_each_served_runtime() {
        for seed in 0..500 {
            let plan = Plan::new(Scenario::Runtimes, Seed(seed));
            let surviving = surviving_workers(&plan.cluster, &plan.faults);
            for runtime in [BUILTIN, ALT] {
                assert!(
                    plan.cluster.served_by(&surviving, runtime),
                    "seed {seed}: no worker that runs {runtime} survives"
                );
            }
            assert!(!plan.cluster.served_by(&surviving, GHOST));
            assert_eq!(plan.runtimes, [ALT, BUILTIN, GHOST]);
        }
    }
}

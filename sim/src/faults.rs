//! Fault schedules, and the driver that carries them out between simulation
//! steps.
//!
//! A [`Schedule`] is a list of faults at simulated times, drawn from the seed
//! by the scenario: crash a worker for good (cleanly, or silently — its links
//! cut first, so that only the heartbeat timeout can tell), bounce a worker,
//! partition and repair a link, hold and release one, crash the scheduler and
//! restart it, cut the power of its disk in the middle of a write, change the
//! network's latency. Every fault that can heal has healed by
//! [`Schedule::healed_at`]; liveness is judged after that.
//!
//! The [`Driver`] applies each fault at the first step boundary at or after
//! its time. A fault may wait until a worker is busy (a crash "mid-execution"),
//! for a bounded time; the faults after it wait behind it, so the schedule's
//! order holds. A power cut trips during some later disk operation; the
//! driver crashes the scheduler right after the step in which it tripped, and
//! restarts it after the planned downtime.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::cluster::{SCHEDULER, worker_host};
use crate::fs::Power;
use crate::trace::{Event, Recorder, WorkerIndex};

/// A host of the cluster, by name.
pub type Host = String;

/// A link between two hosts, named the same whichever end comes first.
fn link(a: &str, b: &str) -> (Host, Host) {
    match a <= b {
        true => (a.to_string(), b.to_string()),
        false => (b.to_string(), a.to_string()),
    }
}

/// One thing done to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Crash a worker for good. `silent`: cut its link to the scheduler first,
    /// as a machine that dies without closing its connections.
    CrashWorker {
        worker: WorkerIndex,
        silent: bool,
    },
    /// Restart a worker's software; it comes back under the same id.
    BounceWorker {
        worker: WorkerIndex,
    },
    /// Drop every message between two hosts, both ways.
    Partition(Host, Host),
    Repair(Host, Host),
    /// Keep every message between two hosts on the link until released.
    Hold(Host, Host),
    Release(Host, Host),
    CrashScheduler,
    /// Start the scheduler's software again (its disk kept what was synced).
    RestartScheduler,
    /// Cut the power of the scheduler's disk during its `after`-th disk
    /// operation from now; the scheduler is crashed at once and restarted
    /// after `downtime`. If no operation comes within a second, it is
    /// crashed anyway.
    PowerCut {
        after: u32,
        downtime: Duration,
    },
    /// The most a message may take on any link.
    MaxLatency(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::CrashWorker {
                worker,
                silent: false,
            } => write!(f, "crash worker-{worker} for good"),
            Fault::CrashWorker {
                worker,
                silent: true,
            } => write!(f, "crash worker-{worker} for good, silently"),
            Fault::BounceWorker { worker } => write!(f, "bounce worker-{worker}"),
            Fault::Partition(a, b) => write!(f, "partition {a} <-> {b}"),
            Fault::Repair(a, b) => write!(f, "repair {a} <-> {b}"),
            Fault::Hold(a, b) => write!(f, "hold {a} <-> {b}"),
            Fault::Release(a, b) => write!(f, "release {a} <-> {b}"),
            Fault::CrashScheduler => write!(f, "crash the scheduler"),
            Fault::RestartScheduler => write!(f, "restart the scheduler"),
            Fault::PowerCut { after, downtime } => write!(
                f,
                "cut the scheduler's disk power at its disk operation #{after} from now \
                 (down for {downtime:?})"
            ),
            Fault::MaxLatency(latency) => write!(f, "max message latency {latency:?}"),
        }
    }
}

/// A fault at a time.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
    /// Hold the fault back (at most [`BUSY_WAIT`]) until this worker runs
    /// something.
    pub when_busy: Option<WorkerIndex>,
}

/// After the last fault, time for the cluster to notice what happened.
const SETTLE: Duration = Duration::from_secs(2);

/// How long a fault waits for its worker to get busy.
pub const BUSY_WAIT: Duration = Duration::from_secs(2);

/// The faults of a run, in time order.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    steps: Vec<Step>,
    /// Every fault that heals has healed by then (crashed workers stay down).
    pub healed_at: Duration,
}

impl Schedule {
    pub fn add(&mut self, at: Duration, fault: Fault) {
        self.add_step(Step {
            at,
            fault,
            when_busy: None,
        });
    }

    pub fn add_when_busy(&mut self, at: Duration, worker: WorkerIndex, fault: Fault) {
        self.add_step(Step {
            at,
            fault,
            when_busy: Some(worker),
        });
    }

    fn add_step(&mut self, step: Step) {
        let latest = step.at
            + match (&step.fault, step.when_busy) {
                (Fault::PowerCut { downtime, .. }, _) => *downtime + Duration::from_secs(1),
                (_, Some(_)) => BUSY_WAIT,
                (_, None) => Duration::ZERO,
            };
        // Healed also means noticed: a silent worker is declared lost only
        // after the heartbeat timeout.
        self.healed_at = self.healed_at.max(latest + SETTLE);
        // Stable: faults at one time keep the order they were added in.
        let index = self.steps.partition_point(|s| s.at <= step.at);
        self.steps.insert(index, step);
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// Carries out a schedule on a running simulation.
#[derive(Debug)]
pub struct Driver {
    steps: VecDeque<Step>,
    /// Every host of the simulation.
    hosts: Vec<Host>,
    /// Links the schedule holds or partitions right now, as sorted pairs.
    quiet: BTreeSet<(Host, Host)>,
    power: Power,
    recorder: Recorder,
    /// A power cut is armed: crash the scheduler when it trips, or at the
    /// deadline; restart it `downtime` later.
    power_cut: Option<(Duration, Duration)>,
    scheduler_up: bool,
    /// When to restart the scheduler.
    restart_at: Option<Duration>,
}

impl Driver {
    pub fn new(schedule: &Schedule, hosts: Vec<Host>, power: Power, recorder: Recorder) -> Driver {
        Driver {
            steps: schedule.steps.iter().cloned().collect(),
            hosts,
            quiet: BTreeSet::new(),
            power,
            recorder,
            power_cut: None,
            scheduler_up: true,
            restart_at: None,
        }
    }

    /// Applies everything due at the current step boundary.
    pub fn before_step(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        if let Some((deadline, downtime)) = self.power_cut {
            if self.power.is_cut() || now >= deadline {
                self.power_cut = None;
                let tripped = self.power.is_cut();
                self.note(
                    now,
                    if tripped {
                        "the scheduler's disk lost power"
                    } else {
                        "no disk operation came before the deadline"
                    },
                );
                self.apply(sim, now, &Fault::CrashScheduler);
                self.restart_at = Some(now + downtime);
            }
        }
        if self.restart_at.is_some_and(|at| now >= at) {
            self.restart_at = None;
            self.apply(sim, now, &Fault::RestartScheduler);
        }
        while let Some(step) = self.steps.front() {
            if step.at > now {
                break;
            }
            if let Some(worker) = step.when_busy {
                if self.recorder.running_on(worker) == 0 && now < step.at + BUSY_WAIT {
                    break;
                }
            }
            let Some(step) = self.steps.pop_front() else {
                break;
            };
            self.apply(sim, now, &step.fault);
        }
    }

    fn note(&self, now: Duration, what: &str) {
        self.recorder.record_at(now, Event::Note(what.to_string()));
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, fault: &Fault) {
        self.recorder.record_at(now, Event::Fault(fault.clone()));
        match fault {
            Fault::CrashWorker { worker, silent } => {
                let host = worker_host(*worker);
                if *silent {
                    sim.partition(SCHEDULER, host.as_str());
                    self.quiet.insert(link(SCHEDULER, &host));
                }
                self.tear_down(sim, &host, |sim| sim.crash(host.as_str()));
            }
            Fault::BounceWorker { worker } => {
                let host = worker_host(*worker);
                self.tear_down(sim, &host, |sim| sim.bounce(host.as_str()));
            }
            Fault::Partition(a, b) => {
                sim.partition(a.as_str(), b.as_str());
                self.quiet.insert(link(a, b));
            }
            Fault::Repair(a, b) => {
                sim.repair(a.as_str(), b.as_str());
                self.quiet.remove(&link(a, b));
            }
            Fault::Hold(a, b) => {
                sim.hold(a.as_str(), b.as_str());
                self.quiet.insert(link(a, b));
            }
            Fault::Release(a, b) => {
                sim.release(a.as_str(), b.as_str());
                self.quiet.remove(&link(a, b));
            }
            Fault::CrashScheduler => self.crash_scheduler(sim),
            Fault::RestartScheduler => {
                if !self.scheduler_up {
                    self.power.restore();
                    self.tear_down(sim, SCHEDULER, |sim| sim.bounce(SCHEDULER));
                    self.scheduler_up = true;
                }
            }
            Fault::PowerCut { after, downtime } => {
                if self.scheduler_up {
                    self.power.arm(*after);
                    self.power_cut = Some((now + Duration::from_secs(1), *downtime));
                }
            }
            Fault::MaxLatency(latency) => sim.set_max_message_latency(*latency),
        }
    }

    fn crash_scheduler(&mut self, sim: &mut turmoil::Sim<'_>) {
        if self.scheduler_up {
            self.tear_down(sim, SCHEDULER, |sim| sim.crash(SCHEDULER));
            self.scheduler_up = false;
        }
    }

    /// Crashes or restarts `host` by `f`, keeping the run deterministic.
    ///
    /// Dropping a runtime drops its tasks in an order set by tokio's
    /// process-wide task ids, which depend on every simulation run before in
    /// the process. Each dropped connection sends a FIN or RST, and each send
    /// on a healthy link draws its latency from turmoil's rng — so the drop
    /// order would leak into every later draw. Holding the host's healthy
    /// links while its runtime goes (a held send draws nothing) and
    /// releasing them right after delivers the same segments, each link in
    /// its own order, with the rng untouched.
    fn tear_down(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        host: &str,
        f: impl FnOnce(&mut turmoil::Sim<'_>),
    ) {
        let healthy: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|peer| peer.as_str() != host && !self.quiet.contains(&link(host, peer)))
            .collect();
        for peer in &healthy {
            sim.hold(host, peer.as_str());
        }
        self.recorder.outside_hosts(|| f(sim));
        for peer in &healthy {
            sim.release(host, peer.as_str());
        }
    }

    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.steps.is_empty() && self.power_cut.is_none() && self.restart_at.is_none()
    }
}

//! Running one seed of one scenario, and many.
//!
//! [`run`] builds the simulation from the plan (cluster, clients, faults),
//! steps it until every client is done — applying faults between steps —
//! then asks the oracle for its verdict. An [`Outcome`] carries the trace's
//! hash (the same every time for one seed), the violations, and enough of the
//! trace to see what went wrong; a failing outcome prints the one command that
//! reproduces it.
//!
//! [`check`] is what each scenario's test calls: it runs the seeds that the
//! environment asks for (`TASKFORGE_SIM_SEED=<u64>` for one seed,
//! `TASKFORGE_SIM_SEEDS=<n>` for n of them; 32 by default), prints one
//! `seed=… scenario=… trace=…` line per run, and fails with every failing
//! seed's report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::client;
use crate::cluster::{self, RuntimeSet};
use crate::faults::Driver;
use crate::fs::Power;
use crate::http_client;
use crate::oracle::{self, Oracle, Violation};
use crate::rogue;
use crate::scenario::{HTTP_CLIENT, Plan, Scenario};
use crate::seed::Seed;
use crate::trace::{Entry, Event, Recorder};

/// Simulated time per step.
const TICK: Duration = Duration::from_millis(1);
/// A run still going this long after its clients gave up is stuck.
const OVERTIME: Duration = Duration::from_secs(20);

/// Seeds run per scenario by default.
pub const DEFAULT_SEEDS: u64 = 32;

/// What one run came to.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub seed: Seed,
    /// FNV-1a of the whole trace.
    pub trace_hash: u64,
    /// Simulated time the run covered.
    pub sim_time: Duration,
    /// Real time it took.
    pub wall_time: Duration,
    pub violations: Vec<Violation>,
    /// The simulation itself failed (a host's software returned an error or
    /// panicked, or the run never ended).
    pub error: Option<String>,
    pub entries: Vec<Entry>,
    pub plan: Plan,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// `seed=<seed> scenario=<name> trace=<hex>`.
    pub fn trace_line(&self) -> String {
        format!(
            "seed={} scenario={} trace={:016x}",
            self.seed, self.scenario, self.trace_hash
        )
    }

    /// The command that runs this seed of this scenario again.
    pub fn reproduce(&self) -> String {
        reproduce(self.scenario, self.seed)
    }

    /// What went wrong, with the trace around it and how to reproduce it.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "FAILED {}", self.trace_line());
        if let Some(error) = &self.error {
            let _ = writeln!(out, "  the simulation failed: {error}");
        }
        for violation in self.violations.iter().take(10) {
            let _ = writeln!(out, "  violation {violation}");
        }
        if self.violations.len() > 10 {
            let _ = writeln!(out, "  ... and {} more", self.violations.len() - 10);
        }
        let _ = writeln!(out, "  cluster: {:?}", self.plan.cluster);
        let _ = writeln!(out, "  faults:");
        for step in self.plan.faults.steps() {
            let _ = writeln!(out, "    at {:?}: {}", step.at, step.fault);
        }
        if let Some(execution) = self.violations.iter().find_map(|v| v.execution) {
            let id = execution.to_string();
            let _ = writeln!(out, "  trace of {id} (and the faults):");
            for entry in self.entries.iter().filter(|e| {
                matches!(
                    e.event,
                    Event::Fault(_) | Event::Note(_) | Event::SchedulerStarted { .. }
                ) || e.to_string().contains(&id)
            }) {
                let _ = writeln!(out, "    {entry}");
            }
        }
        let _ = writeln!(out, "  reproduce: {}", self.reproduce());
        out
    }
}

/// The command that runs `seed` of `scenario` again, printing its trace line.
pub fn reproduce(scenario: Scenario, seed: Seed) -> String {
    format!(
        "TASKFORGE_SIM_SEED={seed} cargo test -p taskforge-sim --test scenarios {} -- --nocapture",
        scenario.name()
    )
}

/// Runs `seed` of `scenario`.
pub fn run(scenario: Scenario, seed: Seed) -> Outcome {
    let started = Instant::now();
    let plan = Plan::new(scenario, seed);
    let recorder = Recorder::new(Oracle::new(oracle::Plan {
        requests: plan.requests.clone(),
        pool_sizes: plan.cluster.pool_sizes.clone(),
        runtimes: runtimes_by_worker_id(&plan),
        prefetch: plan.cluster.prefetch,
        black_hole: plan.rogues.black_hole,
    }));
    let power = Power::default();

    let mut builder = turmoil::Builder::new();
    builder
        .epoch(cluster::epoch())
        .rng_seed(seed.derive("turmoil"))
        .tick_duration(TICK)
        .simulation_duration(plan.give_up_at + OVERTIME)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(plan.max_latency);
    // A write cut short by a crash keeps a prefix of whole 64-byte blocks.
    builder.fs().block_size(64);
    let mut sim = builder.build();

    cluster::install(&mut sim, &plan.cluster, seed, &recorder, &power);
    rogue::install(&mut sim, &plan.rogues, &recorder);
    for index in 0..plan.clients {
        let client_plan = client::Plan {
            index,
            requests: plan
                .requests
                .iter()
                .filter(|r| r.client == index)
                .cloned()
                .collect(),
            runtimes: plan.runtimes.clone(),
            healed_at: plan.faults.healed_at,
            give_up_at: plan.give_up_at,
        };
        let name = format!("client-{index}");
        if plan.cluster.gateway && index == HTTP_CLIENT {
            sim.client(name, http_client::run(client_plan, recorder.clone()));
        } else {
            sim.client(name, client::run(client_plan, recorder.clone()));
        }
    }

    let mut hosts = vec![cluster::SCHEDULER.to_string()];
    hosts.extend(plan.cluster.workers().map(cluster::worker_host));
    if plan.cluster.gateway {
        hosts.push(cluster::GATEWAY.to_string());
    }
    hosts.extend(rogue::hosts(&plan.rogues));
    hosts.extend((0..plan.clients).map(|index| format!("client-{index}")));
    let mut driver = Driver::new(&plan.faults, hosts, power, recorder.clone());
    let error = loop {
        driver.before_step(&mut sim);
        match sim.step() {
            Ok(true) => break None,
            Ok(false) => {}
            Err(error) => break Some(error.to_string()),
        }
    };
    let sim_time = sim.elapsed();
    // Tear the hosts down outside any step, with the clock stopped.
    recorder.outside_hosts(|| drop(sim));
    let record = recorder.finish();
    Outcome {
        scenario,
        seed,
        trace_hash: record.hash,
        sim_time,
        wall_time: started.elapsed(),
        violations: record.violations,
        error,
        entries: record.entries,
        plan,
    }
}

/// What each worker id that may say hello runs, as the run builds it: the
/// real workers, and the black hole if it joins. (The impostor poses as
/// `worker-1`; were one of its sessions taken, it would be held to
/// `worker-1`'s runtimes — it announces `builtin`, which `worker-1` runs
/// wherever there is an impostor.)
fn runtimes_by_worker_id(plan: &Plan) -> BTreeMap<String, RuntimeSet> {
    let mut runtimes: BTreeMap<String, RuntimeSet> = plan
        .cluster
        .workers()
        .map(|worker| {
            (
                cluster::worker_host(worker),
                plan.cluster.runtimes_of(worker),
            )
        })
        .collect();
    if plan.rogues.black_hole {
        runtimes.insert(rogue::BLACK_HOLE.to_string(), rogue::RUNTIMES);
    }
    runtimes
}

/// The seeds the environment asks for: `TASKFORGE_SIM_SEED` alone, else
/// `TASKFORGE_SIM_SEEDS` (or [`DEFAULT_SEEDS`]) of them.
pub fn seeds_from_env() -> Vec<Seed> {
    if let Some(seed) = env_u64("TASKFORGE_SIM_SEED") {
        return vec![Seed(seed)];
    }
    let count = env_u64("TASKFORGE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    (0..count).map(Seed).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not a u64"),
    }
}

/// Runs the seeds the environment asks for of `scenario`; panics with the
/// reports of those that fail.
pub fn check(scenario: Scenario) {
    let mut failures = Vec::new();
    for seed in seeds_from_env() {
        let outcome = run(scenario, seed);
        println!("{}", outcome.trace_line());
        if !outcome.passed() {
            let report = outcome.report();
            eprintln!("{report}");
            failures.push(report);
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} seed(s) of {scenario} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

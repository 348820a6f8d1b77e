//! One test per scenario, each running the seeds the environment asks for
//! (32 by default; `TASKFORGE_SIM_SEED=<u64>` for one, `TASKFORGE_SIM_SEEDS=<n>`
//! for n). Run with `--nocapture` to see each seed's trace line.

use taskforge_sim::{Scenario, check};

#[test]
fn steady_load() {
    check(Scenario::SteadyLoad);
}

#[test]
fn worker_crash() {
    check(Scenario::WorkerCrash);
}

#[test]
fn worker_bounce() {
    check(Scenario::WorkerBounce);
}

#[test]
fn partition() {
    check(Scenario::Partition);
}

#[test]
fn hold_release() {
    check(Scenario::HoldRelease);
}

#[test]
fn scheduler_crash() {
    check(Scenario::SchedulerCrash);
}

#[test]
fn random() {
    check(Scenario::Random);
}

#[test]
fn black_hole() {
    check(Scenario::BlackHole);
}

#[test]
fn runtimes() {
    check(Scenario::Runtimes);
}

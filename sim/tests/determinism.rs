//! One seed, one run: the same seed gives the same trace, hash for hash —
//! also when other simulations ran before it in the same process (tokio's task
//! ids are process-wide, and must not leak into a run).

use taskforge_sim::{Scenario, Seed, run};

#[test]
fn a_seed_replays_exactly() {
    for scenario in Scenario::ALL {
        let seed = Seed(1000 + scenario as u64);
        let first = run(scenario, seed);
        let _other = run(scenario, Seed(seed.0 + 1));
        let again = run(scenario, seed);
        assert_eq!(
            (first.trace_hash, first.entries.len()),
            (again.trace_hash, again.entries.len()),
            "{scenario}: {seed} ran differently the second time ({} vs {})",
            first.trace_line(),
            again.trace_line(),
        );
        if let Some((a, b)) = first
            .entries
            .iter()
            .zip(&again.entries)
            .find(|(a, b)| a.to_string() != b.to_string())
        {
            panic!("{scenario} {seed}: first difference:\n  {a}\n  {b}");
        }
    }
}

#[test]
fn different_seeds_run_differently() {
    let a = run(Scenario::Random, Seed(1));
    let b = run(Scenario::Random, Seed(2));
    assert_ne!(a.trace_hash, b.trace_hash);
}

//! The soak runner: many seeds of the simulation, on every core.
//!
//! ```text
//! cargo run --release -p taskforge-sim -- --seeds 10000
//! cargo run --release -p taskforge-sim -- --seeds 500 --scenario scheduler_crash
//! cargo run --release -p taskforge-sim -- --first-seed 42 --seeds 1 --scenario random --trace
//! ```
//!
//! Each seed is one deterministic run (see the library's documentation); a
//! run is single-threaded, so runs go in parallel, one per job. The summary
//! gives the seeds run, every failure with the command that reproduces it,
//! the simulated time covered and the seeds per second.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use taskforge_sim::{Outcome, Scenario, Seed, run};

#[derive(Debug, Parser)]
#[command(
    name = "taskforge-sim",
    about = "Runs many seeds of TaskForge's deterministic simulation"
)]
struct Args {
    /// Seeds to run per scenario.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run only this scenario (steady_load, worker_crash, worker_bounce,
    /// partition, hold_release, scheduler_crash, random, black_hole,
    /// runtimes).
    #[arg(long, value_parser = parse_scenario)]
    scenario: Option<Scenario>,
    /// The first seed; the default is drawn from the clock (and printed), so
    /// every soak explores new seeds.
    #[arg(long)]
    first_seed: Option<u64>,
    /// Runs at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print the whole trace of every run (for one seed, mostly).
    #[arg(long)]
    trace: bool,
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario {name:?}; one of: {}", names.join(", "))
    })
}

/// What the runs have come to so far.
#[derive(Default)]
struct Tally {
    runs: u64,
    sim_time: Duration,
    failures: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios: Vec<Scenario> = match args.scenario {
        Some(scenario) => vec![scenario],
        None => Scenario::ALL.to_vec(),
    };
    let first = args.first_seed.unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_secs().wrapping_mul(1_000_003) ^ u64::from(now.subsec_nanos())
    });
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let work: Vec<(Scenario, Seed)> = (0..args.seeds)
        .flat_map(|n| {
            scenarios
                .iter()
                .map(move |&s| (s, Seed(first.wrapping_add(n))))
        })
        .collect();
    println!(
        "running {} seeds ({} per scenario, from seed {first}) of {} scenario(s) on {jobs} jobs",
        work.len(),
        args.seeds,
        scenarios.len()
    );

    let progress = ProgressBar::new(work.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} seeds ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("0 failed");
    let next = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(scenario, seed)) = work.get(index) else {
                        break;
                    };
                    let outcome = run(scenario, seed);
                    record(&args, &outcome, &tally, &progress);
                }
            });
        }
    });
    progress.finish_and_clear();

    let elapsed = started.elapsed();
    let tally = tally
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for failure in &tally.failures {
        println!("{failure}");
    }
    println!("seeds run:          {}", tally.runs);
    println!("failures:           {}", tally.failures.len());
    println!(
        "simulated time:     {:.1} s ({:.1} h)",
        tally.sim_time.as_secs_f64(),
        tally.sim_time.as_secs_f64() / 3600.0
    );
    println!("wall time:          {:.1} s", elapsed.as_secs_f64());
    println!(
        "seeds per second:   {:.1}",
        tally.runs as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    match tally.failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// Prints above the progress bar (which hides itself, and what it would
/// print, when the output is not a terminal).
fn say(progress: &ProgressBar, text: &str) {
    match progress.is_hidden() {
        true => println!("{text}"),
        false => progress.println(text),
    }
}

fn record(args: &Args, outcome: &Outcome, tally: &Mutex<Tally>, progress: &ProgressBar) {
    let mut tally = tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tally.runs += 1;
    tally.sim_time += outcome.sim_time;
    if args.trace {
        let mut out = std::io::stdout().lock();
        for entry in &outcome.entries {
            let _ = writeln!(out, "{entry}");
        }
    }
    if args.trace || !outcome.passed() {
        say(progress, &outcome.trace_line());
    }
    if !outcome.passed() {
        say(progress, &outcome.report());
        tally.failures.push(format!(
            "FAILED {} — reproduce: {}",
            outcome.trace_line(),
            outcome.reproduce()
        ));
        progress.set_message(format!("{} failed", tally.failures.len()));
    }
    progress.inc(1);
}

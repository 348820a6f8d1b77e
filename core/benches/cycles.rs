//! Throughput of the scheduler core alone: submit → dispatch → result cycles per
//! second with 100 workers × 8 slots and a 100k backlog, on one core.
//!
//! Run with `cargo bench -p taskforge-core --bench cycles`. Each cycle reports one
//! running attempt's success (freeing a slot, which dispatches the head of the
//! backlog) and submits one new execution (keeping the backlog at 100k). Terminal
//! executions are evicted past a 100k retention count, so the steady state
//! includes forgetting. Simulated time advances 1 µs per cycle, with heartbeats
//! from every worker and a timer pass every 10k cycles. Every execution is in
//! one runtime; half the workers announced nothing (they run everything) and
//! half announced that runtime, so both kinds of free-slot index are on the
//! path.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::scheduler::{Output, Retention, Scheduler, SchedulerConfig};
use taskforge_core::{
    Capabilities, ExecutionId, Instant, Outcome, Policy, SessionId, Submission, WorkerId,
};

const WORKERS: u64 = 100;
const SLOTS: u32 = 8;
const BACKLOG: u64 = 100_000;
const CYCLES: u64 = 3_000_000;
const ROUNDS: usize = 5;

fn main() {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let rate = run();
        println!("round {round}: {rate:>12.0} cycles/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median {:.0} cycles/s over {ROUNDS} rounds of {CYCLES} cycles ({WORKERS} workers x {SLOTS} slots, {BACKLOG} backlog)",
        rates[ROUNDS / 2]
    );
}

fn run() -> f64 {
    let mut scheduler = Scheduler::new(SchedulerConfig {
        queue_limit: 2 * BACKLOG as usize,
        retention: Retention {
            max_age: Duration::from_secs(3600),
            max_count: 100_000,
        },
        ..SchedulerConfig::default()
    });
    let payload = Bytes::from_static(b"{\"hello\":\"world\"}");
    let function: std::sync::Arc<str> = "echo".into();
    let runtime: std::sync::Arc<str> = "builtin".into();
    let submission = |id: u64| Submission {
        id: ExecutionId(id),
        function: function.clone(),
        runtime: runtime.clone(),
        payload: payload.clone(),
        policy: Policy::default(),
    };
    let mut now = Instant::ZERO;
    let mut running = VecDeque::new();
    let mut next_id = 0;
    for w in 0..WORKERS {
        let id = WorkerId::new(format!("worker-{w}"));
        let capabilities = if w % 2 == 0 {
            Capabilities::Any
        } else {
            Capabilities::only([runtime.clone()])
        };
        scheduler
            .worker_connected(now, SessionId(w), id, SLOTS, capabilities)
            .unwrap();
    }
    for _ in 0..BACKLOG + u64::from(SLOTS) * WORKERS {
        scheduler.submit(now, submission(next_id)).unwrap();
        next_id += 1;
    }
    collect(&mut scheduler, &mut running);

    let started = std::time::Instant::now();
    for cycle in 0..CYCLES {
        now = now + Duration::from_micros(1);
        let (session, execution, attempt) = running.pop_front().expect("a running attempt");
        let outcome = Outcome::Success(Bytes::from_static(b"ok"));
        scheduler.result(now, session, execution, attempt, outcome);
        scheduler.submit(now, submission(next_id)).unwrap();
        next_id += 1;
        collect(&mut scheduler, &mut running);
        if cycle % 10_000 == 0 {
            for w in 0..WORKERS {
                scheduler.heartbeat(now, SessionId(w), SLOTS);
            }
            scheduler.handle_timeout(now);
            collect(&mut scheduler, &mut running);
        }
    }
    let elapsed = started.elapsed();
    let stats = scheduler.stats();
    assert_eq!(
        stats.running as u64,
        WORKERS * u64::from(SLOTS),
        "every slot busy"
    );
    assert_eq!(stats.pending as u64, BACKLOG, "backlog held");
    assert_eq!(stats.workers as u64, WORKERS, "no worker lost");
    CYCLES as f64 / elapsed.as_secs_f64()
}

fn collect(scheduler: &mut Scheduler, running: &mut VecDeque<(SessionId, ExecutionId, u32)>) {
    while let Some(output) = scheduler.poll_output() {
        if let Output::Dispatch(d) = output {
            running.push_back((d.session, d.execution, d.attempt));
        }
    }
}

//! One readable example per worker-pool rule.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::at_ms;
use taskforge_core::ExecutionId;
use taskforge_core::Outcome;
use taskforge_core::pool::{Assignment, PoolConfig, PoolOutput, Report, WorkerPool};

type Pool = WorkerPool<&'static str>;

fn pool(slots: u32) -> Pool {
    WorkerPool::new(
        PoolConfig {
            slots,
            heartbeat_interval: Duration::from_secs(1),
        },
        at_ms(0),
    )
}

fn assignment(id: u64, timeout_ms: u64) -> Assignment<&'static str> {
    Assignment {
        execution: ExecutionId(id),
        attempt: 1,
        timeout: Duration::from_millis(timeout_ms),
        job: "job",
    }
}

fn drain(pool: &mut Pool) -> Vec<PoolOutput<&'static str>> {
    std::iter::from_fn(|| pool.poll_output()).collect()
}

fn started(outputs: &[PoolOutput<&'static str>]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|o| match o {
            PoolOutput::Start { execution, .. } => Some(execution.0),
            _ => None,
        })
        .collect()
}

fn reports(outputs: &[PoolOutput<&'static str>]) -> Vec<(u64, Report)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            PoolOutput::Report {
                execution, report, ..
            } => Some((execution.0, report.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn never_runs_more_than_its_slots_and_starts_the_next_when_one_frees() {
    let mut p = pool(2);
    for id in 1..=3 {
        p.assign(at_ms(0), assignment(id, 1000));
    }
    assert_eq!(started(&drain(&mut p)), [1, 2]);
    assert_eq!((p.running(), p.queued()), (2, 1));
    assert!(p.finished(
        at_ms(5),
        ExecutionId(1),
        1,
        Outcome::Success(Bytes::from("ok"))
    ));
    let out = drain(&mut p);
    assert_eq!(reports(&out), [(1, Report::Succeeded(Bytes::from("ok")))]);
    assert_eq!(started(&out), [3]);
}

#[test]
fn a_timeout_aborts_exactly_its_execution() {
    let mut p = pool(2);
    p.assign(at_ms(0), assignment(1, 100));
    p.assign(at_ms(0), assignment(2, 500));
    drain(&mut p);
    assert_eq!(p.poll_timeout(), Some(at_ms(100)));
    p.handle_timeout(at_ms(100));
    let out = drain(&mut p);
    assert_eq!(
        out,
        [
            PoolOutput::Abort {
                execution: ExecutionId(1),
                attempt: 1
            },
            PoolOutput::Report {
                execution: ExecutionId(1),
                attempt: 1,
                report: Report::TimedOut {
                    after: Duration::from_millis(100)
                }
            }
        ]
    );
    assert_eq!(p.running_attempt(ExecutionId(2)), Some(1));
    // The aborted task's own late finish is ignored.
    assert!(!p.finished(
        at_ms(101),
        ExecutionId(1),
        1,
        Outcome::Success(Bytes::new())
    ));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn a_cancel_aborts_exactly_its_execution() {
    let mut p = pool(1);
    p.assign(at_ms(0), assignment(1, 1000));
    p.assign(at_ms(0), assignment(2, 1000));
    p.assign(at_ms(0), assignment(3, 1000));
    drain(&mut p);
    // Queued: reported cancelled, never started.
    assert!(p.cancel(at_ms(1), ExecutionId(3)));
    assert_eq!(reports(&drain(&mut p)), [(3, Report::Cancelled)]);
    // Running: aborted, reported, and the next one starts.
    assert!(p.cancel(at_ms(2), ExecutionId(1)));
    let out = drain(&mut p);
    assert_eq!(
        out[0],
        PoolOutput::Abort {
            execution: ExecutionId(1),
            attempt: 1
        }
    );
    assert_eq!(reports(&out), [(1, Report::Cancelled)]);
    assert_eq!(started(&out), [2]);
    assert!(
        !p.cancel(at_ms(3), ExecutionId(1)),
        "nothing left to cancel"
    );
}

#[test]
fn a_repeated_assignment_is_ignored_and_a_newer_attempt_replaces_the_old() {
    let mut p = pool(2);
    p.assign(at_ms(0), assignment(1, 1000));
    p.assign(at_ms(0), assignment(1, 1000));
    assert_eq!(started(&drain(&mut p)), [1]);
    p.assign(
        at_ms(1),
        Assignment {
            attempt: 2,
            ..assignment(1, 1000)
        },
    );
    let out = drain(&mut p);
    assert!(out.contains(&PoolOutput::Report {
        execution: ExecutionId(1),
        attempt: 1,
        report: Report::Cancelled
    }));
    assert_eq!(p.running_attempt(ExecutionId(1)), Some(2));
    assert_eq!(p.running(), 1);
}

#[test]
fn heartbeats_come_every_interval_with_the_running_count() {
    let mut p = pool(4);
    p.assign(at_ms(0), assignment(1, 60_000));
    drain(&mut p);
    assert_eq!(p.poll_timeout(), Some(at_ms(1000)));
    p.handle_timeout(at_ms(1000));
    assert_eq!(
        drain(&mut p),
        [PoolOutput::Heartbeat {
            running: 1,
            queued: 0
        }]
    );
    assert_eq!(p.poll_timeout(), Some(at_ms(2000)));
    p.handle_timeout(at_ms(1500));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn draining_runs_what_it_holds_to_the_end() {
    let mut p = pool(1);
    p.assign(at_ms(0), assignment(1, 1000));
    p.assign(at_ms(0), assignment(2, 1000));
    p.drain();
    assert!(p.is_draining());
    drain(&mut p);
    p.finished(at_ms(1), ExecutionId(1), 1, Outcome::Success(Bytes::new()));
    assert_eq!(started(&drain(&mut p)), [2]);
    p.finished(at_ms(2), ExecutionId(2), 1, Outcome::Success(Bytes::new()));
    assert!(p.is_idle());
}

//! One readable example per rule of adoption: what a reconnecting worker
//! still holds runs on instead of running twice, and what it cannot keep is
//! stopped.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use taskforge_core::scheduler::{
    AbortReason, Capabilities, LossReason, Output, Prior, ResultDisposition, Scheduler,
    SchedulerConfig,
};
use taskforge_core::{ExecutionId, Outcome, Policy, SessionId, Status, Terminal};

const S1: SessionId = SessionId(1);
const S2: SessionId = SessionId(2);

/// Restored attempts wait 3 s for their worker.
fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_timeout: Duration::from_secs(3),
        takeover_after: Duration::from_millis(500),
        adoption_window: Duration::from_secs(3),
        ..SchedulerConfig::default()
    }
}

fn ok(output: &str) -> Outcome {
    Outcome::Success(Bytes::from(output.to_string()))
}

fn status(s: &Scheduler, id: u64) -> Option<Status> {
    s.execution(ExecutionId(id)).map(|v| v.status)
}

fn restored(s: &mut Scheduler, id: u64, policy: Policy, attempts_started: u32) {
    let prior = Prior::Pending { attempts_started };
    s.restore(at_ms(0), submission(id, policy), prior).unwrap();
}

fn adopted(outputs: &[Output]) -> Vec<(SessionId, ExecutionId, u32)> {
    outputs
        .iter()
        .filter_map(|output| match *output {
            Output::Adopted {
                session,
                execution,
                attempt,
            } => Some((session, execution, attempt)),
            _ => None,
        })
        .collect()
}

fn not_adopted(outputs: &[Output]) -> Vec<(SessionId, ExecutionId, u32)> {
    outputs
        .iter()
        .filter_map(|output| match *output {
            Output::Abort {
                session,
                execution,
                attempt,
                reason: AbortReason::NotAdopted,
            } => Some((session, execution, attempt)),
            _ => None,
        })
        .collect()
}

fn connect_holding(
    s: &mut Scheduler,
    ms: u64,
    session: SessionId,
    name: &str,
    holding: &[(u64, u32)],
) {
    let holding: Vec<_> = holding
        .iter()
        .map(|&(id, attempt)| (ExecutionId(id), attempt))
        .collect();
    s.worker_connected_holding(
        at_ms(ms),
        session,
        worker(name),
        2,
        Capabilities::Any,
        &holding,
    )
    .unwrap();
}

fn one_attempt() -> Policy {
    Policy {
        max_attempts: 1,
        ..policy()
    }
}

#[test]
fn a_restored_attempt_waits_for_its_worker_and_is_adopted_not_run_again() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 2);
    assert_eq!(status(&s, 1), Some(Status::Running), "it may still run");
    // A worker that does not hold it gets nothing: it may run elsewhere.
    connect_holding(&mut s, 10, S1, "a", &[]);
    assert_eq!(dispatches(&drain(&mut s)), []);
    // Its worker comes back: it runs on there, under the same attempt.
    connect_holding(&mut s, 20, S2, "b", &[(1, 2)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), [(S2, ExecutionId(1), 2)]);
    assert_eq!(dispatches(&out), []);
    let view = s.execution(ExecutionId(1)).unwrap();
    assert_eq!(
        (view.status, view.session, view.attempt),
        (Status::Running, Some(S2), 2)
    );
    assert_eq!(s.in_flight(S2), [(ExecutionId(1), 2)]);
    // Its result counts; the window's end changes nothing.
    let d = s.result(at_ms(30), S2, ExecutionId(1), 2, ok("kept"));
    assert_eq!(d, ResultDisposition::Accepted);
    s.handle_timeout(at_ms(5_000));
    let out = drain(&mut s);
    assert_eq!(dispatches(&out), []);
    assert_eq!(status(&s, 1), Some(Status::Completed));
}

#[test]
fn an_attempt_nobody_reports_within_the_window_is_retried() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 1);
    connect_holding(&mut s, 0, S1, "a", &[]);
    assert_eq!(s.poll_timeout(), Some(at_ms(3_000)));
    s.handle_timeout(at_ms(2_999));
    assert_eq!(dispatches(&drain(&mut s)), []);
    s.heartbeat(at_ms(2_999), S1, 0);
    s.handle_timeout(at_ms(3_000));
    let out = drain(&mut s);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Requeued {
            execution: ExecutionId(1),
            lost_attempt: 1,
            ..
        }
    )));
    // After the retry backoff, attempt 2 starts.
    s.handle_timeout(at_ms(3_100));
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 2)]);
}

#[test]
fn a_last_attempt_nobody_reports_fails_saying_why() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, one_attempt(), 1);
    s.handle_timeout(at_ms(3_000));
    let out = drain(&mut s);
    let ended = out.iter().find_map(|o| match o {
        Output::Finished { terminal, .. } => Some(terminal.clone()),
        _ => None,
    });
    let Some(Terminal::Failed { error, .. }) = ended else {
        panic!("expected a failure, got {out:?}");
    };
    assert!(error.contains("no worker reported it running"), "{error}");
}

#[test]
fn a_last_attempt_reported_in_time_still_completes() {
    // Before adoption, an execution restored at its last attempt failed at
    // once; now its worker can still finish it.
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, one_attempt(), 1);
    connect_holding(&mut s, 100, S1, "a", &[(1, 1)]);
    assert_eq!(adopted(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);
    s.result(at_ms(200), S1, ExecutionId(1), 1, ok("done"));
    assert_eq!(status(&s, 1), Some(Status::Completed));
}

#[test]
fn what_cannot_be_adopted_is_aborted_and_holds_its_slot_until_reported() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 2);
    // An older attempt, and an execution the scheduler does not know.
    connect_holding(&mut s, 0, S1, "a", &[(1, 1), (9, 4)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), []);
    assert_eq!(
        not_adopted(&out),
        [(S1, ExecutionId(1), 1), (S1, ExecutionId(9), 4)]
    );
    assert_eq!(s.in_flight(S1).len(), 2, "the worker's slots are busy");
    // Reports of the aborted attempts free the slots, and change nothing.
    let d = s.result(at_ms(10), S1, ExecutionId(1), 1, ok("late"));
    assert_eq!(d, ResultDisposition::Released);
    assert_eq!(status(&s, 1), Some(Status::Running), "still orphaned");
    s.result(at_ms(10), S1, ExecutionId(9), 4, ok("unknown"));
    assert_eq!(s.in_flight(S1), []);
}

#[test]
fn a_cancelled_orphan_ends_and_its_worker_is_told_to_stop_it() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 1);
    assert_eq!(s.cancel(at_ms(5), ExecutionId(1)), Ok(Status::Running));
    drain(&mut s);
    connect_holding(&mut s, 10, S1, "a", &[(1, 1)]);
    assert_eq!(not_adopted(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);
    assert_eq!(status(&s, 1), Some(Status::Cancelled));
}

#[test]
fn a_lost_attempt_not_started_again_is_adopted_when_its_worker_returns() {
    let mut s = Scheduler::new(config());
    connect_holding(&mut s, 0, S1, "a", &[]);
    s.submit(
        at_ms(0),
        submission(
            1,
            Policy {
                max_attempts: 2,
                ..policy()
            },
        ),
    )
    .unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);
    // The stream breaks; the worker keeps running the attempt and is back
    // before the retry's backoff is over.
    s.worker_disconnected(at_ms(10), S1);
    drain(&mut s);
    assert_eq!(status(&s, 1), Some(Status::Pending));
    connect_holding(&mut s, 50, S2, "a", &[(1, 1)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), [(S2, ExecutionId(1), 1)]);
    assert_eq!(dispatches(&out), [], "not started a second time");
    s.handle_timeout(at_ms(500));
    assert_eq!(dispatches(&drain(&mut s)), [], "nor by the backoff timer");
    // The attempt was not lost after all: losing it now is its first loss,
    // and the second attempt may still run.
    s.worker_disconnected(at_ms(600), S2);
    assert_eq!(status(&s, 1), Some(Status::Pending));
}

#[test]
fn a_worker_replacing_its_silent_session_keeps_what_it_lists() {
    let mut s = Scheduler::new(config());
    connect_holding(&mut s, 0, S1, "a", &[]);
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    s.submit(at_ms(0), submission(2, policy())).unwrap();
    assert_eq!(dispatches(&drain(&mut s)).len(), 2);
    // Silent past the takeover delay; it comes back holding only 1.
    connect_holding(&mut s, 1_000, S2, "a", &[(1, 1)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), [(S2, ExecutionId(1), 1)]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::WorkerLost {
            session: S1,
            reason: LossReason::Replaced,
            ..
        }
    )));
    assert_eq!(s.execution(ExecutionId(1)).unwrap().session, Some(S2));
    // 2 was lost with the old session: retried, not adopted.
    assert_eq!(status(&s, 2), Some(Status::Pending));
    let d = s.result(at_ms(1_010), S2, ExecutionId(1), 1, ok("kept"));
    assert_eq!(d, ResultDisposition::Accepted);
}

#[test]
fn an_attempt_the_scheduler_timed_out_is_not_adopted() {
    let mut s = Scheduler::new(SchedulerConfig {
        timeout_grace: Duration::from_millis(100),
        ..config()
    });
    connect_holding(&mut s, 0, S1, "a", &[]);
    let quick = Policy {
        timeout: Duration::from_millis(200),
        ..policy()
    };
    s.submit(at_ms(0), submission(1, quick)).unwrap();
    drain(&mut s);
    // No result by 300 ms: the scheduler told the worker to stop it.
    s.heartbeat(at_ms(250), S1, 1);
    s.handle_timeout(at_ms(300));
    drain(&mut s);
    s.worker_disconnected(at_ms(310), S1);
    drain(&mut s);
    connect_holding(&mut s, 320, S2, "a", &[(1, 1)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), []);
    assert_eq!(not_adopted(&out), [(S2, ExecutionId(1), 1)]);
}

#[test]
fn an_attempt_running_on_another_session_is_not_adopted() {
    let mut s = Scheduler::new(config());
    connect_holding(&mut s, 0, S1, "a", &[]);
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    drain(&mut s);
    connect_holding(&mut s, 10, S2, "b", &[(1, 1)]);
    let out = drain(&mut s);
    assert_eq!(not_adopted(&out), [(S2, ExecutionId(1), 1)]);
    assert_eq!(s.execution(ExecutionId(1)).unwrap().session, Some(S1));
}

#[test]
fn an_attempt_whose_start_record_was_lost_is_adopted() {
    // The scheduler crashed before the start of attempt 1 was durable: it
    // restored the execution as never started, but a worker runs it.
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 0);
    connect_holding(&mut s, 10, S1, "a", &[(1, 1)]);
    let out = drain(&mut s);
    assert_eq!(adopted(&out), [(S1, ExecutionId(1), 1)]);
    assert_eq!(dispatches(&out), [], "not started again as attempt 1");
    let view = s.execution(ExecutionId(1)).unwrap();
    assert_eq!((view.status, view.attempt), (Status::Running, 1));
    let d = s.result(at_ms(20), S1, ExecutionId(1), 1, ok("kept"));
    assert_eq!(d, ResultDisposition::Accepted);
}

#[test]
fn a_number_taken_by_an_attempt_being_stopped_is_never_given_out_again() {
    let mut s = Scheduler::new(config());
    restored(&mut s, 1, policy(), 1);
    connect_holding(&mut s, 10, S1, "a", &[(1, 1)]);
    // Another worker holds attempt 2, dispatched before a crash lost its
    // record; attempt 1 runs on: 2 is stopped.
    connect_holding(&mut s, 20, S2, "b", &[(1, 2)]);
    assert_eq!(not_adopted(&drain(&mut s)), [(S2, ExecutionId(1), 2)]);
    // Attempt 1 is lost; the retry is attempt 3, so the report of the
    // stopped attempt 2 cannot pass for it.
    s.worker_disconnected(at_ms(30), S1);
    s.handle_timeout(at_ms(200));
    assert_eq!(dispatches(&drain(&mut s)), [(S2, ExecutionId(1), 3)]);
    let d = s.result(at_ms(210), S2, ExecutionId(1), 2, ok("stopped"));
    assert_eq!(d, ResultDisposition::Released);
    let d = s.result(at_ms(220), S2, ExecutionId(1), 3, ok("done"));
    assert_eq!(d, ResultDisposition::Accepted);
    assert_eq!(status(&s, 1), Some(Status::Completed));
}

#[test]
fn a_taken_last_number_fails_a_waiting_execution() {
    let mut s = Scheduler::new(SchedulerConfig {
        adoption_window: Duration::ZERO,
        ..config()
    });
    let two = Policy {
        max_attempts: 2,
        ..policy()
    };
    s.submit(at_ms(0), submission(1, two)).unwrap();
    // Timed out by the scheduler on S1, so it is not adoptable; a worker
    // comes back holding attempt 2 of it: the last number is taken.
    connect_holding(&mut s, 0, S1, "a", &[]);
    drain(&mut s);
    s.heartbeat(at_ms(14_000), S1, 1);
    s.handle_timeout(at_ms(15_000));
    drain(&mut s);
    connect_holding(&mut s, 15_010, S2, "b", &[(1, 2)]);
    let out = drain(&mut s);
    assert_eq!(not_adopted(&out), [(S2, ExecutionId(1), 2)]);
    let Terminal::Failed { error, .. } = terminal_of(&out, 1) else {
        panic!("expected a failure: {out:?}");
    };
    assert!(error.contains("out of attempts"), "{error}");
}

fn terminal_of(outputs: &[Output], id: u64) -> Terminal {
    outputs
        .iter()
        .find_map(|output| match output {
            Output::Finished {
                execution,
                terminal,
            } if *execution == ExecutionId(id) => Some(terminal.clone()),
            _ => None,
        })
        .expect("the execution finished")
}

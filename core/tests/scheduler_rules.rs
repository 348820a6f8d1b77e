//! One readable example per scheduling and failure rule.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use taskforge_core::scheduler::{
    AbortReason, Backoff, CancelError, Capabilities, ConnectError, LossReason, Output, Prior,
    ResultDisposition, Retention, Scheduler, SchedulerConfig, SubmitError,
};
use taskforge_core::{ExecutionId, Outcome, Policy, SessionId, Status, Terminal};

const S1: SessionId = SessionId(1);
const S2: SessionId = SessionId(2);
const S3: SessionId = SessionId(3);

fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_timeout: Duration::from_secs(3),
        queue_limit: 100,
        prefetch: 0,
        retry_backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        timeout_grace: Duration::from_secs(1),
        retention: Retention {
            max_age: Duration::from_secs(60),
            max_count: 1000,
        },
        quarantine_after: 2,
        takeover_after: Duration::from_millis(500),
        // Restored attempts retry at once unless a test gives them a window.
        adoption_window: Duration::ZERO,
    }
}

fn ok(output: &str) -> Outcome {
    Outcome::Success(Bytes::from(output.to_string()))
}

fn status(s: &Scheduler, id: u64) -> Option<Status> {
    s.execution(ExecutionId(id)).map(|v| v.status)
}

/// How `id` ended, from the outputs not drained yet (the core hands the
/// terminal state out once, in `Output::Finished`, and keeps only the status).
fn terminal(s: &mut Scheduler, id: u64) -> Terminal {
    terminal_in(&drain(s), id)
}

fn terminal_in(outputs: &[Output], id: u64) -> Terminal {
    let mut ends = outputs.iter().filter_map(|output| match output {
        Output::Finished {
            execution,
            terminal,
        } if *execution == ExecutionId(id) => Some(terminal.clone()),
        _ => None,
    });
    let terminal = ends.next().expect("the execution finished");
    assert_eq!(ends.next(), None, "an execution finishes once");
    terminal
}

fn runs(runtimes: &[&str]) -> Capabilities {
    Capabilities::only(runtimes.iter().copied())
}

fn sessions(outputs: &[Output]) -> Vec<SessionId> {
    dispatches(outputs).iter().map(|d| d.0).collect()
}

fn queued(s: &Scheduler) -> Vec<(String, usize)> {
    s.queued_by_runtime()
        .map(|(runtime, n)| (runtime.to_string(), n))
        .collect()
}

#[test]
fn dispatch_goes_to_the_worker_with_the_most_free_slots() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("small"), 1, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("big"), 4, Capabilities::Any)
        .unwrap();
    for id in 0..3 {
        s.submit(at_ms(1), submission(id, policy())).unwrap();
    }
    // big has 4 free, then 3, then 2 — always more than small's 1.
    let sent: Vec<_> = dispatches(&drain(&mut s)).iter().map(|d| d.0).collect();
    assert_eq!(sent, [S2, S2, S2]);
    s.submit(at_ms(2), submission(3, policy())).unwrap();
    s.submit(at_ms(2), submission(4, policy())).unwrap();
    // Now big has 1 free and small has 1: ties go to the older session.
    let sent: Vec<_> = dispatches(&drain(&mut s)).iter().map(|d| d.0).collect();
    assert_eq!(sent, [S1, S2]);
}

#[test]
fn ties_are_broken_by_session_order_not_by_arrival_of_ids() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S3, worker("c"), 2, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S1, worker("a"), 2, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("b"), 2, Capabilities::Any)
        .unwrap();
    for id in 0..6 {
        s.submit(at_ms(1), submission(id, policy())).unwrap();
    }
    let sent: Vec<_> = dispatches(&drain(&mut s)).iter().map(|d| d.0).collect();
    assert_eq!(sent, [S1, S2, S3, S1, S2, S3]);
}

#[test]
fn executions_wait_when_every_slot_is_busy_and_start_when_one_frees() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 2, Capabilities::Any)
        .unwrap();
    for id in 0..3 {
        s.submit(at_ms(1), submission(id, policy())).unwrap();
    }
    assert_eq!(dispatches(&drain(&mut s)).len(), 2);
    assert_eq!(status(&s, 2), Some(Status::Pending));
    assert_eq!(s.stats().in_flight, 2);

    let d = s.result(at_ms(5), S1, ExecutionId(0), 1, ok("done"));
    assert_eq!(d, ResultDisposition::Accepted);
    let out = drain(&mut s);
    assert_eq!(dispatches(&out), [(S1, ExecutionId(2), 1)]);
    assert_eq!(status(&s, 0), Some(Status::Completed));
}

#[test]
fn prefetch_lets_a_worker_hold_a_little_more_than_its_pool() {
    let mut s = Scheduler::new(SchedulerConfig {
        prefetch: 1,
        ..config()
    });
    s.worker_connected(at_ms(0), S1, worker("w"), 2, Capabilities::Any)
        .unwrap();
    for id in 0..5 {
        s.submit(at_ms(1), submission(id, policy())).unwrap();
    }
    assert_eq!(dispatches(&drain(&mut s)).len(), 3);
    assert_eq!(s.stats().capacity, 2, "capacity counts pool sizes only");
}

#[test]
fn a_full_queue_refuses_clearly_and_changes_nothing() {
    let mut s = Scheduler::new(SchedulerConfig {
        queue_limit: 2,
        ..config()
    });
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    s.submit(at_ms(0), submission(2, policy())).unwrap();
    let refused = s.submit(at_ms(0), submission(3, policy())).unwrap_err();
    assert_eq!(refused, SubmitError::QueueFull { limit: 2 });
    assert!(refused.to_string().contains("queue is full"));
    assert_eq!(status(&s, 3), None);
    assert_eq!(s.stats().pending, 2);
}

#[test]
fn bad_submissions_are_refused() {
    let mut s = Scheduler::new(config());
    let no_attempts = Policy {
        max_attempts: 0,
        ..policy()
    };
    assert!(matches!(
        s.submit(at_ms(0), submission(1, no_attempts)),
        Err(SubmitError::InvalidPolicy(_))
    ));
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    assert_eq!(
        s.submit(at_ms(0), submission(1, policy())),
        Err(SubmitError::Duplicate(ExecutionId(1)))
    );
}

#[test]
fn with_no_worker_executions_wait_and_run_when_one_connects() {
    let mut s = Scheduler::new(config());
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    s.handle_timeout(at_ms(60_000));
    assert_eq!(status(&s, 1), Some(Status::Pending));
    s.worker_connected(at_ms(60_001), S1, worker("late"), 1, Capabilities::Any)
        .unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);
}

#[test]
fn the_schedule_to_start_deadline_fails_an_execution_that_never_started() {
    let mut s = Scheduler::new(config());
    let waiting = Policy {
        schedule_to_start: Some(Duration::from_secs(2)),
        ..policy()
    };
    s.submit(at_ms(0), submission(1, waiting)).unwrap();
    assert_eq!(s.poll_timeout(), Some(at_ms(2000)));
    s.handle_timeout(at_ms(1999));
    assert_eq!(status(&s, 1), Some(Status::Pending));
    s.handle_timeout(at_ms(2000));
    let view = s.execution(ExecutionId(1)).unwrap();
    assert_eq!(view.status, Status::Failed);
    let terminal = terminal(&mut s, 1);
    let error = terminal.error();
    assert!(error.contains("not started within 2s"), "{error}");
    assert!(
        error.contains("no connected worker runs builtin"),
        "{error}"
    );
}

#[test]
fn a_lost_worker_s_executions_are_retried_with_the_next_attempt_after_backoff() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("a"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);

    s.worker_connected(at_ms(10), S2, worker("b"), 1, Capabilities::Any)
        .unwrap();
    assert!(s.worker_disconnected(at_ms(20), S1));
    let out = drain(&mut s);
    assert!(out.contains(&Output::WorkerLost {
        session: S1,
        worker: worker("a"),
        reason: LossReason::Disconnected
    }));
    assert!(out.contains(&Output::Requeued {
        execution: ExecutionId(1),
        lost_attempt: 1,
        retry_at: at_ms(120)
    }));
    assert!(dispatches(&out).is_empty(), "backoff first");
    assert_eq!(status(&s, 1), Some(Status::Pending));

    s.handle_timeout(at_ms(120));
    assert_eq!(dispatches(&drain(&mut s)), [(S2, ExecutionId(1), 2)]);
}

#[test]
fn a_silent_worker_is_declared_lost_at_the_heartbeat_timeout() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("quiet"), 1, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("chatty"), 1, Capabilities::Any)
        .unwrap();
    for t in [1000, 2000, 3000, 4000] {
        assert!(s.heartbeat(at_ms(t), S2, 0));
        s.handle_timeout(at_ms(t));
    }
    let lost: Vec<_> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::WorkerLost {
                session, reason, ..
            } => Some((session, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [(S1, LossReason::HeartbeatTimeout)]);
    assert_eq!(s.stats().workers, 1);
    assert!(
        !s.heartbeat(at_ms(4001), S1, 0),
        "a lost session stays lost"
    );
}

#[test]
fn after_max_attempts_lost_the_execution_fails_saying_why() {
    let mut s = Scheduler::new(SchedulerConfig {
        retry_backoff: Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        },
        ..config()
    });
    let two = Policy {
        max_attempts: 2,
        ..policy()
    };
    s.submit(at_ms(0), submission(1, two)).unwrap();
    for (session, name) in [(S1, "a"), (S2, "b")] {
        s.worker_connected(at_ms(1), session, worker(name), 1, Capabilities::Any)
            .unwrap();
        s.worker_disconnected(at_ms(2), session);
    }
    let view = s.execution(ExecutionId(1)).unwrap();
    assert_eq!(view.status, Status::Failed);
    assert_eq!(view.attempt, 2);
    let terminal = terminal(&mut s, 1);
    let error = terminal.error();
    assert!(error.starts_with("worker lost 2 times"), "{error}");
}

#[test]
fn a_failing_function_is_not_retried() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("a"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    let outcome = Outcome::Failure {
        error: "boom".into(),
        output: Bytes::new(),
    };
    assert_eq!(
        s.result(at_ms(1), S1, ExecutionId(1), 1, outcome),
        ResultDisposition::Accepted
    );
    let view = s.execution(ExecutionId(1)).unwrap();
    assert_eq!(view.status, Status::Failed);
    assert_eq!(terminal(&mut s, 1).error(), "boom");
}

#[test]
fn results_from_stale_attempts_duplicates_and_wrong_workers_change_nothing() {
    let mut s = Scheduler::new(SchedulerConfig {
        retry_backoff: Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        },
        ..config()
    });
    s.worker_connected(at_ms(0), S1, worker("a"), 1, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("b"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    s.submit(at_ms(0), submission(2, policy())).unwrap();
    drain(&mut s);
    // 1 runs on S1 (attempt 1), 2 on S2. S1 dies; 1 is retried as attempt 2 on S3.
    s.worker_disconnected(at_ms(1), S1);
    s.worker_connected(at_ms(2), S3, worker("c"), 1, Capabilities::Any)
        .unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S3, ExecutionId(1), 2)]);

    // The lost session's late result.
    assert_eq!(
        s.result(at_ms(3), S1, ExecutionId(1), 1, ok("late")),
        ResultDisposition::Stale
    );
    // The old attempt number on the right session.
    assert_eq!(
        s.result(at_ms(3), S3, ExecutionId(1), 1, ok("old")),
        ResultDisposition::Stale
    );
    // The right attempt from the wrong worker.
    assert_eq!(
        s.result(at_ms(3), S2, ExecutionId(1), 2, ok("misrouted")),
        ResultDisposition::Stale
    );
    assert_eq!(status(&s, 1), Some(Status::Running));
    assert_eq!(
        s.result(at_ms(4), S3, ExecutionId(1), 2, ok("right")),
        ResultDisposition::Accepted
    );
    // A duplicate of the accepted one.
    assert_eq!(
        s.result(at_ms(5), S3, ExecutionId(1), 2, ok("again")),
        ResultDisposition::Stale
    );
    assert_eq!(terminal(&mut s, 1).output(), &Bytes::from("right"));
}

#[test]
fn a_reconnect_under_the_same_id_replaces_a_silent_old_session() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    drain(&mut s);
    // Nothing heard from S1 for takeover_after (500 ms): the new stream wins.
    s.worker_connected(at_ms(500), S2, worker("w"), 1, Capabilities::Any)
        .unwrap();
    let out = drain(&mut s);
    assert!(out.contains(&Output::WorkerLost {
        session: S1,
        worker: worker("w"),
        reason: LossReason::Replaced
    }));
    assert_eq!(s.stats().workers, 1);
    // The old stream ending later must not take the new session down.
    assert!(!s.worker_disconnected(at_ms(501), S1));
    assert_eq!(s.stats().workers, 1);
    s.handle_timeout(at_ms(600));
    assert_eq!(dispatches(&drain(&mut s)), [(S2, ExecutionId(1), 2)]);
}

#[test]
fn a_second_live_connection_under_an_id_is_refused_while_the_first_is_heard() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 1, Capabilities::Any)
        .unwrap();
    s.heartbeat(at_ms(300), S1, 0);
    let refused = s.worker_connected(at_ms(700), S2, worker("w"), 1, Capabilities::Any);
    assert_eq!(
        refused,
        Err(ConnectError::IdInUse {
            id: worker("w"),
            session: S1,
            silent_for: Duration::from_millis(400),
        })
    );
    assert!(drain(&mut s).is_empty(), "the live session keeps its work");
    assert_eq!(s.workers().map(|w| w.session).collect::<Vec<_>>(), [S1]);
    // Once the first goes quiet for takeover_after, the id can be taken over.
    s.worker_connected(at_ms(800), S3, worker("w"), 1, Capabilities::Any)
        .unwrap();
    assert_eq!(s.workers().map(|w| w.session).collect::<Vec<_>>(), [S3]);
}

#[test]
fn the_scheduler_backs_up_the_worker_s_timeout_and_retries_elsewhere() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 2, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    drain(&mut s);
    // timeout 10 s + grace 1 s; the worker keeps heartbeating but never reports.
    for t in (1000..=11_000).step_by(1000) {
        s.heartbeat(at_ms(t), S1, 1);
        s.handle_timeout(at_ms(t));
    }
    let out = drain(&mut s);
    assert!(out.contains(&Output::Abort {
        session: S1,
        execution: ExecutionId(1),
        attempt: 1,
        reason: AbortReason::NoResult,
    }));
    // Not the function's verdict: the attempt is lost, and the execution waits
    // for another try.
    assert!(out.contains(&Output::Requeued {
        execution: ExecutionId(1),
        lost_attempt: 1,
        retry_at: at_ms(11_100),
    }));
    assert_eq!(status(&s, 1), Some(Status::Pending));
    // The slot stays busy until the worker answers for the attempt.
    assert!(dispatches(&out).is_empty());
    // Another worker joins with as much room as S1 has left (one slot each;
    // a tie S1 would win as the older session): the retry goes to S2.
    s.worker_connected(at_ms(11_050), S2, worker("v"), 1, Capabilities::Any)
        .unwrap();
    s.handle_timeout(at_ms(11_100));
    assert_eq!(dispatches(&drain(&mut s)), [(S2, ExecutionId(1), 2)]);
    let cancelled = Outcome::Failure {
        error: "cancelled".into(),
        output: Bytes::new(),
    };
    assert_eq!(
        s.result(at_ms(11_500), S1, ExecutionId(1), 1, cancelled),
        ResultDisposition::Released
    );
    assert_eq!(status(&s, 1), Some(Status::Running), "still running on S2");
}

#[test]
fn a_worker_whose_attempts_keep_timing_out_is_quarantined_until_it_answers() {
    let mut s = Scheduler::new(config());
    // A black hole with room for everything, and a real worker.
    s.worker_connected(at_ms(0), S1, worker("hole"), 100, Capabilities::Any)
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("real"), 1, Capabilities::Any)
        .unwrap();
    let short = Policy {
        timeout: Duration::from_secs(1),
        ..policy()
    };
    for id in 1..=3 {
        s.submit(at_ms(0), submission(id, short)).unwrap();
    }
    // S1 has the most room: 1 and 2 go there; 3 goes... also there (99 free > 1).
    let first = dispatches(&drain(&mut s));
    assert!(
        first.iter().all(|&(session, _, _)| session == S1),
        "{first:?}"
    );
    // Timeout 1 s + grace 1 s, the hole heartbeating all along.
    for t in (250..=2000).step_by(250) {
        s.heartbeat(at_ms(t), S1, 3);
        s.heartbeat(at_ms(t), S2, 0);
        s.handle_timeout(at_ms(t));
    }
    let out = drain(&mut s);
    assert!(out.contains(&Output::Quarantined {
        session: S1,
        worker: worker("hole"),
    }));
    let hole = s.workers().find(|w| w.session == S1).unwrap();
    assert!(hole.quarantined);
    assert_eq!(hole.timeouts_in_a_row, 3);
    assert_eq!(s.stats().quarantined, 1);
    // The retries go to the real worker only, one at a time.
    s.handle_timeout(at_ms(2100));
    let retried = dispatches(&drain(&mut s));
    assert_eq!(retried.len(), 1);
    let (session, first, attempt) = retried[0];
    assert_eq!((session, attempt), (S2, 2));
    s.result(at_ms(2200), S2, first, 2, ok("done"));
    let retried = dispatches(&drain(&mut s));
    assert_eq!(retried.len(), 1);
    let (session, second, attempt) = retried[0];
    assert_eq!((session, attempt), (S2, 2));
    // The hole answers for everything it held: it takes work again.
    for id in 1..=3 {
        s.result(at_ms(2300), S1, ExecutionId(id), 1, ok("late"));
    }
    let out = drain(&mut s);
    assert!(out.contains(&Output::QuarantineLifted {
        session: S1,
        worker: worker("hole"),
    }));
    let third = ExecutionId(6 - first.0 - second.0);
    assert_eq!(dispatches(&out), [(S1, third, 2)]);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Finished { execution, .. } if *execution == first)),
        "a late answer for a lost attempt changes nothing"
    );
    assert_eq!(s.execution(first).unwrap().status, Status::Completed);
}

#[test]
fn an_execution_that_never_gets_a_result_fails_after_its_attempts() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("hole"), 10, Capabilities::Any)
        .unwrap();
    let short = Policy {
        max_attempts: 2,
        timeout: Duration::from_secs(1),
        ..policy()
    };
    s.submit(at_ms(0), submission(1, short)).unwrap();
    for t in (100..=6000).step_by(100) {
        s.heartbeat(at_ms(t), S1, 1);
        s.handle_timeout(at_ms(t));
    }
    // Only one worker: the retry goes back to it (there is nowhere else).
    let out = drain(&mut s);
    assert_eq!(
        dispatches(&out),
        [(S1, ExecutionId(1), 1), (S1, ExecutionId(1), 2)]
    );
    let terminal = terminal_in(&out, 1);
    let error = terminal.error();
    assert!(
        error.starts_with("timed out: no result within 1s (+1s grace), 2 attempts lost"),
        "{error}"
    );
}

#[test]
fn restored_executions_keep_their_finishing_time_for_retention() {
    let mut s = Scheduler::new(config());
    let done = Terminal::Completed {
        output: Bytes::from("old"),
    };
    // Restarted at t = 80 s; retention is 60 s.
    s.restore(
        at_ms(80_000),
        submission(1, policy()),
        Prior::Finished {
            status: done.status(),
            attempt: 1,
            finished_at: at_ms(50_000),
        },
    )
    .unwrap();
    s.restore(
        at_ms(80_000),
        submission(2, policy()),
        Prior::Finished {
            status: done.status(),
            attempt: 1,
            finished_at: at_ms(30_000),
        },
    )
    .unwrap();
    // Finished 50 s before the restart: already past its retention.
    s.restore(
        at_ms(80_000),
        submission(3, policy()),
        Prior::Finished {
            status: Status::Cancelled,
            attempt: 0,
            finished_at: at_ms(10_000),
        },
    )
    .unwrap();
    assert!(s.execution(ExecutionId(3)).is_none());
    assert_eq!(s.poll_timeout(), Some(at_ms(90_000)), "the older one first");
    s.handle_timeout(at_ms(90_000));
    assert!(s.execution(ExecutionId(2)).is_none());
    assert!(s.execution(ExecutionId(1)).is_some());
    s.handle_timeout(at_ms(110_000));
    assert!(s.execution(ExecutionId(1)).is_none());
}

#[test]
fn cancelling_a_pending_execution_ends_it_at_once() {
    let mut s = Scheduler::new(config());
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    assert_eq!(s.cancel(at_ms(1), ExecutionId(1)), Ok(Status::Pending));
    assert_eq!(status(&s, 1), Some(Status::Cancelled));
    s.worker_connected(at_ms(2), S1, worker("w"), 1, Capabilities::Any)
        .unwrap();
    assert!(dispatches(&drain(&mut s)).is_empty());
    assert_eq!(
        s.cancel(at_ms(3), ExecutionId(1)),
        Err(CancelError::AlreadyFinished {
            id: ExecutionId(1),
            status: Status::Cancelled
        })
    );
    assert_eq!(
        s.cancel(at_ms(3), ExecutionId(9)),
        Err(CancelError::NotFound(ExecutionId(9)))
    );
}

#[test]
fn cancelling_a_running_execution_aborts_it_on_its_worker() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    s.submit(at_ms(0), submission(2, policy())).unwrap();
    drain(&mut s);
    assert_eq!(s.cancel(at_ms(1), ExecutionId(1)), Ok(Status::Running));
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Abort {
            session: S1,
            execution: ExecutionId(1),
            attempt: 1,
            reason: AbortReason::Ended,
        }
    );
    assert_eq!(status(&s, 1), Some(Status::Cancelled));
    assert!(
        dispatches(&out).is_empty(),
        "slot busy until the worker reports"
    );
    // The worker's late success does not resurrect it.
    assert_eq!(
        s.result(at_ms(2), S1, ExecutionId(1), 1, ok("too late")),
        ResultDisposition::Released
    );
    assert_eq!(status(&s, 1), Some(Status::Cancelled));
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(2), 1)]);
}

#[test]
fn a_draining_worker_gets_no_new_work() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 2, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    drain(&mut s);
    assert!(s.worker_draining(at_ms(1), S1));
    s.submit(at_ms(2), submission(2, policy())).unwrap();
    assert!(dispatches(&drain(&mut s)).is_empty());
    s.result(at_ms(3), S1, ExecutionId(1), 1, ok("x"));
    assert!(dispatches(&drain(&mut s)).is_empty());
    assert_eq!(status(&s, 2), Some(Status::Pending));
}

#[test]
fn terminal_executions_are_forgotten_by_count_and_by_age() {
    let mut s = Scheduler::new(SchedulerConfig {
        retention: Retention {
            max_age: Duration::from_secs(10),
            max_count: 2,
        },
        ..config()
    });
    for id in 1..=3 {
        s.submit(at_ms(id), submission(id, policy())).unwrap();
        s.cancel(at_ms(id), ExecutionId(id)).unwrap();
    }
    assert_eq!(status(&s, 1), None, "over the count");
    assert!(drain(&mut s).contains(&Output::Evicted {
        execution: ExecutionId(1)
    }));
    assert_eq!(s.poll_timeout(), Some(at_ms(10_002)));
    s.handle_timeout(at_ms(10_002));
    assert_eq!(status(&s, 2), None, "over the age");
    assert_eq!(status(&s, 3), Some(Status::Cancelled));
    assert_eq!(s.stats().cancelled, 1);
}

#[test]
fn restored_executions_queue_again_and_finished_ones_are_remembered() {
    let mut s = Scheduler::new(config());
    s.restore(
        at_ms(0),
        submission(1, policy()),
        Prior::Pending {
            attempts_started: 1,
        },
    )
    .unwrap();
    let done = Terminal::Completed {
        output: Bytes::from("kept"),
    };
    s.restore(
        at_ms(0),
        submission(2, policy()),
        Prior::Finished {
            status: done.status(),
            attempt: 1,
            finished_at: at_ms(0),
        },
    )
    .unwrap();
    s.restore(
        at_ms(0),
        submission(3, policy()),
        Prior::Pending {
            attempts_started: 3,
        },
    )
    .unwrap();
    let kept = s.execution(ExecutionId(2)).unwrap();
    assert_eq!((kept.status, kept.attempt), (done.status(), 1));
    assert_eq!(status(&s, 3), Some(Status::Failed), "out of attempts");
    s.worker_connected(at_ms(1), S1, worker("w"), 4, Capabilities::Any)
        .unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 2)]);
}

#[test]
fn the_next_timeout_is_the_earliest_deadline() {
    let mut s = Scheduler::new(config());
    assert_eq!(s.poll_timeout(), None);
    s.worker_connected(at_ms(0), S1, worker("w"), 1, Capabilities::Any)
        .unwrap();
    assert_eq!(s.poll_timeout(), Some(at_ms(3000)), "liveness check");
    s.submit(at_ms(0), submission(1, policy())).unwrap();
    assert_eq!(s.poll_timeout(), Some(at_ms(3000)));
    s.heartbeat(at_ms(2500), S1, 1);
    s.handle_timeout(at_ms(3000));
    assert_eq!(
        s.poll_timeout(),
        Some(at_ms(5500)),
        "re-armed from last heard"
    );
}

// ----- runtimes ------------------------------------------------------------

#[test]
fn an_execution_goes_only_to_a_worker_that_runs_its_runtime() {
    let mut s = Scheduler::new(config());
    // S1 has far more room, but runs only wasm.
    s.worker_connected(at_ms(0), S1, worker("wasm"), 8, runs(&["wasm"]))
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("builtin"), 1, runs(&["builtin"]))
        .unwrap();
    s.submit(at_ms(1), submission_in("builtin", 1, policy()))
        .unwrap();
    s.submit(at_ms(1), submission_in("wasm", 2, policy()))
        .unwrap();
    assert_eq!(
        dispatches(&drain(&mut s)),
        [(S2, ExecutionId(1), 1), (S1, ExecutionId(2), 1)]
    );
    // S2 is full: another builtin execution waits rather than go to S1.
    s.submit(at_ms(2), submission_in("builtin", 3, policy()))
        .unwrap();
    assert!(dispatches(&drain(&mut s)).is_empty());
    assert_eq!(status(&s, 3), Some(Status::Pending));
}

#[test]
fn among_the_workers_that_run_it_the_least_loaded_gets_the_execution() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("wasm"), 8, runs(&["wasm"]))
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("both"), 2, runs(&["builtin", "wasm"]))
        .unwrap();
    s.worker_connected(at_ms(0), S3, worker("builtin"), 3, runs(&["builtin"]))
        .unwrap();
    for id in 1..=3 {
        s.submit(at_ms(1), submission_in("builtin", id, policy()))
            .unwrap();
    }
    // S1's 8 free slots do not count for builtin: S3 (3 free), then S2 and
    // S3 tie at 2 (the older session wins), then S3 (2 free against 1).
    assert_eq!(sessions(&drain(&mut s)), [S3, S2, S3]);
    s.submit(at_ms(2), submission_in("wasm", 4, policy()))
        .unwrap();
    assert_eq!(sessions(&drain(&mut s)), [S1]);
}

#[test]
fn a_seed_worker_that_announced_nothing_runs_every_runtime() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("seed"), 3, Capabilities::Any)
        .unwrap();
    for (id, runtime) in [(1, "builtin"), (2, "wasm"), (3, "python")] {
        s.submit(at_ms(1), submission_in(runtime, id, policy()))
            .unwrap();
    }
    assert_eq!(sessions(&drain(&mut s)), [S1, S1, S1]);
    let seed = s.workers().next().unwrap();
    assert_eq!(seed.capabilities, &Capabilities::Any);
}

#[test]
fn a_waiting_execution_no_worker_can_take_does_not_hold_back_other_runtimes() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("a"), 1, runs(&["a"]))
        .unwrap();
    // 1 (runtime b) is first in line, but no worker runs b: 2 (runtime a)
    // behind it starts anyway.
    s.submit(at_ms(1), submission_in("b", 1, policy())).unwrap();
    s.submit(at_ms(1), submission_in("a", 2, policy())).unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(2), 1)]);
    assert_eq!(status(&s, 1), Some(Status::Pending));
    // A worker that runs b arrives: 1 starts there.
    s.worker_connected(at_ms(2), S2, worker("b"), 1, runs(&["b"]))
        .unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S2, ExecutionId(1), 1)]);
}

#[test]
fn across_runtimes_the_execution_that_became_ready_first_goes_first() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("ab"), 1, runs(&["a", "b"]))
        .unwrap();
    s.submit(at_ms(1), submission_in("a", 1, policy())).unwrap();
    s.submit(at_ms(2), submission_in("b", 2, policy())).unwrap();
    s.submit(at_ms(3), submission_in("a", 3, policy())).unwrap();
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 1)]);
    // The slot frees: b's head (ready at 2 ms) goes before a's (3 ms).
    s.result(at_ms(4), S1, ExecutionId(1), 1, ok("done"));
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(2), 1)]);
    s.result(at_ms(5), S1, ExecutionId(2), 1, ok("done"));
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(3), 1)]);
}

#[test]
fn an_execution_no_connected_worker_runs_fails_at_its_schedule_to_start_deadline() {
    let mut s = Scheduler::new(config());
    let waiting = Policy {
        schedule_to_start: Some(Duration::from_secs(2)),
        ..policy()
    };
    s.worker_connected(at_ms(0), S1, worker("a"), 1, runs(&["a"]))
        .unwrap();
    s.submit(at_ms(0), submission_in("a", 1, policy())).unwrap();
    // 2 has a worker that runs it, but that worker is busy; 3 has none.
    s.submit(at_ms(0), submission_in("a", 2, waiting)).unwrap();
    s.submit(at_ms(0), submission_in("b", 3, waiting)).unwrap();
    for id in 2..=3 {
        assert_eq!(status(&s, id), Some(Status::Pending));
    }
    s.heartbeat(at_ms(1000), S1, 1);
    s.handle_timeout(at_ms(2000));
    let out = drain(&mut s);
    let error = |id| {
        assert_eq!(status(&s, id), Some(Status::Failed));
        terminal_in(&out, id).error().to_string()
    };
    assert_eq!(
        error(2),
        "not started within 2s: the only worker that runs a stayed busy"
    );
    assert_eq!(
        error(3),
        "not started within 2s: no connected worker runs b"
    );
}

#[test]
fn queued_executions_are_counted_per_runtime() {
    let mut s = Scheduler::new(config());
    assert!(queued(&s).is_empty());
    for (id, runtime) in [(1, "wasm"), (2, "builtin"), (3, "wasm"), (4, "wasm")] {
        s.submit(at_ms(0), submission_in(runtime, id, policy()))
            .unwrap();
    }
    // By runtime name, whatever the submission order.
    assert_eq!(queued(&s), [("builtin".into(), 1), ("wasm".into(), 3)]);
    s.worker_connected(at_ms(1), S1, worker("wasm"), 2, runs(&["wasm"]))
        .unwrap();
    assert_eq!(queued(&s), [("builtin".into(), 1), ("wasm".into(), 1)]);
    s.cancel(at_ms(2), ExecutionId(2)).unwrap();
    // A runtime with nothing waiting is left out.
    assert_eq!(queued(&s), [("wasm".into(), 1)]);
}

#[test]
fn a_draining_worker_takes_no_work_of_any_runtime() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("ab"), 4, runs(&["a", "b"]))
        .unwrap();
    s.worker_connected(at_ms(0), S2, worker("seed"), 4, Capabilities::Any)
        .unwrap();
    assert!(s.worker_draining(at_ms(1), S1));
    assert!(s.worker_draining(at_ms(1), S2));
    s.submit(at_ms(2), submission_in("a", 1, policy())).unwrap();
    s.submit(at_ms(2), submission_in("b", 2, policy())).unwrap();
    assert!(dispatches(&drain(&mut s)).is_empty());
    assert_eq!(queued(&s), [("a".into(), 1), ("b".into(), 1)]);
}

#[test]
fn a_retry_leaves_the_session_it_timed_out_on_only_for_a_worker_that_runs_it() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("slow"), 2, runs(&["b"]))
        .unwrap();
    s.submit(at_ms(0), submission_in("b", 1, policy())).unwrap();
    drain(&mut s);
    // timeout 10 s + grace 1 s; S1 keeps heartbeating but never reports.
    for t in (1000..=11_000).step_by(1000) {
        s.heartbeat(at_ms(t), S1, 1);
        s.handle_timeout(at_ms(t));
    }
    // A worker with more room joins, but it does not run b: the retry goes
    // back to S1, the only worker that does.
    s.worker_connected(at_ms(11_050), S2, worker("a"), 4, runs(&["a"]))
        .unwrap();
    s.handle_timeout(at_ms(11_100));
    assert_eq!(dispatches(&drain(&mut s)), [(S1, ExecutionId(1), 2)]);
}

#[test]
fn a_forgotten_execution_leaves_no_trace_and_is_never_evicted() {
    let mut s = Scheduler::new(config());
    s.worker_connected(at_ms(0), S1, worker("w"), 2, Capabilities::Any)
        .unwrap();
    for id in 1..=3 {
        s.submit(at_ms(0), submission(id, policy())).unwrap();
    }
    for id in 1..=3 {
        s.result(at_ms(10), S1, ExecutionId(id), 1, ok("done"));
    }
    drain(&mut s);
    assert!(s.forget(ExecutionId(1)));
    assert!(s.forget(ExecutionId(3)));
    assert!(!s.forget(ExecutionId(3)), "once");
    assert!(!s.forget(ExecutionId(9)), "unknown");
    assert_eq!(status(&s, 1), None);
    assert_eq!(s.stats().completed, 1);
    // Retention (60 s) evicts only what is still held.
    s.handle_timeout(at_ms(70_000));
    let evicted: Vec<_> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Evicted { execution } => Some(execution),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, [ExecutionId(2)]);
    assert_eq!(s.stats().completed, 0);
}

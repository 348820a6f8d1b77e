//! Checks of internal bookkeeping that the public API cannot see.

use std::time::Duration;

use bytes::Bytes;

use super::*;

fn at_ms(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

fn submission(id: u64, runtime: &str) -> Submission {
    Submission {
        id: ExecutionId(id),
        function: "echo".into(),
        runtime: runtime.into(),
        payload: Bytes::new(),
        policy: Policy {
            max_attempts: 2,
            timeout: Duration::from_secs(10),
            schedule_to_start: Some(Duration::from_secs(1)),
        },
    }
}

fn runtimes_in_use(s: &Scheduler) -> Vec<&str> {
    s.runtimes.by_name().map(|(name, _)| name).collect()
}

#[test]
fn a_runtime_is_forgotten_once_no_execution_or_worker_holds_it() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let (a, b) = (SessionId(1), SessionId(2));
    s.worker_connected(
        at_ms(0),
        a,
        WorkerId::new("a"),
        1,
        Capabilities::only(["a"]),
    )
    .unwrap();
    s.submit(at_ms(0), submission(1, "a")).unwrap();
    s.submit(at_ms(0), submission(2, "b")).unwrap();
    s.submit(at_ms(0), submission(3, "c")).unwrap();
    assert_eq!(runtimes_in_use(&s), ["a", "b", "c"]);
    // Each way out of a runtime lets go of it: a result, a cancel, a
    // schedule-to-start deadline, a worker leaving.
    s.result(
        at_ms(1),
        a,
        ExecutionId(1),
        1,
        Outcome::Success(Bytes::new()),
    );
    s.cancel(at_ms(1), ExecutionId(2)).unwrap();
    s.handle_timeout(at_ms(1000));
    assert_eq!(runtimes_in_use(&s), ["a"], "the worker still holds a");
    s.worker_disconnected(at_ms(1001), a);
    assert!(runtimes_in_use(&s).is_empty());
    // A lost attempt keeps its hold while it waits for the retry.
    s.worker_connected(at_ms(1002), b, WorkerId::new("b"), 1, Capabilities::Any)
        .unwrap();
    s.submit(at_ms(1002), submission(4, "b")).unwrap();
    s.worker_disconnected(at_ms(1003), b);
    assert_eq!(s.execution(ExecutionId(4)).unwrap().status, Status::Pending);
    assert_eq!(runtimes_in_use(&s), ["b"]);
}

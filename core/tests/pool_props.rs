//! Property tests: a worker pool driven by random assignments (new, repeated,
//! newer attempts), cancels, task completions and clock advances. Checked after
//! every step against a shadow built from the pool's outputs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use taskforge_core::pool::{Assignment, PoolConfig, PoolOutput, WorkerPool};
use taskforge_core::{ExecutionId, Instant, Outcome};

#[derive(Clone, Debug)]
enum Op {
    Assign {
        execution: u64,
        attempt: u32,
        timeout_ms: u64,
    },
    Cancel {
        execution: u64,
    },
    Finish {
        pick: usize,
        success: bool,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..12, 1u32..3, 1u64..3000).prop_map(|(execution, attempt, timeout_ms)| Op::Assign {
            execution,
            attempt,
            timeout_ms
        }),
        1 => (0u64..12).prop_map(|execution| Op::Cancel { execution }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, success)| Op::Finish { pick, success }),
        2 => (0u64..1500).prop_map(|ms| Op::Advance { ms }),
    ]
}

struct Harness {
    pool: WorkerPool<u64>,
    slots: u32,
    now: Instant,
    /// Started and not yet aborted or finished: execution → (attempt, deadline).
    running: BTreeMap<ExecutionId, (u32, Instant)>,
    /// Held (queued or running): execution → attempt.
    held: BTreeMap<ExecutionId, u32>,
    timeouts: BTreeMap<(ExecutionId, u32), Duration>,
    reports: BTreeMap<(ExecutionId, u32), u32>,
    accepted: Vec<(ExecutionId, u32)>,
}

impl Harness {
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Assign {
                execution,
                attempt,
                timeout_ms,
            } => {
                let execution = ExecutionId(execution);
                let timeout = Duration::from_millis(timeout_ms);
                let fresh = self.held.get(&execution).is_none_or(|&held| held < attempt);
                self.pool.assign(
                    self.now,
                    Assignment {
                        execution,
                        attempt,
                        timeout,
                        job: execution.0,
                    },
                );
                if fresh {
                    // The same pair may come again after an earlier run of it
                    // ended; that is a new assignment with its own report.
                    self.reports.remove(&(execution, attempt));
                    self.timeouts.insert((execution, attempt), timeout);
                    self.accepted.push((execution, attempt));
                }
                let replaced = self.held.get(&execution).copied().filter(|_| fresh);
                let outputs = self.absorb()?;
                if fresh {
                    self.held.insert(execution, attempt);
                }
                for output in &outputs {
                    if let PoolOutput::Abort {
                        execution: e,
                        attempt: a,
                    } = output
                    {
                        prop_assert_eq!((*e, Some(*a)), (execution, replaced));
                    }
                }
            }
            Op::Cancel { execution } => {
                let execution = ExecutionId(execution);
                let was_held = self.held.contains_key(&execution);
                prop_assert_eq!(self.pool.cancel(self.now, execution), was_held);
                for output in self.absorb()? {
                    if let PoolOutput::Abort { execution: e, .. } = output {
                        prop_assert_eq!(e, execution, "cancel aborted another execution");
                    }
                }
                prop_assert!(!self.held.contains_key(&execution));
            }
            Op::Finish { pick, success } => {
                if self.running.is_empty() {
                    return Ok(());
                }
                let (&execution, &(attempt, _)) =
                    self.running.iter().nth(pick % self.running.len()).unwrap();
                let outcome = if success {
                    Outcome::Success(Bytes::from_static(b"ok"))
                } else {
                    Outcome::Failure {
                        error: "no".into(),
                        output: Bytes::new(),
                    }
                };
                prop_assert!(
                    self.pool
                        .finished(self.now, execution, attempt, outcome.clone())
                );
                prop_assert!(!self.pool.finished(self.now, execution, attempt, outcome));
                self.absorb()?;
            }
            Op::Advance { ms } => {
                self.now = self.now + Duration::from_millis(ms);
                self.pool.handle_timeout(self.now);
                for output in self.absorb()? {
                    if let PoolOutput::Abort { execution, attempt } = output {
                        let timeout = self.timeouts[&(execution, attempt)];
                        prop_assert!(timeout.as_millis() > 0);
                    }
                }
                for &(_, deadline) in self.running.values() {
                    prop_assert!(deadline > self.now, "a task outlived its timeout");
                }
            }
        }
        prop_assert!(self.pool.running() <= self.slots, "more running than slots");
        prop_assert_eq!(self.pool.running() as usize, self.running.len());
        prop_assert_eq!(
            self.pool.running() + self.pool.queued(),
            self.held.len() as u32
        );
        Ok(())
    }

    fn absorb(&mut self) -> Result<Vec<PoolOutput<u64>>, TestCaseError> {
        let outputs: Vec<_> = std::iter::from_fn(|| self.pool.poll_output()).collect();
        for output in &outputs {
            match *output {
                PoolOutput::Start {
                    execution,
                    attempt,
                    job,
                } => {
                    prop_assert_eq!(job, execution.0);
                    let deadline = self.now + self.timeouts[&(execution, attempt)];
                    prop_assert!(
                        self.running
                            .insert(execution, (attempt, deadline))
                            .is_none()
                    );
                    prop_assert!(self.running.len() <= self.slots as usize);
                }
                PoolOutput::Abort { execution, attempt } => {
                    let running = self.running.remove(&execution);
                    prop_assert_eq!(
                        running.map(|r| r.0),
                        Some(attempt),
                        "abort of a task not running"
                    );
                }
                PoolOutput::Report {
                    execution, attempt, ..
                } => {
                    let count = self.reports.entry((execution, attempt)).or_default();
                    *count += 1;
                    prop_assert_eq!(*count, 1, "reported twice");
                    if self.running.get(&execution).map(|r| r.0) == Some(attempt) {
                        self.running.remove(&execution);
                    }
                    if self.held.get(&execution) == Some(&attempt) {
                        self.held.remove(&execution);
                    }
                }
                PoolOutput::Heartbeat { running, queued } => {
                    prop_assert_eq!(running as usize, self.running.len());
                    prop_assert_eq!((running + queued) as usize, self.held.len());
                }
            }
        }
        Ok(outputs)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pool_keeps_its_invariants(slots in 1u32..5, ops in proptest::collection::vec(op(), 1..150)) {
        let mut h = Harness {
            pool: WorkerPool::new(
                PoolConfig { slots, heartbeat_interval: Duration::from_millis(700) },
                Instant::ZERO,
            ),
            slots,
            now: Instant::ZERO,
            running: BTreeMap::new(),
            held: BTreeMap::new(),
            timeouts: BTreeMap::new(),
            reports: BTreeMap::new(),
            accepted: Vec::new(),
        };
        for op in &ops {
            h.apply(op)?;
        }
        // Let every task run out its clock: all that was accepted is reported once.
        for _ in 0..500 {
            if h.pool.is_idle() {
                break;
            }
            h.apply(&Op::Advance { ms: 1000 })?;
        }
        prop_assert!(h.pool.is_idle());
        for key in &h.accepted {
            prop_assert_eq!(h.reports.get(key), Some(&1), "{:?} not reported exactly once", key);
        }
    }
}

//! The worker-pool state machine: a worker's slots, its local queue,
//! cancellation, local timeouts and heartbeats.
//!
//! The caller hands in assignments from the scheduler, tells it when a task
//! finished, and carries out its outputs: start a task, abort a task, report an
//! attempt's end to the scheduler, send a heartbeat. Every assignment is reported
//! exactly once (done, failed, timed out or cancelled), which is what lets the
//! scheduler free the slot. `J` is whatever the caller needs to start a task.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::deadlines::Deadlines;
use crate::execution::Outcome;
use crate::ids::ExecutionId;
use crate::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Tasks that may run at once.
    pub slots: u32,
    pub heartbeat_interval: Duration,
}

/// One attempt the scheduler asked this worker to run.
#[derive(Clone, Debug)]
pub struct Assignment<J> {
    pub execution: ExecutionId,
    pub attempt: u32,
    /// Start-to-close limit; the task is aborted when it passes.
    pub timeout: Duration,
    pub job: J,
}

/// How an attempt ended on this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Succeeded(Bytes),
    Failed { error: String, output: Bytes },
    TimedOut { after: Duration },
    Cancelled,
}

impl Report {
    pub fn success(&self) -> bool {
        matches!(self, Report::Succeeded(_))
    }

    /// The outcome as the scheduler records it.
    pub fn into_outcome(self) -> Outcome {
        match self {
            Report::Succeeded(output) => Outcome::Success(output),
            Report::Failed { error, output } => Outcome::Failure { error, output },
            Report::TimedOut { after } => Outcome::TimedOut {
                error: format!("timed out after {after:?}"),
            },
            Report::Cancelled => Outcome::Failure {
                error: "cancelled".to_string(),
                output: Bytes::new(),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolOutput<J> {
    /// Start running this attempt now.
    Start {
        execution: ExecutionId,
        attempt: u32,
        job: J,
    },
    /// Stop this running attempt; its report has already been emitted.
    Abort {
        execution: ExecutionId,
        attempt: u32,
    },
    /// Tell the scheduler how this attempt ended.
    Report {
        execution: ExecutionId,
        attempt: u32,
        report: Report,
    },
    /// Tell the scheduler the worker is alive.
    Heartbeat { running: u32, queued: u32 },
}

#[derive(Debug)]
struct Running {
    attempt: u32,
    timeout: Duration,
    deadline: Instant,
}

#[derive(Debug)]
pub struct WorkerPool<J> {
    config: PoolConfig,
    queue: VecDeque<Assignment<J>>,
    running: BTreeMap<ExecutionId, Running>,
    deadlines: Deadlines<ExecutionId>,
    next_heartbeat: Instant,
    draining: bool,
    outputs: VecDeque<PoolOutput<J>>,
}

impl<J> WorkerPool<J> {
    /// A pool with `config.slots` slots (at least one); its first heartbeat is
    /// due one interval after `now`.
    pub fn new(config: PoolConfig, now: Instant) -> WorkerPool<J> {
        let config = PoolConfig {
            slots: config.slots.max(1),
            ..config
        };
        WorkerPool {
            config,
            queue: VecDeque::new(),
            running: BTreeMap::new(),
            deadlines: Deadlines::new(),
            next_heartbeat: now + config.heartbeat_interval,
            draining: false,
            outputs: VecDeque::new(),
        }
    }

    pub fn slots(&self) -> u32 {
        self.config.slots
    }

    pub fn running(&self) -> u32 {
        self.running.len() as u32
    }

    pub fn queued(&self) -> u32 {
        self.queue.len() as u32
    }

    /// Whether `execution` is running (with its attempt).
    pub fn running_attempt(&self, execution: ExecutionId) -> Option<u32> {
        self.running.get(&execution).map(|r| r.attempt)
    }

    /// Nothing running and nothing queued.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.queue.is_empty()
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Marks the pool as draining: the caller tells the scheduler to send no
    /// more work, and what is queued or running still completes.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Takes an assignment from the scheduler. A repeat of an attempt already
    /// held is ignored; a newer attempt of the same execution replaces the older
    /// one, which is reported cancelled. An assignment that crossed the drain
    /// notice on the wire is still run: draining only stops the scheduler from
    /// sending more.
    pub fn assign(&mut self, now: Instant, assignment: Assignment<J>) {
        let execution = assignment.execution;
        if let Some(held) = self.held_attempt(execution) {
            if held >= assignment.attempt {
                return;
            }
            self.cancel(now, execution);
        }
        self.queue.push_back(assignment);
        self.fill(now);
    }

    /// Cancels whatever attempt of `execution` is held. False if none is.
    pub fn cancel(&mut self, now: Instant, execution: ExecutionId) -> bool {
        if let Some(index) = self.queue.iter().position(|a| a.execution == execution) {
            if let Some(assignment) = self.queue.remove(index) {
                self.report(execution, assignment.attempt, Report::Cancelled);
            }
            return true;
        }
        if let Some(running) = self.stop(execution) {
            self.outputs.push_back(PoolOutput::Abort {
                execution,
                attempt: running.attempt,
            });
            self.report(execution, running.attempt, Report::Cancelled);
            self.fill(now);
            return true;
        }
        false
    }

    /// A task ended by itself. False (and ignored) if that attempt is no longer
    /// running here: it was cancelled, timed out or replaced meanwhile.
    pub fn finished(
        &mut self,
        now: Instant,
        execution: ExecutionId,
        attempt: u32,
        outcome: Outcome,
    ) -> bool {
        if self.running_attempt(execution) != Some(attempt) {
            return false;
        }
        self.stop(execution);
        let report = match outcome {
            Outcome::Success(output) => Report::Succeeded(output),
            Outcome::Failure { error, output } => Report::Failed { error, output },
            // The pool's own deadline reports a timeout (Report::TimedOut);
            // a task that gives up on its own has failed.
            Outcome::TimedOut { error } => Report::Failed {
                error,
                output: Bytes::new(),
            },
        };
        self.report(execution, attempt, report);
        self.fill(now);
        true
    }

    /// Aborts tasks past their timeout and emits a heartbeat when one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, execution)) = self.deadlines.pop_due(now) {
            if let Some(running) = self.running.remove(&execution) {
                self.outputs.push_back(PoolOutput::Abort {
                    execution,
                    attempt: running.attempt,
                });
                self.report(
                    execution,
                    running.attempt,
                    Report::TimedOut {
                        after: running.timeout,
                    },
                );
            }
        }
        if self.next_heartbeat <= now {
            self.outputs.push_back(PoolOutput::Heartbeat {
                running: self.running(),
                queued: self.queued(),
            });
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        self.fill(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.deadlines.next() {
            Some(deadline) => deadline.min(self.next_heartbeat),
            None => self.next_heartbeat,
        })
    }

    pub fn poll_output(&mut self) -> Option<PoolOutput<J>> {
        self.outputs.pop_front()
    }

    fn held_attempt(&self, execution: ExecutionId) -> Option<u32> {
        self.running_attempt(execution).or_else(|| {
            self.queue
                .iter()
                .find(|a| a.execution == execution)
                .map(|a| a.attempt)
        })
    }

    fn stop(&mut self, execution: ExecutionId) -> Option<Running> {
        let running = self.running.remove(&execution)?;
        self.deadlines.remove(running.deadline, execution);
        Some(running)
    }

    fn report(&mut self, execution: ExecutionId, attempt: u32, report: Report) {
        self.outputs.push_back(PoolOutput::Report {
            execution,
            attempt,
            report,
        });
    }

    /// Starts queued assignments while a slot is free.
    fn fill(&mut self, now: Instant) {
        while self.running.len() < self.config.slots as usize {
            let Some(assignment) = self.queue.pop_front() else {
                break;
            };
            let deadline = now + assignment.timeout;
            self.deadlines.insert(deadline, assignment.execution);
            self.running.insert(
                assignment.execution,
                Running {
                    attempt: assignment.attempt,
                    timeout: assignment.timeout,
                    deadline,
                },
            );
            self.outputs.push_back(PoolOutput::Start {
                execution: assignment.execution,
                attempt: assignment.attempt,
                job: assignment.job,
            });
        }
    }
}

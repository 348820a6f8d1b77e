//! What the worker holds: the [`WorkerPool`] and the tasks running its
//! attempts. It outlives any one stream to the scheduler.
//!
//! When a stream ends the work goes on: tasks keep running, queued attempts
//! still start as slots free, timeouts still fire. Results that come while no
//! stream is open are kept (one per attempt, so at most what the pool held)
//! and sent after the next hello, which lists every attempt the worker still
//! holds, so that the scheduler (the same one, or a standby that took over)
//! can adopt them instead of running them again; what it does not adopt, it
//! cancels. Heartbeats are not kept: the next stream's hello says more.
//!
//! [`WorkerPool`]: taskforge_core::pool::WorkerPool

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use taskforge_core::pool::{Assignment, PoolConfig, PoolOutput, WorkerPool};
use taskforge_core::{ExecutionId, Outcome};
use taskforge_proto::worker::WorkerMessage;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::AbortHandle;
use tracing::debug;

use super::observer::{TaskEvent, TaskObserver};
use super::wire::{self, Job};
use super::{Timebase, WallClock, WorkerConfig};
use crate::runtime::{Call, Ran, Stop};

/// A running attempt.
#[derive(Debug)]
struct Task {
    /// Tells this task's completion from a stale one of an earlier task that
    /// ran the same attempt.
    seq: u64,
    /// Stops the runtime's work (which may run on a blocking thread that
    /// aborting the task cannot reach).
    stop: Stop,
    abort: AbortHandle,
    started_at_us: u64,
    finished_at_us: Option<u64>,
    /// The tail of what the function printed, once it ended.
    logs: String,
}

/// A task's end, sent back to the work's owner.
#[derive(Debug)]
pub(super) struct Completion {
    execution: ExecutionId,
    attempt: u32,
    seq: u64,
    finished_at_us: u64,
    ran: Ran,
}

/// The open stream's sending half, while there is one.
#[derive(Debug)]
struct Link {
    outgoing: mpsc::Sender<WorkerMessage>,
    /// A heartbeat went out on it (see `SessionEnd::Lost`).
    heartbeat_sent: bool,
}

pub(super) struct Work {
    worker_id: String,
    max_output_bytes: usize,
    clock: WallClock,
    timebase: Timebase,
    pub(super) pool: WorkerPool<Job>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    tasks: BTreeMap<(ExecutionId, u32), Task>,
    /// The attempt of each execution the pool holds (queued or running), so a
    /// cancel for another attempt can be ignored.
    held: BTreeMap<ExecutionId, u32>,
    /// Results of attempts that ended while no stream was open, to send
    /// after the next hello.
    unsent: BTreeMap<(ExecutionId, u32), WorkerMessage>,
    next_seq: u64,
    link: Option<Link>,
    observer: Option<TaskObserver>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("worker_id", &self.worker_id)
            .field("pool", &self.pool)
            .field("tasks", &self.tasks)
            .field("unsent", &self.unsent.len())
            .finish_non_exhaustive()
    }
}

impl Work {
    pub(super) fn new(config: &WorkerConfig, clock: WallClock, timebase: Timebase) -> Work {
        let pool = WorkerPool::new(
            PoolConfig {
                slots: config.pool_size,
                heartbeat_interval: config.heartbeat_interval,
            },
            timebase.now(),
        );
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Work {
            worker_id: config.id.clone(),
            max_output_bytes: config.max_output_bytes,
            clock,
            timebase,
            pool,
            done_tx,
            done_rx,
            tasks: BTreeMap::new(),
            held: BTreeMap::new(),
            unsent: BTreeMap::new(),
            next_seq: 0,
            link: None,
            observer: config.observer.clone(),
        }
    }

    /// Every attempt held: in the pool (queued or running), or ended with
    /// its result not sent yet. For the hello.
    pub(super) fn holding(&self) -> Vec<(ExecutionId, u32)> {
        let mut holding: Vec<_> = self.held.iter().map(|(&e, &a)| (e, a)).collect();
        holding.extend(self.unsent.keys().copied());
        holding
    }

    /// Tasks running now.
    pub(super) fn running(&self) -> usize {
        self.tasks.len()
    }

    /// A stream is open (its hello queued first on `outgoing`): results kept
    /// while there was none go out now, in the order their attempts sort.
    pub(super) fn connect(&mut self, outgoing: mpsc::Sender<WorkerMessage>) -> Result<(), String> {
        self.link = Some(Link {
            outgoing,
            heartbeat_sent: false,
        });
        for (_, result) in std::mem::take(&mut self.unsent) {
            self.send(result)?;
        }
        Ok(())
    }

    /// The stream ended (or the worker closed its side): results are kept
    /// from now on. Returns whether a heartbeat went out on it.
    pub(super) fn disconnect(&mut self) -> bool {
        self.link.take().is_some_and(|link| link.heartbeat_sent)
    }

    /// Runs `until` to completion while keeping the work going with no
    /// stream: tasks end, queued attempts start, timeouts fire.
    pub(super) async fn unconnected<T>(&mut self, until: impl Future<Output = T>) -> T {
        tokio::pin!(until);
        loop {
            // With no stream nothing is sent, so nothing can fail.
            let _ = self.carry_out_outputs();
            let next = self
                .pool
                .poll_timeout()
                .map(|at| self.timebase.to_tokio(at));
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.complete(done),
                () = sleep_until(next) => self.pool.handle_timeout(self.timebase.now()),
                value = &mut until => return value,
            }
        }
    }

    /// Waits for the next task to end (cancel-safe).
    pub(super) async fn next_completion(&mut self) -> Option<Completion> {
        self.done_rx.recv().await
    }

    /// Takes an attempt the scheduler sent, unless this or a newer attempt
    /// of its execution is held already.
    pub(super) fn assign(&mut self, assignment: Assignment<Job>) {
        let (execution, attempt) = (assignment.execution, assignment.attempt);
        if self
            .held
            .get(&execution)
            .is_some_and(|&held| held >= attempt)
        {
            debug!(%execution, attempt, "already holding this or a newer attempt; ignored");
            return;
        }
        debug!(%execution, attempt, language = %assignment.job.definition.language(), "assigned");
        self.held.insert(execution, attempt);
        self.pool.assign(self.timebase.now(), assignment);
    }

    /// Reports an attempt the worker cannot run (see [`wire::Rejection`]).
    pub(super) fn reject(&self, rejection: wire::Rejection) -> Result<(), String> {
        let now_us = (self.clock)();
        self.send(wire::rejection(rejection, now_us))
    }

    /// Cancels the attempt if the pool holds it; attempt 0 (a scheduler that
    /// does not fence) cancels whichever attempt is held.
    pub(super) fn cancel(&mut self, execution: ExecutionId, attempt: u32) {
        match self.held.get(&execution) {
            Some(&held) if attempt == 0 || attempt == held => {
                debug!(%execution, attempt = held, "cancelling");
                self.pool.cancel(self.timebase.now(), execution);
            }
            held => debug!(%execution, attempt, ?held, "cancel for an attempt not held; ignored"),
        }
    }

    /// Stops every task (shutdown past the drain deadline, or with no
    /// stream to report to).
    pub(super) fn abort_all(&mut self) {
        for task in self.tasks.values() {
            task.stop.stop();
            task.abort.abort();
        }
    }

    /// A task's end: hand it to the pool unless that attempt was meanwhile
    /// cancelled, timed out or replaced.
    pub(super) fn complete(&mut self, done: Completion) {
        let key = (done.execution, done.attempt);
        match self.tasks.get_mut(&key) {
            Some(task) if task.seq == done.seq && task.finished_at_us.is_none() => {
                task.finished_at_us = Some(done.finished_at_us);
                task.logs = done.ran.logs;
            }
            _ => return,
        }
        let outcome = match done.ran.result {
            Ok(output) => Outcome::Success(output),
            Err(error) => Outcome::Failure {
                error,
                output: Bytes::new(),
            },
        };
        if !self
            .pool
            .finished(self.timebase.now(), done.execution, done.attempt, outcome)
        {
            // The pool no longer runs it; nothing will report it.
            self.let_go(key);
        }
    }

    /// Carries out what the pool decided. An error means the open stream
    /// cannot take more (see [`send`](Self::send)).
    pub(super) fn carry_out_outputs(&mut self) -> Result<(), String> {
        while let Some(output) = self.pool.poll_output() {
            match output {
                PoolOutput::Start {
                    execution,
                    attempt,
                    job,
                } => self.start(execution, attempt, job),
                PoolOutput::Abort { execution, attempt } => {
                    if let Some(task) = self.tasks.get_mut(&(execution, attempt)) {
                        task.stop.stop();
                        task.abort.abort();
                        task.finished_at_us.get_or_insert_with(|| (self.clock)());
                    }
                }
                PoolOutput::Report {
                    execution,
                    attempt,
                    report,
                } => {
                    if self.held.get(&execution) == Some(&attempt) {
                        self.held.remove(&execution);
                    }
                    let (started_at_us, finished_at_us, logs) =
                        match self.let_go((execution, attempt)) {
                            Some(task) => (
                                task.started_at_us,
                                task.finished_at_us.unwrap_or_else(|| (self.clock)()),
                                task.logs,
                            ),
                            None => (0, (self.clock)(), String::new()),
                        };
                    debug!(%execution, attempt, ?report, "reporting");
                    let report = wire::within_output_limit(report, self.max_output_bytes);
                    let result = wire::result(
                        execution,
                        attempt,
                        report,
                        started_at_us,
                        finished_at_us,
                        logs,
                    );
                    if self.link.is_some() {
                        self.send(result)?;
                    } else {
                        self.unsent.insert((execution, attempt), result);
                    }
                }
                PoolOutput::Heartbeat { running, queued } => {
                    if let Some(link) = &mut self.link {
                        link.heartbeat_sent = true;
                        self.send(wire::heartbeat(&self.worker_id, running, queued))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, execution: ExecutionId, attempt: u32, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        debug!(%execution, attempt, language = %job.definition.language(), "starting");
        let started_at_us = (self.clock)();
        let guard = CompletionGuard {
            done: self.done_tx.clone(),
            clock: self.clock.clone(),
            execution,
            attempt,
            seq,
            sent: false,
        };
        let stop = Stop::new();
        let handle = tokio::spawn({
            let stop = stop.clone();
            async move {
                let ran = match job.definition.prepared().await {
                    Ok(prepared) => {
                        prepared
                            .call(Call {
                                payload: job.payload,
                                stop,
                                timeout: job.timeout,
                            })
                            .await
                    }
                    Err(error) => Ran {
                        result: Err(error),
                        logs: String::new(),
                    },
                };
                guard.finish(ran);
            }
        });
        self.tasks.insert(
            (execution, attempt),
            Task {
                seq,
                stop,
                abort: handle.abort_handle(),
                started_at_us,
                finished_at_us: None,
                logs: String::new(),
            },
        );
        if let Some(observer) = &self.observer {
            observer.observe(TaskEvent::Started { execution, attempt });
        }
    }

    /// Forgets a task (it ended, or was aborted): its slot is free.
    fn let_go(&mut self, key: (ExecutionId, u32)) -> Option<Task> {
        let task = self.tasks.remove(&key)?;
        if let Some(observer) = &self.observer {
            let (execution, attempt) = key;
            observer.observe(TaskEvent::Ended { execution, attempt });
        }
        Some(task)
    }

    /// Queues a message on the open stream (none open: dropped). The stream
    /// never makes the work wait: a full queue means the scheduler stopped
    /// reading, and the stream is given up as lost.
    pub(super) fn send(&self, message: WorkerMessage) -> Result<(), String> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        link.outgoing.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => format!(
                "the scheduler is not reading the stream ({} messages unsent)",
                link.outgoing.max_capacity()
            ),
            TrySendError::Closed(_) => "the stream to the scheduler closed".to_string(),
        })
    }
}

impl Drop for Work {
    /// The worker is going away: nothing it still runs will be reported (the
    /// scheduler runs it again under a new attempt).
    fn drop(&mut self) {
        for (&(execution, attempt), task) in &self.tasks {
            task.stop.stop();
            task.abort.abort();
            if let Some(observer) = &self.observer {
                observer.observe(TaskEvent::Ended { execution, attempt });
            }
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends a task's completion, also when the task ends without one (a panic):
/// every started attempt then gets a report instead of waiting for its timeout.
/// The completion of an aborted task is stale and ignored.
struct CompletionGuard {
    done: mpsc::UnboundedSender<Completion>,
    clock: WallClock,
    execution: ExecutionId,
    attempt: u32,
    seq: u64,
    sent: bool,
}

impl CompletionGuard {
    fn finish(mut self, ran: Ran) {
        self.send(ran);
    }

    fn send(&mut self, ran: Ran) {
        self.sent = true;
        let _ = self.done.send(Completion {
            execution: self.execution,
            attempt: self.attempt,
            seq: self.seq,
            finished_at_us: (self.clock)(),
            ran,
        });
    }
}

impl Drop for CompletionGuard {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Ran {
                result: Err(
                    "the execution's task ended without a result (it panicked or was aborted)"
                        .to_string(),
                ),
                logs: String::new(),
            });
        }
    }
}

//! One `WorkerStream` session: the event loop around a fresh [`WorkerPool`].
//!
//! A single task owns the pool and the stream. It waits on four things at once:
//! task completions, the pool's timer, the shutdown signal (then the drain
//! deadline), and messages from the scheduler. After every event it carries out
//! the pool's outputs: start a task, abort a task, send a result or a heartbeat.
//!
//! The loop never waits on a send: outgoing messages go into a bounded queue with
//! `try_send`. The queue holds a few times the pool size, far more than a
//! scheduler that reads its stream ever leaves in it (it sends work only as
//! results free slots); if it fills anyway the scheduler has stopped reading, and
//! the session is dropped as lost rather than buffering without bound or
//! blocking the loop (which could deadlock with a scheduler blocked on sending
//! to us).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::net::LeaderChannel;
use bytes::Bytes;
use taskforge_core::pool::{PoolConfig, PoolOutput, WorkerPool};
use taskforge_core::{ExecutionId, Outcome};
use taskforge_proto::common::ExecutionRequest;
use taskforge_proto::worker::scheduler_message::Message;
use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_proto::worker::{CancelRequest, SchedulerMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, info, warn};

use super::definitions::Definitions;
use super::observer::{TaskEvent, TaskObserver};
use super::wire::{self, Job};
use super::{Shutdown, Timebase, WallClock, WorkerConfig};
use crate::auth::Credentials;
use crate::runtime::{Call, Ran, Stop};

/// How long a closing worker waits for the scheduler to end its side of the
/// stream after ending its own.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Outgoing messages that may wait to be sent before the scheduler is deemed
/// not to be reading.
fn outgoing_capacity(pool_size: u32) -> usize {
    256 + 4 * pool_size as usize
}

/// An open stream, its hello already queued.
#[derive(Debug)]
pub(super) struct Connection {
    outgoing: mpsc::Sender<WorkerMessage>,
    incoming: Streaming<SchedulerMessage>,
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub(super) struct OpenFailure {
    pub(super) reason: String,
    /// The scheduler answered, and said no (a missing or wrong token).
    pub(super) refused: bool,
    /// A standby answered: the channel moved on towards the leader, worth
    /// trying again soon.
    pub(super) not_leader: bool,
}

/// Opens a `WorkerStream` and queues the hello on it.
pub(super) async fn open(
    config: &WorkerConfig,
    channel: LeaderChannel,
) -> Result<Connection, OpenFailure> {
    let failure = |reason: String, refused: bool| OpenFailure {
        reason,
        refused,
        not_leader: false,
    };
    let (outgoing, queue) = mpsc::channel(outgoing_capacity(config.pool_size));
    outgoing
        .try_send(wire::hello(
            &config.id,
            config.pool_size,
            config.runtimes.names(),
        ))
        .map_err(|_| failure("cannot queue the hello".to_string(), false))?;
    let credentials = Credentials::new(config.token.as_ref());
    let mut client = WorkerServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(crate::net::FROM_SCHEDULER_LIMIT);
    let opening = client.worker_stream(ReceiverStream::new(queue));
    match tokio::time::timeout(config.handshake_timeout, opening).await {
        Err(_) => Err(failure(
            format!(
                "the scheduler did not answer within {:?}",
                config.handshake_timeout
            ),
            false,
        )),
        Ok(Err(status)) => Err(OpenFailure {
            not_leader: status.code() == tonic::Code::Unavailable
                && status.message().starts_with("not the leader"),
            ..failure(
                describe(&status),
                matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ),
            )
        }),
        Ok(Ok(response)) => Ok(Connection {
            outgoing,
            incoming: response.into_inner(),
        }),
    }
}

fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a session ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// Shutdown: drained (or the drain timed out) and the stream is closed.
    Closed,
    /// The stream ended or failed; `aborted` tasks were running. `settled`:
    /// the session got past its hello (the scheduler sent something, or it
    /// lasted until the first heartbeat), so the reconnect backoff starts over.
    Lost {
        reason: String,
        aborted: usize,
        settled: bool,
    },
}

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

/// A task's end, sent back to the session.
#[derive(Debug)]
struct Completion {
    execution: ExecutionId,
    attempt: u32,
    seq: u64,
    finished_at_us: u64,
    ran: Ran,
}

pub(super) struct Session {
    worker_id: String,
    default_timeout: Duration,
    max_output_bytes: usize,
    drain_timeout: Duration,
    clock: WallClock,
    timebase: Timebase,
    pool: WorkerPool<Job>,
    /// `None` once the worker has closed its side.
    outgoing: Option<mpsc::Sender<WorkerMessage>>,
    incoming: Streaming<SchedulerMessage>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    tasks: BTreeMap<(ExecutionId, u32), Task>,
    /// The attempt of each execution the pool holds (queued or running), so a
    /// cancel for another attempt can be ignored.
    held: BTreeMap<ExecutionId, u32>,
    /// Functions the scheduler defined on this stream.
    definitions: Definitions,
    next_seq: u64,
    drain_deadline: Option<tokio::time::Instant>,
    /// See [`SessionEnd::Lost`].
    settled: bool,
    observer: Option<TaskObserver>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("worker_id", &self.worker_id)
            .field("pool", &self.pool)
            .field("tasks", &self.tasks)
            .field("drain_deadline", &self.drain_deadline)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        config: &WorkerConfig,
        clock: WallClock,
        timebase: Timebase,
        connection: Connection,
    ) -> Session {
        let pool = WorkerPool::new(
            PoolConfig {
                slots: config.pool_size,
                heartbeat_interval: config.heartbeat_interval,
            },
            timebase.now(),
        );
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Session {
            worker_id: config.id.clone(),
            default_timeout: config.default_timeout,
            max_output_bytes: config.max_output_bytes,
            drain_timeout: config.drain_timeout,
            clock,
            timebase,
            pool,
            outgoing: Some(connection.outgoing),
            incoming: connection.incoming,
            done_tx,
            done_rx,
            tasks: BTreeMap::new(),
            held: BTreeMap::new(),
            definitions: Definitions::new(config.runtimes.clone()),
            next_seq: 0,
            drain_deadline: None,
            settled: false,
            observer: config.observer.clone(),
        }
    }

    /// Runs the session until the stream is lost, or shutdown has drained the
    /// pool and closed the stream.
    pub(super) async fn run<F: Future<Output = ()>>(
        mut self,
        shutdown: &mut Shutdown<F>,
    ) -> SessionEnd {
        let never = self
            .timebase
            .to_tokio(taskforge_core::Instant::from_nanos(u64::MAX));
        let timer = tokio::time::sleep_until(never);
        tokio::pin!(timer);
        let mut timer_at = None;
        loop {
            if let Err(reason) = self.carry_out_outputs() {
                return self.lost(reason);
            }
            if self.pool.is_draining() && self.pool.is_idle() {
                return self.close().await;
            }
            let next = self
                .pool
                .poll_timeout()
                .map_or(never, |at| self.timebase.to_tokio(at));
            if timer_at != Some(next) {
                timer.as_mut().reset(next);
                timer_at = Some(next);
            }
            let drain_deadline = self.drain_deadline;
            // Biased, so the order of events does not depend on the runtime's
            // rng; each branch's supply is finite, so none starves the others.
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.complete(done),
                () = &mut timer => {
                    timer_at = None;
                    self.pool.handle_timeout(self.timebase.now());
                }
                () = shutdown.wait(), if !shutdown.requested() => {
                    if let Err(reason) = self.start_drain() {
                        return self.lost(reason);
                    }
                }
                () = tokio::time::sleep_until(drain_deadline.unwrap_or(never)),
                    if drain_deadline.is_some() =>
                {
                    warn!(
                        worker = %self.worker_id,
                        running = self.pool.running(),
                        queued = self.pool.queued(),
                        "drain timed out; abandoning unfinished work"
                    );
                    return self.close().await;
                }
                message = self.incoming.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(reason) = self.on_message(message) {
                            return self.lost(reason);
                        }
                    }
                    Ok(None) => return self.lost("the scheduler closed the stream".to_string()),
                    Err(status) => return self.lost(describe(&status)),
                },
            }
        }
    }

    fn lost(&self, reason: String) -> SessionEnd {
        SessionEnd::Lost {
            reason,
            aborted: self.tasks.len(),
            settled: self.settled,
        }
    }

    /// Aborts what still runs (after a drain timeout; the scheduler re-queues
    /// it when the stream ends), ends the worker's side of the stream (after
    /// what is queued on it), then waits a little for the scheduler to end its
    /// side.
    async fn close(mut self) -> SessionEnd {
        for task in self.tasks.values() {
            task.abort.abort();
        }
        self.outgoing = None;
        let incoming = &mut self.incoming;
        let drained = tokio::time::timeout(CLOSE_TIMEOUT, async {
            // Work sent after the drain notice crossed our close: the scheduler
            // re-queues it when the stream ends.
            while let Ok(Some(_)) = incoming.message().await {}
        })
        .await;
        if drained.is_err() {
            debug!(worker = %self.worker_id, "the scheduler did not close its side; dropping the stream");
        }
        SessionEnd::Closed
    }

    fn start_drain(&mut self) -> Result<(), String> {
        info!(
            worker = %self.worker_id,
            running = self.pool.running(),
            queued = self.pool.queued(),
            "shutting down: draining"
        );
        self.pool.drain();
        self.drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
        self.send(wire::draining())
    }

    fn on_message(&mut self, message: SchedulerMessage) -> Result<(), String> {
        self.settled = true;
        match message.message {
            Some(Message::Execute(request)) => self.execute(request),
            Some(Message::Cancel(cancel)) => {
                self.cancel(&cancel);
                Ok(())
            }
            Some(Message::Define(function)) => {
                debug!(function = %function.function_id, "function defined");
                self.definitions.define(function);
                Ok(())
            }
            Some(Message::Forget(forget)) => {
                self.definitions.forget(&forget.function_id);
                Ok(())
            }
            None => {
                debug!(worker = %self.worker_id, "empty or unknown message from the scheduler; ignored");
                Ok(())
            }
        }
    }

    fn execute(&mut self, request: ExecutionRequest) -> Result<(), String> {
        match wire::assignment(request, &self.definitions, self.default_timeout) {
            Ok(assignment) => {
                let (execution, attempt) = (assignment.execution, assignment.attempt);
                if self
                    .held
                    .get(&execution)
                    .is_some_and(|&held| held >= attempt)
                {
                    debug!(%execution, attempt, "already holding this or a newer attempt; ignored");
                    return Ok(());
                }
                debug!(%execution, attempt, language = %assignment.job.definition.language(), "assigned");
                self.held.insert(execution, attempt);
                self.pool.assign(self.timebase.now(), assignment);
                Ok(())
            }
            Err(rejection) => {
                debug!(
                    execution = %rejection.execution_id,
                    error = %rejection.error,
                    "cannot run this request; reporting it failed"
                );
                let now_us = (self.clock)();
                self.send(wire::rejection(rejection, now_us))
            }
        }
    }

    /// Cancels the attempt if the pool holds it; attempt 0 (a scheduler that
    /// does not fence) cancels whichever attempt is held.
    fn cancel(&mut self, cancel: &CancelRequest) {
        let Some((execution, attempt)) = wire::cancel_target(cancel) else {
            debug!(execution = %cancel.execution_id, "cancel for an invalid execution id; ignored");
            return;
        };
        match self.held.get(&execution) {
            Some(&held) if attempt == 0 || attempt == held => {
                debug!(%execution, attempt = held, "cancelling");
                self.pool.cancel(self.timebase.now(), execution);
            }
            held => debug!(%execution, attempt, ?held, "cancel for an attempt not held; ignored"),
        }
    }

    /// A task's end: hand it to the pool unless that attempt was meanwhile
    /// cancelled, timed out or replaced.
    fn complete(&mut self, done: Completion) {
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

    /// Carries out what the pool decided.
    fn carry_out_outputs(&mut self) -> Result<(), String> {
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
                    self.send(wire::result(
                        execution,
                        attempt,
                        report,
                        started_at_us,
                        finished_at_us,
                        logs,
                    ))?;
                }
                PoolOutput::Heartbeat { running, queued } => {
                    self.settled = true;
                    self.send(wire::heartbeat(&self.worker_id, running, queued))?;
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

    fn send(&self, message: WorkerMessage) -> Result<(), String> {
        let Some(outgoing) = &self.outgoing else {
            return Ok(());
        };
        outgoing.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => format!(
                "the scheduler is not reading the stream ({} messages unsent)",
                outgoing.max_capacity()
            ),
            TrySendError::Closed(_) => "the stream to the scheduler closed".to_string(),
        })
    }
}

impl Drop for Session {
    /// Whatever still runs belongs to this session only: the scheduler runs it
    /// again under a new attempt.
    fn drop(&mut self) {
        for (&(execution, attempt), task) in &self.tasks {
            task.abort.abort();
            if let Some(observer) = &self.observer {
                observer.observe(TaskEvent::Ended { execution, attempt });
            }
        }
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

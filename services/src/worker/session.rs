//! One `WorkerStream` session: the event loop around the worker's [`Work`]
//! while a stream to the scheduler is open.
//!
//! A single task owns the work and the stream. It waits on four things at
//! once: task completions, the pool's timer, the shutdown signal (then the
//! drain deadline), and messages from the scheduler. After every event it
//! carries out the pool's outputs: start a task, abort a task, send a result
//! or a heartbeat.
//!
//! The loop never waits on a send: outgoing messages go into a bounded queue with
//! `try_send`. The queue holds a few times the pool size, far more than a
//! scheduler that reads its stream ever leaves in it (it sends work only as
//! results free slots); if it fills anyway the scheduler has stopped reading, and
//! the session is dropped as lost rather than buffering without bound or
//! blocking the loop (which could deadlock with a scheduler blocked on sending
//! to us). A lost session leaves the work running (see [`Work`]).

use std::future::Future;
use std::time::Duration;

use crate::net::LeaderChannel;
use taskforge_core::ExecutionId;
use taskforge_proto::common::ExecutionRequest;
use taskforge_proto::worker::scheduler_message::Message;
use taskforge_proto::worker::worker_service_client::WorkerServiceClient;
use taskforge_proto::worker::{CancelRequest, SchedulerMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, info, warn};

use super::definitions::Definitions;
use super::wire;
use super::work::Work;
use super::{Shutdown, Timebase, WorkerConfig};
use crate::auth::Credentials;

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

/// Opens a `WorkerStream` and queues the hello on it, listing the attempts
/// the worker still holds.
pub(super) async fn open(
    config: &WorkerConfig,
    channel: LeaderChannel,
    holding: Vec<(ExecutionId, u32)>,
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
            holding,
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
    /// The stream ended or failed; `running` tasks run on. `settled`: the
    /// session got past its hello (the scheduler sent something, or it
    /// lasted until the first heartbeat), so the reconnect backoff starts over.
    Lost {
        reason: String,
        running: usize,
        settled: bool,
    },
}

pub(super) struct Session<'w> {
    worker_id: String,
    default_timeout: Duration,
    drain_timeout: Duration,
    timebase: Timebase,
    work: &'w mut Work,
    incoming: Streaming<SchedulerMessage>,
    /// Functions the scheduler defined on this stream.
    definitions: Definitions,
    drain_deadline: Option<tokio::time::Instant>,
    /// The scheduler sent something (see [`SessionEnd::Lost`]).
    heard: bool,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("worker_id", &self.worker_id)
            .field("work", &self.work)
            .field("drain_deadline", &self.drain_deadline)
            .finish_non_exhaustive()
    }
}

impl<'w> Session<'w> {
    pub(super) fn new(
        config: &WorkerConfig,
        timebase: Timebase,
        work: &'w mut Work,
        connection: Connection,
    ) -> Session<'w> {
        Session {
            worker_id: config.id.clone(),
            default_timeout: config.default_timeout,
            drain_timeout: config.drain_timeout,
            timebase,
            work,
            incoming: connection.incoming,
            definitions: Definitions::new(config.runtimes.clone()),
            drain_deadline: None,
            heard: false,
        }
        .linked(connection.outgoing)
    }

    /// The work sends on this stream from now on, starting with the
    /// results it kept while there was none.
    fn linked(self, outgoing: mpsc::Sender<WorkerMessage>) -> Session<'w> {
        if let Err(reason) = self.work.connect(outgoing) {
            // The queue is far larger than what the pool can hold; should it
            // be full anyway, the first send of the loop fails the same way.
            debug!(worker = %self.worker_id, %reason, "could not queue the held results");
        }
        self
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
            if let Err(reason) = self.work.carry_out_outputs() {
                return self.lost(reason);
            }
            if self.work.pool.is_draining() && self.work.pool.is_idle() {
                return self.close().await;
            }
            let next = self
                .work
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
                Some(done) = self.work.next_completion() => self.work.complete(done),
                () = &mut timer => {
                    timer_at = None;
                    self.work.pool.handle_timeout(self.timebase.now());
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
                        running = self.work.pool.running(),
                        queued = self.work.pool.queued(),
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

    fn lost(self, reason: String) -> SessionEnd {
        let heartbeat_sent = self.work.disconnect();
        SessionEnd::Lost {
            reason,
            running: self.work.running(),
            settled: self.heard || heartbeat_sent,
        }
    }

    /// Aborts what still runs (after a drain timeout; the scheduler re-queues
    /// it when the stream ends), ends the worker's side of the stream (after
    /// what is queued on it), then waits a little for the scheduler to end its
    /// side.
    async fn close(mut self) -> SessionEnd {
        self.work.abort_all();
        self.work.disconnect();
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
            running = self.work.pool.running(),
            queued = self.work.pool.queued(),
            "shutting down: draining"
        );
        self.work.pool.drain();
        self.drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
        self.work.send(wire::draining())
    }

    fn on_message(&mut self, message: SchedulerMessage) -> Result<(), String> {
        self.heard = true;
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
                self.work.assign(assignment);
                Ok(())
            }
            Err(rejection) => {
                debug!(
                    execution = %rejection.execution_id,
                    error = %rejection.error,
                    "cannot run this request; reporting it failed"
                );
                self.work.reject(rejection)
            }
        }
    }

    fn cancel(&mut self, cancel: &CancelRequest) {
        match wire::cancel_target(cancel) {
            Some((execution, attempt)) => self.work.cancel(execution, attempt),
            None => {
                debug!(execution = %cancel.execution_id, "cancel for an invalid execution id; ignored")
            }
        }
    }
}

//! Worker streams as the actor sees them: a hello makes a session in the
//! core; later messages (heartbeats, results, draining) feed it.

use taskforge_core::scheduler::Capabilities;
use taskforge_proto::common::Outcome as WireOutcome;
use taskforge_proto::worker::HeldAttempt;

use super::*;

impl Actor {
    pub(super) fn worker_joined(
        &mut self,
        hello: WorkerHello,
        outbox: Outbox,
    ) -> Result<SessionId, Status> {
        if self.shutting_down {
            return Err(Status::unavailable("the scheduler is shutting down"));
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let pool_size = match hello.pool_size {
            0 => self.options.default_pool_size,
            n => n.min(MAX_POOL_SIZE),
        };
        let holding = held_attempts(&hello.holding)?;
        let worker_id: Arc<str> = hello.worker_id.into();
        let now = self.now();
        self.core
            .worker_connected_holding(
                now,
                session,
                WorkerId::new(worker_id.clone()),
                pool_size,
                capabilities(&hello.runtimes),
                &holding,
            )
            .map_err(|error| match error {
                ConnectError::IdInUse { .. } => Status::already_exists(error.to_string()),
                ConnectError::NoSlots | ConnectError::SessionInUse(_) => {
                    Status::invalid_argument(error.to_string())
                }
            })?;
        tracing::info!(
            worker = %worker_id,
            %session,
            pool_size,
            holding = holding.len(),
            "worker joined"
        );
        self.observe(&SchedulerEvent::WorkerJoined {
            session,
            worker: &worker_id,
            pool_size,
        });
        self.sessions.insert(
            session,
            Session {
                worker_id,
                outbox,
                understands_cancel: hello.pool_size != 0,
                caches_functions: hello.caches_functions,
                runtimes: hello.runtimes.clone(),
                defined: BTreeSet::new(),
            },
        );
        Ok(session)
    }

    pub(super) fn on_worker_message(&mut self, session: SessionId, message: FromWorker) {
        let now = self.now();
        match message {
            FromWorker::Heartbeat(beat) => {
                let running = u32::try_from(beat.running_tasks).unwrap_or(0);
                self.core.heartbeat(now, session, running);
            }
            FromWorker::Result(result) => {
                let Some(id) = ExecutionId::parse(&result.execution_id) else {
                    tracing::debug!(%session, id = %result.execution_id, "result for a malformed execution id");
                    return;
                };
                // A seed worker does not echo attempts: it means the one it runs.
                let attempt = match result.attempt {
                    0 => self
                        .core
                        .in_flight(session)
                        .iter()
                        .find(|(held, _)| *held == id)
                        .map_or(0, |&(_, attempt)| attempt),
                    n => n,
                };
                let outcome = if result.output.len() > self.options.max_output_bytes {
                    Outcome::Failure {
                        error: format!(
                            "output is {} bytes; the limit is {}",
                            result.output.len(),
                            self.options.max_output_bytes
                        ),
                        output: Bytes::new(),
                    }
                } else if result.success {
                    Outcome::Success(result.output)
                } else if result.outcome == WireOutcome::TimedOut as i32 {
                    Outcome::TimedOut {
                        error: result.error,
                    }
                } else {
                    Outcome::Failure {
                        error: result.error,
                        output: result.output,
                    }
                };
                self.stamps = Some(Stamps {
                    id,
                    started_at_us: result.started_at_us,
                    finished_at_us: result.finished_at_us,
                    logs: truncate_logs(result.logs),
                });
                let disposition = self.core.result(now, session, id, attempt, outcome);
                self.observe(&SchedulerEvent::Result {
                    session,
                    execution: id,
                    attempt,
                    disposition,
                });
                self.carry_out();
                self.stamps = None;
            }
            FromWorker::Draining(_) => {
                if self.core.worker_draining(now, session) {
                    if let Some(s) = self.sessions.get(&session) {
                        tracing::info!(worker = %s.worker_id, %session, "worker draining");
                    }
                }
            }
            FromWorker::Hello(_) => {
                tracing::debug!(%session, "ignored a second hello on a worker stream");
            }
        }
    }
}

/// The most attempts a hello may list as held: far more than any pool holds.
const MAX_HELD_ATTEMPTS: usize = 2 * MAX_POOL_SIZE as usize;

/// The attempts a hello lists as still held, or why they cannot be read.
fn held_attempts(listed: &[HeldAttempt]) -> Result<Vec<(ExecutionId, u32)>, Status> {
    if listed.len() > MAX_HELD_ATTEMPTS {
        return Err(Status::invalid_argument(format!(
            "the hello lists {} held attempts; at most {MAX_HELD_ATTEMPTS} are allowed",
            listed.len()
        )));
    }
    listed
        .iter()
        .map(|held| {
            let id = ExecutionId::parse(&held.execution_id).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "the hello lists a held attempt of {:?}, which is not an execution id",
                    held.execution_id
                ))
            })?;
            if held.attempt == 0 {
                return Err(Status::invalid_argument(format!(
                    "the hello lists attempt 0 of {id} as held; attempts count from 1"
                )));
            }
            Ok((id, held.attempt))
        })
        .collect()
}

/// What a worker runs: the runtimes its hello names, or anything for a seed
/// worker, which names none.
fn capabilities(runtimes: &[String]) -> Capabilities {
    if runtimes.is_empty() {
        return Capabilities::Any;
    }
    Capabilities::only(runtimes.iter().map(|name| runtime_of(name)))
}

/// The most of a result's logs kept per execution: workers send a tail this
/// size already; a worker that sends more has the front cut.
const MAX_LOG_BYTES: usize = 16 << 10;

fn truncate_logs(mut logs: String) -> String {
    if logs.len() > MAX_LOG_BYTES {
        let mut cut = logs.len() - MAX_LOG_BYTES;
        while !logs.is_char_boundary(cut) {
            cut += 1;
        }
        logs.drain(..cut);
    }
    logs
}

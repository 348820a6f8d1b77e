//! Carrying out what the core decided: attempts onto worker streams (with
//! the function's definition first where the stream lacks it), aborts,
//! state changes to watchers, records to the log.

use super::*;

impl Actor {
    /// Carries out everything the core asked for.
    pub(super) fn carry_out(&mut self) {
        while let Some(output) = self.core.poll_output() {
            self.observe(&SchedulerEvent::Output(&output));
            match output {
                Output::Dispatch(dispatch) => self.dispatch(dispatch),
                Output::Abort {
                    session,
                    execution,
                    attempt,
                    ..
                } => {
                    if let Some(s) = self.sessions.get(&session) {
                        if s.understands_cancel {
                            let cancel = CancelRequest {
                                execution_id: execution.to_string(),
                                attempt,
                            };
                            let _ = s.outbox.send(Ok(SchedulerMessage {
                                message: Some(scheduler_message::Message::Cancel(cancel)),
                            }));
                        }
                    }
                }
                Output::Adopted {
                    session,
                    execution,
                    attempt,
                } => self.adopted(session, execution, attempt),
                Output::Requeued { execution, .. } => {
                    if let Some(meta) = self.meta.get_mut(&execution) {
                        meta.shown = ExecStatus::Pending;
                    }
                    self.notify(execution);
                }
                Output::Finished {
                    execution,
                    terminal,
                } => self.finished(execution, terminal),
                Output::WorkerLost {
                    session,
                    worker,
                    reason,
                } => {
                    // Dropping the outbox closes the stream if it is still open.
                    self.sessions.remove(&session);
                    match reason {
                        LossReason::Disconnected => {
                            tracing::info!(%worker, %session, "worker left");
                        }
                        LossReason::HeartbeatTimeout | LossReason::Replaced => {
                            tracing::warn!(%worker, %session, %reason, "worker lost");
                        }
                    }
                }
                Output::Quarantined { session, worker } => {
                    tracing::warn!(
                        %worker,
                        %session,
                        "worker quarantined: its attempts keep ending with no result; \
                         it gets no new work until it answers for what it holds"
                    );
                }
                Output::QuarantineLifted { session, worker } => {
                    tracing::info!(%worker, %session, "worker out of quarantine: it answered for all it held");
                }
                Output::Evicted { execution } => {
                    let key = match self.meta.remove(&execution) {
                        Some(meta) => meta.idempotency_key,
                        None => self.filed_keys.remove(&execution),
                    };
                    if let Some(key) = key {
                        self.keys.release(&key, execution);
                    }
                    let filed = self.listed.remove(&execution).flatten();
                    self.watchers.remove(execution);
                    self.log.push(Record::Evicted {
                        id: execution,
                        filed,
                    });
                }
            }
        }
    }

    /// Sends an attempt to its worker (with the function's definition first,
    /// if the worker caches definitions and has not had this one). A message
    /// too large to send fails that one attempt, never the worker's stream.
    pub(super) fn dispatch(&mut self, dispatch: Dispatch) {
        let started_at_us = (self.clock)();
        let Some(session) = self.sessions.get_mut(&dispatch.session) else {
            return;
        };
        let worker_id = session.worker_id.clone();
        let function = self.functions.get(&*dispatch.function).map(|f| &f.proto);
        let define = match function {
            Some(function) if session.caches_functions => session
                .defined
                .insert(dispatch.function.clone())
                .then(|| scheduler_message::Message::Define(function.clone())),
            _ => None,
        };
        let request = ExecutionRequest {
            execution_id: dispatch.execution.to_string(),
            function_id: dispatch.function.to_string(),
            payload: dispatch.payload,
            attempt: dispatch.attempt,
            timeout_ms: dispatch.timeout.as_millis() as u64,
            function: function.filter(|_| !session.caches_functions).cloned(),
        };
        let messages = define
            .into_iter()
            .chain([scheduler_message::Message::Execute(request)])
            .map(|message| SchedulerMessage {
                message: Some(message),
            });
        let limit = self.options.message_limit();
        let mut too_large = None;
        for message in messages {
            let size = message.encoded_len();
            if size > limit {
                too_large = Some(match message.message {
                    Some(scheduler_message::Message::Define(_)) => {
                        session.defined.remove(&dispatch.function);
                        format!(
                            "the function's definition is {size} bytes encoded, over the \
                             {limit}-byte message limit; register it again with smaller code"
                        )
                    }
                    _ => format!(
                        "the execution request is {size} bytes encoded, over the \
                         {limit}-byte message limit"
                    ),
                });
                break;
            }
            // A closed outbox means the stream is ending; its disconnect will
            // re-queue this attempt.
            let _ = session.outbox.send(Ok(message));
        }
        self.log.push(Record::Started {
            id: dispatch.execution,
            attempt: dispatch.attempt,
            worker_id: worker_id.to_string(),
            started_at_us,
        });
        if let Some(meta) = self.meta.get_mut(&dispatch.execution) {
            meta.started_at_us = started_at_us;
            meta.worker_id = Some(worker_id);
            meta.shown = ExecStatus::Running;
            let quick = self
                .functions
                .get(&*dispatch.function)
                .is_some_and(|f| f.is_quick(self.options.commit_delay));
            if quick && meta.accepted_in > self.committed_through {
                self.results_due
                    .insert(dispatch.execution, meta.accepted_in);
            }
        }
        self.notify(dispatch.execution);
        if let Some(error) = too_large {
            // Nothing was sent: answer for the worker, so the slot frees and
            // only this execution fails.
            let now = self.now();
            let outcome = Outcome::Failure {
                error,
                output: Bytes::new(),
            };
            self.core.result(
                now,
                dispatch.session,
                dispatch.execution,
                dispatch.attempt,
                outcome,
            );
        }
    }

    /// A reconnecting worker runs on an attempt it held: nothing to send,
    /// nothing to record (the attempt's start is on file already).
    fn adopted(&mut self, session: SessionId, execution: ExecutionId, attempt: u32) {
        let worker_id = self.sessions.get(&session).map(|s| s.worker_id.clone());
        tracing::debug!(%execution, attempt, %session, "adopted a running attempt");
        if let Some(meta) = self.meta.get_mut(&execution) {
            meta.worker_id = worker_id.or(meta.worker_id.take());
            meta.shown = ExecStatus::Running;
        }
        self.notify(execution);
    }

    pub(super) fn finished(&mut self, id: ExecutionId, terminal: Terminal) {
        self.results_due.remove(&id);
        let now_us = (self.clock)();
        // When it was last dispatched (0: never), before the worker's own
        // stamps replace it.
        let dispatched_at_us = self.meta.get(&id).map_or(0, |meta| meta.started_at_us);
        if let Some(view) = self.core.execution(id) {
            if let Some(function) = self.functions.get_mut(&**view.function) {
                function.live = function.live.saturating_sub(1);
                if dispatched_at_us != 0 {
                    function.took(now_us.saturating_sub(dispatched_at_us));
                }
            }
        }
        let stamps = match &self.stamps {
            Some(stamps) if stamps.id == id => self.stamps.take(),
            _ => None,
        };
        let attempt = self.core.execution(id).map_or(0, |view| view.attempt);
        let Some(meta) = self.meta.get_mut(&id) else {
            return;
        };
        if let Some(stamps) = &stamps {
            if stamps.started_at_us != 0 {
                meta.started_at_us = stamps.started_at_us;
            }
        }
        meta.finished_at_us = stamps
            .as_ref()
            .map(|s| s.finished_at_us)
            .filter(|&at| at != 0)
            .unwrap_or(now_us);
        let logs = stamps.map(|s| s.logs).unwrap_or_default();
        meta.logs = (!logs.is_empty()).then(|| logs.as_str().into());
        meta.terminal = Some(terminal.clone());
        self.log.push(Record::Finished {
            id,
            finished: FinishedRecord {
                terminal,
                attempt,
                worker_id: meta.worker_id.as_deref().unwrap_or_default().to_string(),
                started_at_us: meta.started_at_us,
                finished_at_us: meta.finished_at_us,
                logs,
            },
        });
        self.unpublished.insert(id, meta.shown);
        self.hold(Durable::Finished { id });
    }
}

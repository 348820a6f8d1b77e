//! What the actor does when the store answers: the replies that waited
//! for their records to be durable, the terminal states shown once theirs
//! are, and what a failed commit means for each.

use super::*;

impl Actor {
    /// The store failed before `id`'s acceptance was durable, so the client
    /// was told UNAVAILABLE: the execution must not run on as if accepted.
    /// It ends FAILED (aborted on its worker if it started) and its key is
    /// freed, so the client's retry makes a new execution. One that already
    /// finished did run: it keeps its result and its key (a retry returns
    /// it), and the store's next good sync makes its records durable.
    pub(super) fn abandon(&mut self, id: ExecutionId, failure: &str) {
        let now = self.now();
        let error = format!(
            "not run: the store failed before its acceptance was durable ({failure}); \
             the trigger was answered UNAVAILABLE"
        );
        if self.core.fail(now, id, error).is_err() {
            return;
        }
        if let Some(meta) = self.meta.get_mut(&id) {
            meta.abandoned = true;
            if let Some(key) = meta.idempotency_key.take() {
                self.keys.release(&key, id);
            }
        }
    }

    /// Settles an acceptance whose batch was written: Ok if it is durable;
    /// if the write failed, the execution is abandoned and the client told
    /// UNAVAILABLE (it may retry, with the same idempotency key).
    pub(super) fn accepted(
        &mut self,
        trigger: Triggered,
        failure: Option<&str>,
    ) -> Result<(), Status> {
        let id = trigger.id;
        match failure {
            // Not durable: never ACCEPTED, even if the execution already
            // ran and finished (dispatch overlaps the sync) and so cannot
            // be abandoned: a store that was fenced never writes it.
            Some(failure) if trigger.fresh => {
                self.abandon(id, failure);
                return Err(Status::unavailable(format!(
                    "the store failed before this execution's acceptance was durable \
                     ({failure}): trigger it again"
                )));
            }
            // A retry in a batch that failed: the execution it found stands
            // (or not) by its own batch; this answer cannot promise either.
            Some(failure) => {
                return Err(Status::unavailable(format!("the store failed: {failure}")));
            }
            None => {}
        }
        if self.meta.get(&id).is_some_and(|meta| meta.abandoned) {
            return Err(Status::unavailable(
                "the store failed before this execution's acceptance was durable; \
                 it was not run: trigger it again",
            ));
        }
        Ok(())
    }

    /// Sends the batch gathered this turn to the committer.
    pub(super) fn flush(&mut self) {
        let expects_batch = self
            .waiting
            .back()
            .is_some_and(|&(seq, _)| seq == self.committer.next_seq());
        if !self.log.is_empty() || expects_batch {
            let results_due = !self.results_due.is_empty();
            self.committer
                .submit(std::mem::take(&mut self.log), results_due);
        }
    }

    pub(super) fn on_commit(&mut self, commit: Commit) {
        let (through, failure, filed) = match commit {
            Commit::Durable {
                through,
                filed,
                pruned,
            } => {
                // Forgotten by the store's own retention: their keys go.
                for id in pruned {
                    if let Some(key) = self.filed_keys.remove(&id) {
                        self.keys.release(&key, id);
                    }
                }
                if self.failed_commits > 0 {
                    tracing::warn!(
                        failed_commits = self.failed_commits,
                        "the store makes records durable again"
                    );
                    self.failed_commits = 0;
                }
                (through, None, filed)
            }
            Commit::Failed { through, error } => {
                // Once per outage, not once per commit: a store that is down
                // fails every group until it is back.
                if self.failed_commits == 0 {
                    tracing::error!(%error, "the store failed to make records durable");
                } else {
                    tracing::debug!(%error, "the store failed to make records durable");
                }
                self.failed_commits += 1;
                (through, Some(error), Vec::new())
            }
        };
        // Those batches are settled: nothing waits for results due in them.
        self.committed_through = through;
        self.results_due.retain(|_, &mut batch| batch > through);
        if failure.is_none() {
            for id in std::mem::take(&mut self.stalled) {
                self.unpublished.remove(&id);
                self.notify(id);
            }
        }
        while self.waiting.front().is_some_and(|&(seq, _)| seq <= through) {
            let Some((_, what)) = self.waiting.pop_front() else {
                break;
            };
            let failed = || {
                let error = failure.clone().unwrap_or_default();
                Status::unavailable(format!("the store failed: {error}"))
            };
            match what {
                Durable::Accepted { reply, trigger } => {
                    let answer = self
                        .accepted(trigger, failure.as_deref())
                        .map(|()| trigger.id.to_string());
                    let _ = reply.send(answer);
                }
                Durable::AcceptedWatched { reply, trigger } => {
                    // Its terminal state, if any, is published by a later
                    // entry: the record comes after the acceptance in the log.
                    let answer = self
                        .accepted(trigger, failure.as_deref())
                        .and_then(|()| self.follow(trigger.id, AtTheCaps::CurrentStateOnly));
                    let _ = reply.send(answer);
                }
                Durable::Registered { reply, function_id } => {
                    let _ = reply.send(match failure {
                        None => Ok(function_id),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::FunctionDeleted { reply } => {
                    let _ = reply.send(match failure {
                        None => Ok(()),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::Cancelled { reply } => {
                    let _ = reply.send(match failure {
                        None => Ok(ExecStatus::Cancelled.as_str().to_string()),
                        Some(_) => Err(failed()),
                    });
                }
                Durable::Finished { id } if failure.is_some() => self.stalled.push(id),
                Durable::Finished { id } => {
                    self.unpublished.remove(&id);
                    self.notify(id);
                }
            }
        }
        // Published above (their ends were in these batches), so now only
        // their summaries stay in memory.
        for (id, location) in filed {
            self.filed(id, location);
        }
    }

    /// `id`'s end is in the history at `location`: memory keeps only where
    /// (or nothing, when the store answers for its history; an idempotency
    /// key stays until the store's retention forgets the execution).
    pub(super) fn filed(&mut self, id: ExecutionId, location: Location) {
        if self.history_in_store {
            self.listed.remove(&id);
            if let Some(key) = self.meta.remove(&id).and_then(|meta| meta.idempotency_key) {
                self.filed_keys.insert(id, key);
            }
            self.watchers.remove(id);
            self.core.forget(id);
            return;
        }
        let Some(entry) = self.listed.get_mut(&id) else {
            return; // forgotten by retention already
        };
        *entry = Some(location);
        if let Some(meta) = self.meta.remove(&id) {
            if let Some(key) = meta.idempotency_key {
                self.filed_keys.insert(id, key);
            }
        }
    }
}

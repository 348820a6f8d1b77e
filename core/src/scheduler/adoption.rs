//! Restoring executions after a restart, and adopting the attempts that
//! reconnecting workers still hold.
//!
//! A worker keeps running what it holds when its stream ends, and lists
//! those attempts when it connects again, to the same scheduler or to one
//! that took over. An attempt listed that way is *adopted* when it is still
//! its execution's latest attempt and runs on no other session: it goes on
//! running where it is, under the same attempt number, and its result counts.
//! That holds for an attempt the scheduler had already counted lost (queued or
//! backing off for its retry, not started again yet) and for one restored
//! from before a restart.
//!
//! A restored execution whose latest attempt had started is *orphaned*: its
//! worker may still be running it. It is not dispatched again until the
//! adoption window ([`SchedulerConfig::adoption_window`]) has passed; a worker
//! that reports it within the window adopts it, and after the window the
//! attempt counts lost and the execution is retried (or fails, out of
//! attempts), as if its worker had been lost then.
//!
//! A listed attempt *newer* than the scheduler knows of an execution that is
//! not running is adopted too: its start was dispatched but its record was
//! lost (a crash before the record was durable), and the worker's word is
//! the only account of it. The execution takes that attempt number, so the
//! next attempt never reuses it (a reused number would let the report of the
//! attempt being aborted pass for the new one's).
//!
//! An attempt that cannot be adopted (an older attempt, an execution that
//! finished, was forgotten or runs elsewhere, one beyond its `max_attempts`,
//! or one the scheduler itself timed out and told the worker to stop) is
//! aborted on the worker.
//!
//! [`SchedulerConfig::adoption_window`]: super::SchedulerConfig::adoption_window

use std::collections::BTreeSet;

use super::{
    AbortReason, Done, Execution, Output, Place, Prior, Scheduler, SubmitError, Timer, failed,
};
use crate::execution::{Status, Submission};
use crate::ids::{ExecutionId, SessionId};
use crate::time::Instant;

impl Scheduler {
    /// Puts back an execution recorded before a restart (the queue limit does
    /// not apply: they were accepted already). A pending one that never
    /// started queues again; one whose latest attempt started is orphaned for
    /// the adoption window (queued at once when the window is zero).
    pub fn restore(
        &mut self,
        now: Instant,
        submission: Submission,
        prior: Prior,
    ) -> Result<(), SubmitError> {
        self.admit(&submission)?;
        let id = submission.id;
        match prior {
            Prior::Pending { attempts_started }
                if attempts_started > 0 && !self.config.adoption_window.is_zero() =>
            {
                self.orphan(now, submission, attempts_started);
            }
            Prior::Pending { attempts_started } => {
                self.enqueue(now, submission, attempts_started);
                let max_attempts = self.executions[&id].policy.max_attempts;
                if attempts_started >= max_attempts {
                    let error = format!(
                        "lost {attempts_started} attempts, the last to a scheduler restart"
                    );
                    self.finish(now, id, failed(error));
                }
                self.pump(now);
            }
            Prior::Finished {
                status,
                attempt,
                finished_at,
            } => {
                if !status.is_terminal() {
                    return Err(SubmitError::InvalidPolicy(
                        "a finished execution's status must be terminal",
                    ));
                }
                self.by_status[status as usize] += 1;
                let done = Done {
                    function: submission.function,
                    status,
                    attempt,
                };
                self.done.insert(id, done);
                self.retain(now, finished_at.min(now), id);
            }
        }
        Ok(())
    }

    /// Holds a restored execution whose attempt `attempts_started` may still
    /// run somewhere until the adoption window ends.
    fn orphan(&mut self, now: Instant, submission: Submission, attempts_started: u32) {
        let id = submission.id;
        let runtime = self.runtimes.acquire(&submission.runtime);
        let until = now + self.config.adoption_window;
        let place = Place::Orphaned { runtime, until };
        let mut execution = Execution::new(submission, attempts_started, place);
        // The latest attempt is not lost (yet).
        execution.lost = attempts_started - 1;
        self.executions.insert(id, execution);
        self.deadlines.insert(until, Timer::Orphaned(id));
        self.by_status[Status::Running as usize] += 1;
    }

    /// The adoption window of an orphaned execution ended with no worker
    /// reporting its attempt: the attempt is lost.
    pub(super) fn expire_orphan(&mut self, now: Instant, id: ExecutionId, at: Instant) {
        let Some(exec) = self.executions.get(&id) else {
            return;
        };
        if !matches!(exec.place, Place::Orphaned { until, .. } if until == at) {
            return;
        }
        let (attempt, window) = (exec.attempt, self.config.adoption_window);
        // The timer was popped: nothing is left armed.
        self.requeue_lost(now, id, attempt, None, |lost| {
            format!(
                "lost {lost} attempts, the last to a scheduler restart \
                 (no worker reported it running within {window:?})"
            )
        });
    }

    /// A worker replacing its own old session `old` with `new` keeps the
    /// attempts it lists: those running on `old` move to `new` (their
    /// deadlines unchanged) before `old` is lost. Returns them, for the new
    /// session's in-flight list.
    pub(super) fn move_attempts(
        &mut self,
        old: SessionId,
        new: SessionId,
        holding: &[(ExecutionId, u32)],
    ) -> Vec<(ExecutionId, u32)> {
        let Some(worker) = self.workers.get(old) else {
            return Vec::new();
        };
        let listed: BTreeSet<(ExecutionId, u32)> = holding.iter().copied().collect();
        let moving: Vec<(ExecutionId, u32)> = worker
            .in_flight
            .iter()
            .copied()
            .filter(|entry| listed.contains(entry))
            .filter(|&(id, attempt)| {
                self.executions.get(&id).is_some_and(|exec| {
                    exec.attempt == attempt
                        && matches!(exec.place, Place::Running { session, .. } if session == old)
                })
            })
            .collect();
        if moving.is_empty() {
            return moving;
        }
        self.workers.update(old, |worker| {
            worker.in_flight.retain(|entry| !moving.contains(entry));
        });
        for &(id, attempt) in &moving {
            if let Some(exec) = self.executions.get_mut(&id) {
                if let Place::Running { session, .. } = &mut exec.place {
                    *session = new;
                }
            }
            self.outputs.push_back(Output::Adopted {
                session: new,
                execution: id,
                attempt,
            });
        }
        moving
    }

    /// Adopts what the newly connected `session` lists as still held, and
    /// aborts the rest (see the module's rules).
    pub(super) fn adopt(
        &mut self,
        now: Instant,
        session: SessionId,
        holding: &[(ExecutionId, u32)],
    ) {
        let listed: BTreeSet<(ExecutionId, u32)> = holding.iter().copied().collect();
        for (id, attempt) in listed {
            match self.adoptable(session, id, attempt) {
                Adoptable::Yes => self.take_over(now, session, id, attempt),
                Adoptable::AlreadyHere => {}
                Adoptable::No => {
                    self.take_number(now, id, attempt);
                    // The worker stops it and reports it: until then its slot
                    // is busy, as an aborted attempt's is.
                    self.workers
                        .update(session, |worker| worker.in_flight.push((id, attempt)));
                    self.outputs.push_back(Output::Abort {
                        session,
                        execution: id,
                        attempt,
                        reason: AbortReason::NotAdopted,
                    });
                }
            }
        }
    }

    /// A worker holds attempt `attempt` of `id`, which is not adopted: its
    /// number is taken (see `Execution::taken`). A pending execution left
    /// with no number to start its next attempt under fails.
    fn take_number(&mut self, now: Instant, id: ExecutionId, attempt: u32) {
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        let max_attempts = exec.policy.max_attempts;
        if attempt <= exec.taken || attempt > max_attempts {
            return;
        }
        exec.taken = attempt;
        if exec.taken >= max_attempts && exec.status() == Status::Pending {
            let error = format!(
                "out of attempts: attempt {attempt} of {max_attempts} was started \
                 (its record lost) and is being stopped"
            );
            self.finish(now, id, failed(error));
        }
    }

    fn adoptable(&self, session: SessionId, id: ExecutionId, attempt: u32) -> Adoptable {
        let Some(exec) = self.executions.get(&id) else {
            return Adoptable::No;
        };
        let known = exec.attempt == attempt;
        // Not `taken`: a number taken by an attempt being stopped is never
        // adopted again.
        let record_lost = attempt > exec.taken && attempt <= exec.policy.max_attempts;
        if attempt == 0 || !(known || record_lost) {
            return Adoptable::No;
        }
        match exec.place {
            Place::Running { session: s, .. } if s == session && known => Adoptable::AlreadyHere,
            Place::Running { .. } => Adoptable::No,
            // The scheduler gave up on it (no result by its deadline) and
            // told the worker to stop it: whatever it reports now is the
            // abort, not the function's verdict.
            Place::Queued { avoid: Some(_), .. } | Place::Backoff { avoid: Some(_), .. } => {
                Adoptable::No
            }
            Place::Orphaned { .. } | Place::Queued { .. } | Place::Backoff { .. } => Adoptable::Yes,
        }
    }

    /// Makes the held attempt `attempt` of `id` (orphaned, lost and not
    /// started again, or newer than the records tell) run on `session`, as if
    /// it had been dispatched there now: its timeout counts from now.
    fn take_over(&mut self, now: Instant, session: SessionId, id: ExecutionId, attempt: u32) {
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        let runtime = exec.place.runtime();
        match exec.place {
            Place::Orphaned { until, .. } => self.deadlines.remove(until, Timer::Orphaned(id)),
            Place::Queued { ticket, .. } => self.ready.remove(runtime, ticket),
            Place::Backoff { until, .. } => self.deadlines.remove(until, Timer::Backoff(id)),
            Place::Running { .. } => return,
        }
        if attempt > exec.attempt {
            // Dispatched before its record was lost: the attempts before it
            // ran and were lost.
            exec.attempt = attempt;
            exec.taken = exec.taken.max(attempt);
            exec.lost = attempt - 1;
        } else if exec.status() == Status::Pending {
            // It was counted lost when it went back in line; it was not.
            exec.lost = exec.lost.saturating_sub(1);
        }
        if exec.status() == Status::Pending {
            self.by_status[Status::Pending as usize] -= 1;
            self.by_status[Status::Running as usize] += 1;
        }
        self.run_on(now, id, runtime, session);
        self.outputs.push_back(Output::Adopted {
            session,
            execution: id,
            attempt,
        });
    }
}

enum Adoptable {
    Yes,
    /// Listed twice, or moved over from the worker's old session.
    AlreadyHere,
    No,
}

//! What happens when a deadline passes: a silent worker is lost, an
//! execution that could not start in time fails, and an attempt with no
//! result by its timeout plus grace is given up on.

use super::{AbortReason, LossReason, Output, Place, Scheduler, Timer, failed};
use crate::execution::Status;
use crate::ids::{ExecutionId, SessionId};
use crate::time::Instant;

impl Scheduler {
    pub(super) fn check_liveness(&mut self, now: Instant, session: SessionId) {
        let timeout = self.config.heartbeat_timeout;
        let Some(worker) = self.workers.get(session) else {
            return;
        };
        let due = worker.last_heard + timeout;
        if due <= now {
            self.lose(now, session, LossReason::HeartbeatTimeout);
        } else {
            // Heard from since the timer was armed: check again later.
            self.workers
                .update(session, |worker| worker.liveness_check = due);
            self.deadlines.insert(due, Timer::Liveness(session));
        }
    }

    pub(super) fn expire_start(&mut self, now: Instant, id: ExecutionId) {
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        let Some(limit) = exec.policy.schedule_to_start else {
            return;
        };
        if exec.status() != Status::Pending {
            return;
        }
        exec.start_deadline = None;
        let runtime = &exec.runtime;
        let capable = self.workers.running(exec.place.runtime());
        let why = match capable {
            0 => format!("no connected worker runs {runtime}"),
            1 => format!("the only worker that runs {runtime} stayed busy"),
            n => format!("all slots of {n} workers that run {runtime} stayed busy"),
        };
        self.finish(
            now,
            id,
            failed(format!("not started within {limit:?}: {why}")),
        );
    }

    pub(super) fn expire_attempt(&mut self, now: Instant, id: ExecutionId, at: Instant) {
        let Some(exec) = self.executions.get(&id) else {
            return;
        };
        let Place::Running {
            session, deadline, ..
        } = exec.place
        else {
            return;
        };
        if deadline != at {
            return;
        }
        // No result, not even the worker's own timeout report: the worker is
        // stuck or ignoring us, and that is not the function's verdict. Tell it
        // to stop (its slot stays busy until it answers), count a strike
        // against the session, and run the execution again elsewhere.
        let attempt = exec.attempt;
        let (timeout, grace) = (exec.policy.timeout, self.config.timeout_grace);
        self.outputs.push_back(Output::Abort {
            session,
            execution: id,
            attempt,
            reason: AbortReason::NoResult,
        });
        let quarantine_after = self.config.quarantine_after;
        let newly_quarantined = self.workers.update(session, |worker| {
            worker.timeouts_in_a_row += 1;
            let strike_out = !worker.quarantined && worker.timeouts_in_a_row >= quarantine_after;
            worker.quarantined |= strike_out;
            strike_out.then(|| worker.id.clone())
        });
        let worker = self
            .workers
            .get(session)
            .map_or_else(|| "a lost worker".to_string(), |w| w.id.to_string());
        if let Some(Some(id)) = newly_quarantined {
            self.outputs.push_back(Output::Quarantined {
                session,
                worker: id,
            });
        }
        // The timer was popped: the deadline is disarmed already.
        self.requeue_lost(now, id, attempt, Some(session), |lost| {
            format!(
                "timed out: no result within {timeout:?} (+{grace:?} grace), \
                 {lost} attempts lost (last: {worker}, {session})"
            )
        });
    }
}

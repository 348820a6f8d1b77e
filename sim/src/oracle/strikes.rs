//! Attempts the scheduler gave up on: no attempt outlives its timeout plus
//! grace, each such timeout is a strike against its session, and the third in
//! a row quarantines it until it holds nothing.

use super::*;

impl Oracle {
    /// Attempts in flight past their deadline (timeout plus grace) that the
    /// scheduler has neither timed out nor lost.
    pub(super) fn overdue_attempts(&mut self, at: Duration) {
        let mut overdue = Vec::new();
        for (&execution, current) in &mut self.scheduler.current {
            if current.overdue {
                continue;
            }
            let Some(request) = self.executions.get(&execution).and_then(|e| e.request) else {
                continue; // its timeout is known once a client saw it ACCEPTED
            };
            let Some(timeout) = self.plan.requests.get(request as usize).map(|r| r.timeout) else {
                continue;
            };
            let deadline = current.dispatched_at + timeout + TIMEOUT_GRACE;
            if at > deadline + LOSS_SLACK {
                current.overdue = true;
                overdue.push((
                    execution,
                    format!(
                        "{execution}/{} on {} had no result by its deadline ({timeout:?} + \
                         {TIMEOUT_GRACE:?} grace after its dispatch at {:?}), yet the scheduler \
                         neither timed it out nor lost it",
                        current.attempt, current.session, current.dispatched_at
                    ),
                ));
            }
        }
        for (execution, what) in overdue {
            self.violation(at, Some(execution), what);
        }
    }

    /// The scheduler timed an attempt out: a strike against its session.
    pub(super) fn aborted(
        &mut self,
        at: Duration,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
    ) {
        let shadow = &mut self.scheduler;
        let Some(current) = shadow
            .current
            .get(&execution)
            .filter(|c| c.is(session, attempt))
        else {
            return;
        };
        let dispatched_at = current.dispatched_at;
        let Some(s) = shadow.sessions.get_mut(&session) else {
            return;
        };
        s.timeouts_in_a_row += 1;
        shadow.strike = Some(session);
        let black_hole = s.black_hole;
        let exec = self.executions.entry(execution).or_default();
        if !black_hole {
            exec.other_losses += 1;
        }
        let timeout = exec
            .request
            .and_then(|r| self.plan.requests.get(r as usize))
            .map(|r| r.timeout);
        if let Some(timeout) = timeout {
            let deadline = dispatched_at + timeout + TIMEOUT_GRACE;
            if at + EARLY_SLACK < deadline {
                self.violation(
                    at,
                    Some(execution),
                    format!(
                        "timed out {execution}/{attempt} on {session} before its deadline \
                         ({timeout:?} + {TIMEOUT_GRACE:?} grace after {dispatched_at:?})"
                    ),
                );
            }
        }
    }

    /// After an attempt timed out, the scheduler's next decision must be to
    /// quarantine its session if that was the [`QUARANTINE_AFTER`]th strike.
    pub(super) fn check_strike(&mut self, at: Duration, decision: &Decision) {
        let Some(session) = self.scheduler.strike.take() else {
            return;
        };
        if matches!(decision, &Decision::Quarantined { session: s, lifted: false } if s == session)
        {
            return;
        }
        let Some(s) = self.scheduler.sessions.get(&session) else {
            return;
        };
        if !s.quarantined && s.timeouts_in_a_row >= QUARANTINE_AFTER {
            let what = format!(
                "{} ({session}) had {} attempts in a row time out, yet was not quarantined",
                s.worker, s.timeouts_in_a_row
            );
            self.violation(at, None, what);
        }
    }

    pub(super) fn quarantined(&mut self, at: Duration, session: SessionId, lifted: bool) {
        let Some(s) = self.scheduler.sessions.get_mut(&session) else {
            let what = format!("quarantine of {session}, which is not connected");
            self.violation(at, None, what);
            return;
        };
        let problem = match lifted {
            false if s.timeouts_in_a_row < QUARANTINE_AFTER => Some(format!(
                "{} ({session}) was quarantined after {} attempts in a row timed out; \
                 the rule is {QUARANTINE_AFTER}",
                s.worker, s.timeouts_in_a_row
            )),
            true if s.in_flight > 0 => Some(format!(
                "{} ({session}) was let out of quarantine holding {} attempts it never \
                 answered for",
                s.worker, s.in_flight
            )),
            _ => None,
        };
        s.quarantined = !lifted;
        if lifted {
            s.timeouts_in_a_row = 0;
        }
        self.black_hole_quarantined |= s.black_hole && !lifted;
        if let Some(what) = problem {
            self.violation(at, None, what);
        }
    }
}

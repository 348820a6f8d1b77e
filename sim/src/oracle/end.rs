//! The checks made once a run is over and every fault has healed: every
//! accepted execution ended, with the right answer (or a failure its faults
//! explain).

use super::*;

impl Oracle {
    /// What `request` must end as: what its function computes — unless it was
    /// never dispatched and no worker that runs its runtime survived the run.
    /// Then nothing could ever start it, and it must fail once its
    /// schedule-to-start limit passes, saying that no connected worker runs
    /// the runtime. (Had it started before its runtime's last worker went,
    /// it would wait forever; scenarios never crash a runtime's last worker.)
    pub(super) fn expected(&self, request: &Request, dispatches: u32) -> Expected {
        let limit = request
            .schedule_to_start
            .or(cluster::default_policy().schedule_to_start);
        match limit {
            Some(limit) if dispatches == 0 && !self.survives(request.runtime) => {
                Expected::Error(format!(
                    "not started within {limit:?}: no connected worker runs {}",
                    request.runtime
                ))
            }
            _ => Expected::of(request.function, &request.payload),
        }
    }

    /// Whether a worker that runs `runtime` was not crashed for good.
    pub(super) fn survives(&self, runtime: RuntimeName) -> bool {
        self.plan
            .runtimes
            .iter()
            .any(|(worker, runs)| runs.contains(&runtime) && !self.crashed.contains(worker))
    }

    /// The checks that need the whole run; returns every violation found.
    pub fn finish(&mut self, at: Duration) -> Vec<Violation> {
        let mut found = Vec::new();
        let restarts = self.scheduler_restarts;
        for (&id, exec) in &self.executions {
            let Some(request) = exec.request.and_then(|r| self.request(r)) else {
                continue; // never ACCEPTED to a client: no promises were made
            };
            let max_attempts = request.max_attempts;
            let mut problem = |what: String| {
                found.push(Violation {
                    at,
                    execution: Some(id),
                    what,
                })
            };
            if exec.highest_attempt > max_attempts {
                problem(format!(
                    "{id} was dispatched as attempt {}; max_attempts is {max_attempts}",
                    exec.highest_attempt
                ));
            }
            if exec.starts > max_attempts + restarts {
                problem(format!(
                    "{id} was started {} times; max_attempts is {max_attempts} \
                     (and the scheduler restarted {restarts} times)",
                    exec.starts
                ));
            }
            let Some((view, _)) = &exec.terminal else {
                problem(format!(
                    "{id} (request {}, {:?}) was ACCEPTED but never seen finished{}",
                    request.id,
                    request.function,
                    if exec.gave_up {
                        " (the client gave up)"
                    } else {
                        ""
                    }
                ));
                continue;
            };
            if !exec.confirmed {
                problem(format!(
                    "{id} was seen {view} on a watch, but no status query confirmed it"
                ));
            }
            let expected = self.expected(request, exec.dispatches);
            let right = expected.matches(&view.status, &view.output, &view.error);
            let ran_out = view.status == "FAILED"
                && (view.error.starts_with("worker lost ")
                    || view.error.starts_with("timed out: no result within ")
                    || view.error.contains("the last to a scheduler restart"))
                && exec.dispatches >= max_attempts;
            if !right && !ran_out {
                problem(format!(
                    "{id} (request {}, {:?}, max_attempts {max_attempts}, {} dispatches) \
                     ended {view}; expected {expected}",
                    request.id, request.function, exec.dispatches
                ));
            }
            // The black hole can take at most QUARANTINE_AFTER attempts of an
            // execution per session (the strike that quarantines it is the
            // last); beyond that, only other losses can use attempts up.
            let could_take =
                QUARANTINE_AFTER * self.black_hole_sessions + exec.other_losses + restarts;
            if exec.black_holed && !right && max_attempts > could_take {
                problem(format!(
                    "{id} (request {}, {:?}) was dispatched to the black hole and ended {view}; \
                     with max_attempts {max_attempts}, more than the black hole \
                     ({QUARANTINE_AFTER} per session, {} sessions), its {} other lost attempts \
                     and {restarts} scheduler restarts could take, it must have finished \
                     elsewhere: expected {expected}",
                    request.id, request.function, self.black_hole_sessions, exec.other_losses
                ));
            }
            if request.function == Function::Fail && view.status == "COMPLETED" {
                problem(format!("{id} runs `fail` but COMPLETED"));
            }
        }
        if self.plan.black_hole && !self.black_hole_quarantined {
            found.push(Violation {
                at,
                execution: None,
                what: format!(
                    "the black hole was never quarantined ({} sessions)",
                    self.black_hole_sessions
                ),
            });
        }
        self.overdue_silences(at);
        self.overdue_attempts(at);
        let mut all = std::mem::take(&mut self.violations);
        all.extend(found);
        all
    }
}

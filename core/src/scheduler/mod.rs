//! The scheduler state machine: which worker runs what, what is late, and what
//! happens after a failure.
//!
//! The caller feeds it events (a worker connected, a result arrived, a client
//! submitted or cancelled), calls [`Scheduler::handle_timeout`] when
//! [`Scheduler::poll_timeout`] says so, and carries out what
//! [`Scheduler::poll_output`] returns. Every decision is a function of the inputs
//! and their order, so the same inputs always give the same outputs.
//!
//! Rules it keeps:
//! - an execution goes only to a worker that runs its runtime, and among those
//!   to the one with the most free slots, ties to the older session; a worker
//!   never holds more than its pool size plus the prefetch;
//! - executions wait, in submission order within their runtime, while no slot
//!   of a worker that runs it is free, until their schedule-to-start deadline;
//!   the wait is bounded. One runtime waiting never holds back another: across
//!   runtimes that can start something, the execution that became ready first
//!   goes first;
//! - an attempt lost with its worker, or that the scheduler timed out because
//!   no result came, is retried after a backoff (away from the worker that
//!   kept it, when another has room) until `max_attempts` starts, then the
//!   execution fails saying why;
//! - a session whose attempts keep timing out is quarantined (no new work)
//!   until it has answered for everything it holds;
//! - a second live connection under a worker id that is still heard from is
//!   refused, so two processes cannot take the id from each other in turn;
//! - a result counts only for the current attempt on the session it was sent to;
//! - an attempt a reconnecting worker reports it still holds is adopted, not
//!   run again, if it is still the execution's latest and runs nowhere else;
//!   attempts recorded as started before a restart wait an adoption window
//!   for their worker to report them, then are retried as lost (see
//!   [`adoption`]);
//! - a terminal state, once reached, never changes.

mod adoption;
mod config;
mod expiry;
mod output;
mod queue;
mod retention;
mod runtimes;
#[cfg(test)]
mod tests;
mod workers;

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::sync::Arc;

pub use config::{Backoff, Retention, SchedulerConfig};
pub use output::{
    AbortReason, Dispatch, ExecutionView, LossReason, Output, ResultDisposition, Stats, WorkerView,
};
pub use workers::Capabilities;

use crate::deadlines::Deadlines;
use crate::execution::{Outcome, Policy, Status, Submission, Terminal};
use crate::ids::{ExecutionId, SessionId, WorkerId};
use crate::time::Instant;
use queue::{ReadyQueues, Ticket};
use runtimes::{RuntimeId, Runtimes};
use workers::{Runs, Worker, WorkerTable};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the queue is full: {limit} executions are already waiting to start")]
    QueueFull { limit: usize },
    #[error("execution {0} already exists")]
    Duplicate(ExecutionId),
    #[error("invalid policy: {0}")]
    InvalidPolicy(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectError {
    #[error("{0} is already connected")]
    SessionInUse(SessionId),
    #[error("a worker must have at least one slot")]
    NoSlots,
    #[error(
        "worker id {id} is already connected ({session}, heard from {silent_for:?} ago); \
         a second connection under the same id is refused while the first is alive"
    )]
    IdInUse {
        id: WorkerId,
        session: SessionId,
        silent_for: std::time::Duration,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    #[error("execution {0} not found")]
    NotFound(ExecutionId),
    #[error("execution {id} already finished as {status}")]
    AlreadyFinished { id: ExecutionId, status: Status },
}

/// How far a restored execution had got before the scheduler restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prior {
    /// Accepted but not finished; `attempts_started` were dispatched. The
    /// latest of them may still run on a worker that reconnects (see
    /// [`adoption`]); the earlier ones are lost.
    Pending { attempts_started: u32 },
    /// Ended in `status` (terminal) on its `attempt`-th start, at
    /// `finished_at` (on the caller's clock, so retention by age counts from
    /// the real end, not from the restart). The core keeps no more of a
    /// finished execution than that: its output and error are the caller's
    /// to keep (on disk).
    Finished {
        status: Status,
        attempt: u32,
        finished_at: Instant,
    },
}

#[derive(Debug)]
struct Execution {
    function: Arc<str>,
    /// Only workers that run it get the execution.
    runtime: Arc<str>,
    payload: Bytes,
    policy: Policy,
    /// Attempts dispatched so far; the fencing token of the latest.
    attempt: u32,
    /// Attempts lost with their worker.
    lost: u32,
    /// The highest attempt number known to be in a worker's hands: at least
    /// `attempt`, more when a returning worker held a newer one that was not
    /// adopted (its start's record was lost). The next attempt is numbered
    /// above it, so a number is never given out twice and the report of an
    /// attempt being aborted cannot pass for a new one's.
    taken: u32,
    /// Schedule-to-start deadline, armed until the first dispatch.
    start_deadline: Option<Instant>,
    place: Place,
}

/// Where an execution is. Every unfinished place holds the id of the
/// execution's runtime (released when it is done); `avoid`, while pending, is
/// the session its last attempt timed out on: the retry goes elsewhere when
/// another worker that runs its runtime has room. (Kept here rather than
/// beside `place`, they would take room in every execution.)
#[derive(Debug)]
enum Place {
    /// In its runtime's ready queue, under `ticket`.
    Queued {
        runtime: RuntimeId,
        ticket: Ticket,
        avoid: Option<SessionId>,
    },
    Backoff {
        runtime: RuntimeId,
        until: Instant,
        avoid: Option<SessionId>,
    },
    Running {
        runtime: RuntimeId,
        session: SessionId,
        deadline: Instant,
    },
    /// Restored with an attempt started before the restart that may still
    /// run on a worker that has not reconnected yet: not dispatched again
    /// until the adoption window ends at `until`.
    Orphaned { runtime: RuntimeId, until: Instant },
}

/// What the core keeps of a finished execution until retention forgets it:
/// enough to answer inspection and refuse a second end, no more. Its
/// terminal state (output, error) left with `Output::Finished`.
#[derive(Debug)]
struct Done {
    function: Arc<str>,
    status: Status,
    attempt: u32,
}

impl Place {
    /// The runtime id the execution holds.
    fn runtime(&self) -> RuntimeId {
        match *self {
            Place::Queued { runtime, .. }
            | Place::Backoff { runtime, .. }
            | Place::Running { runtime, .. }
            | Place::Orphaned { runtime, .. } => runtime,
        }
    }
}

impl Execution {
    fn status(&self) -> Status {
        match &self.place {
            Place::Queued { .. } | Place::Backoff { .. } => Status::Pending,
            // Most likely still running where it was: shown as such until
            // adopted or given up.
            Place::Running { .. } | Place::Orphaned { .. } => Status::Running,
        }
    }

    /// A new execution, `attempts_started` attempts in, all counted lost.
    fn new(submission: Submission, attempts_started: u32, place: Place) -> Execution {
        Execution {
            function: submission.function,
            runtime: submission.runtime,
            payload: submission.payload,
            policy: submission.policy,
            attempt: attempts_started,
            lost: attempts_started,
            taken: attempts_started,
            start_deadline: None,
            place,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Liveness(SessionId),
    ScheduleToStart(ExecutionId),
    Attempt(ExecutionId),
    Backoff(ExecutionId),
    Orphaned(ExecutionId),
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Executions not finished yet.
    executions: FxHashMap<ExecutionId, Execution>,
    /// Finished executions until retention forgets them: kept small, as
    /// there can be millions.
    done: FxHashMap<ExecutionId, Done>,
    /// The runtimes in use, as ids for the queues and worker indexes.
    runtimes: Runtimes,
    /// Executions ready to start, per runtime, in order.
    ready: ReadyQueues,
    workers: WorkerTable,
    deadlines: Deadlines<Timer>,
    /// Terminal executions in the order they finished, for retention.
    finished: VecDeque<(Instant, ExecutionId)>,
    outputs: VecDeque<Output>,
    by_status: [usize; Status::ALL.len()],
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            executions: FxHashMap::default(),
            done: FxHashMap::default(),
            runtimes: Runtimes::default(),
            ready: ReadyQueues::default(),
            workers: WorkerTable::default(),
            deadlines: Deadlines::new(),
            finished: VecDeque::new(),
            outputs: VecDeque::new(),
            by_status: [0; Status::ALL.len()],
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Makes room for `additional` finished executions about to be
    /// restored, so that restoring a long history does not grow the tables
    /// step by step.
    pub fn reserve_finished(&mut self, additional: usize) {
        self.done.reserve(additional);
        self.finished.reserve(additional);
    }

    // ----- inputs -----------------------------------------------------------

    /// A worker opened a stream as `session`, able to run `capabilities`,
    /// holding nothing from before. A worker already connected under the same
    /// id loses its old session (and the work on it) first.
    pub fn worker_connected(
        &mut self,
        now: Instant,
        session: SessionId,
        id: WorkerId,
        pool_size: u32,
        capabilities: Capabilities,
    ) -> Result<(), ConnectError> {
        self.worker_connected_holding(now, session, id, pool_size, capabilities, &[])
    }

    /// A worker opened a stream as `session`, able to run `capabilities`,
    /// still holding the attempts `holding` (execution, attempt) from an
    /// earlier stream, to this scheduler or another. Each is adopted if it is
    /// its execution's latest attempt and runs on no other session: it runs
    /// on here, as it is ([`Output::Adopted`]). Every other one is aborted
    /// ([`AbortReason::NotAdopted`]), its slot counted busy until the worker
    /// reports it. A worker already connected under the same id loses its
    /// old session first, but the attempts this one holds move over.
    pub fn worker_connected_holding(
        &mut self,
        now: Instant,
        session: SessionId,
        id: WorkerId,
        pool_size: u32,
        capabilities: Capabilities,
        holding: &[(ExecutionId, u32)],
    ) -> Result<(), ConnectError> {
        if pool_size == 0 {
            return Err(ConnectError::NoSlots);
        }
        if self.workers.contains(session) {
            return Err(ConnectError::SessionInUse(session));
        }
        let mut moved = Vec::new();
        if let Some(old) = self.workers.session_of(&id) {
            let last_heard = self
                .workers
                .get(old)
                .map_or(now, |worker| worker.last_heard);
            if last_heard + self.config.takeover_after > now {
                return Err(ConnectError::IdInUse {
                    id,
                    session: old,
                    silent_for: now.saturating_duration_since(last_heard),
                });
            }
            moved = self.move_attempts(old, session, holding);
            self.lose(now, old, LossReason::Replaced);
        }
        let runs = match &capabilities {
            Capabilities::Any => Runs::Any,
            Capabilities::Only(names) => Runs::Only(
                names
                    .iter()
                    .map(|name| self.runtimes.acquire(name))
                    .collect(),
            ),
        };
        let liveness_check = now + self.config.heartbeat_timeout;
        self.deadlines
            .insert(liveness_check, Timer::Liveness(session));
        self.workers.insert(
            session,
            Worker {
                id,
                capabilities,
                runs,
                pool_size,
                capacity: pool_size.saturating_add(self.config.prefetch),
                in_flight: moved,
                draining: false,
                connected_at: now,
                last_heard: now,
                liveness_check,
                reported_running: 0,
                timeouts_in_a_row: 0,
                quarantined: false,
            },
        );
        self.adopt(now, session, holding);
        self.pump(now);
        Ok(())
    }

    /// The worker stops taking work; what it has runs to the end. False if the
    /// session is unknown.
    pub fn worker_draining(&mut self, now: Instant, session: SessionId) -> bool {
        self.workers
            .update(session, |worker| {
                worker.draining = true;
                worker.last_heard = now;
            })
            .is_some()
    }

    /// The worker's stream ended. False if the session was already gone.
    pub fn worker_disconnected(&mut self, now: Instant, session: SessionId) -> bool {
        let known = self.workers.contains(session);
        self.lose(now, session, LossReason::Disconnected);
        self.pump(now);
        known
    }

    /// A heartbeat: the worker is alive and says it runs `running` tasks.
    pub fn heartbeat(&mut self, now: Instant, session: SessionId, running: u32) -> bool {
        self.workers
            .update(session, |worker| {
                worker.last_heard = now;
                worker.reported_running = running;
            })
            .is_some()
    }

    /// Accepts an execution, or refuses it without changing anything.
    pub fn submit(&mut self, now: Instant, submission: Submission) -> Result<(), SubmitError> {
        self.admit(&submission)?;
        if self.by_status[Status::Pending as usize] >= self.config.queue_limit {
            return Err(SubmitError::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        self.enqueue(now, submission, 0);
        self.pump(now);
        Ok(())
    }

    /// A worker reported the end of an attempt.
    pub fn result(
        &mut self,
        now: Instant,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
        outcome: Outcome,
    ) -> ResultDisposition {
        if !self.workers.release(now, session, execution, attempt) {
            return ResultDisposition::Stale;
        }
        let current = self.executions.get(&execution).is_some_and(|exec| {
            exec.attempt == attempt
                && matches!(exec.place, Place::Running { session: s, .. } if s == session)
        });
        let disposition = if current {
            self.workers
                .update(session, |worker| worker.timeouts_in_a_row = 0);
            self.finish(now, execution, outcome.into());
            ResultDisposition::Accepted
        } else {
            ResultDisposition::Released
        };
        self.lift_quarantine_if_answered(session);
        self.pump(now);
        disposition
    }

    /// Cancels an execution: a pending one ends at once; a running one ends at
    /// once too, and its worker is told to abort. Returns the status it had.
    pub fn cancel(&mut self, now: Instant, execution: ExecutionId) -> Result<Status, CancelError> {
        self.stop(now, execution, Terminal::Cancelled)
    }

    /// Ends an execution that has not finished as FAILED with `error`, as a
    /// cancel does (a running attempt is aborted on its worker): for the
    /// caller's own reasons, such as an acceptance it could not make durable.
    pub fn fail(
        &mut self,
        now: Instant,
        execution: ExecutionId,
        error: String,
    ) -> Result<Status, CancelError> {
        self.stop(now, execution, failed(error))
    }

    fn stop(
        &mut self,
        now: Instant,
        execution: ExecutionId,
        terminal: Terminal,
    ) -> Result<Status, CancelError> {
        if let Some(done) = self.done.get(&execution) {
            return Err(CancelError::AlreadyFinished {
                id: execution,
                status: done.status,
            });
        }
        let exec = self
            .executions
            .get(&execution)
            .ok_or(CancelError::NotFound(execution))?;
        let status = exec.status();
        match exec.place {
            Place::Running { session, .. } => self.outputs.push_back(Output::Abort {
                session,
                execution,
                attempt: exec.attempt,
                reason: AbortReason::Ended,
            }),
            Place::Queued { .. } | Place::Backoff { .. } | Place::Orphaned { .. } => {}
        }
        self.finish(now, execution, terminal);
        Ok(status)
    }

    /// Acts on every deadline that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.deadlines.pop_due(now) {
            match timer {
                Timer::Liveness(session) => self.check_liveness(now, session),
                Timer::ScheduleToStart(id) => self.expire_start(now, id),
                Timer::Attempt(id) => self.expire_attempt(now, id, at),
                Timer::Backoff(id) => {
                    let backing_off = self.executions.get(&id).and_then(|exec| match exec.place {
                        Place::Backoff {
                            runtime,
                            until,
                            avoid,
                        } if until == at => Some((runtime, avoid)),
                        _ => None,
                    });
                    if let Some((runtime, avoid)) = backing_off {
                        // It waited its turn once already.
                        self.queue_front(id, runtime, avoid);
                    }
                }
                Timer::Orphaned(id) => self.expire_orphan(now, id, at),
            }
        }
        self.evict(now);
        self.pump(now);
    }

    // ----- outputs ----------------------------------------------------------

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retention = self
            .finished
            .front()
            .map(|&(at, _)| at + self.config.retention.max_age);
        match (self.deadlines.next(), retention) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- inspection -------------------------------------------------------

    pub fn execution(&self, id: ExecutionId) -> Option<ExecutionView<'_>> {
        match self.executions.get(&id) {
            Some(exec) => Some(view(id, exec)),
            None => self.done.get(&id).map(|done| done_view(id, done)),
        }
    }

    /// Every execution held, in no particular order: sort before showing.
    pub fn executions(&self) -> impl Iterator<Item = ExecutionView<'_>> {
        let live = self.executions.iter().map(|(&id, exec)| view(id, exec));
        live.chain(self.done.iter().map(|(&id, done)| done_view(id, done)))
    }

    /// How many executions wait in each runtime's ready queue, by runtime
    /// name; runtimes with none waiting are left out. Executions backing off
    /// before a retry are not in a queue yet (they count as pending in
    /// [`stats`](Self::stats)). Read from counters, not by scanning.
    pub fn queued_by_runtime(&self) -> impl Iterator<Item = (&str, usize)> {
        self.runtimes
            .by_name()
            .map(|(name, runtime)| (name, self.ready.len(runtime)))
            .filter(|&(_, queued)| queued > 0)
    }

    /// Connected workers, by session.
    pub fn workers(&self) -> impl Iterator<Item = WorkerView<'_>> {
        self.workers.iter().map(|(session, worker)| WorkerView {
            session,
            id: &worker.id,
            capabilities: &worker.capabilities,
            pool_size: worker.pool_size,
            in_flight: worker.in_flight.len() as u32,
            reported_running: worker.reported_running,
            draining: worker.draining,
            quarantined: worker.quarantined,
            timeouts_in_a_row: worker.timeouts_in_a_row,
            connected_at: worker.connected_at,
            last_heard: worker.last_heard,
        })
    }

    /// Executions queued on the session, as (execution, attempt).
    pub fn in_flight(&self, session: SessionId) -> &[(ExecutionId, u32)] {
        self.workers
            .get(session)
            .map_or(&[], |worker| &worker.in_flight)
    }

    pub fn stats(&self) -> Stats {
        let (mut capacity, mut in_flight) = (0, 0);
        for (_, worker) in self.workers.iter() {
            capacity += u64::from(worker.pool_size);
            in_flight += worker.in_flight.len() as u64;
        }
        let count = |status: Status| self.by_status[status as usize];
        Stats {
            workers: self.workers.len(),
            quarantined: self.workers.iter().filter(|(_, w)| w.quarantined).count(),
            capacity,
            in_flight,
            queue_limit: self.config.queue_limit,
            pending: count(Status::Pending),
            running: count(Status::Running),
            completed: count(Status::Completed),
            failed: count(Status::Failed),
            timed_out: count(Status::TimedOut),
            cancelled: count(Status::Cancelled),
        }
    }

    /// Number of armed deadlines (for tests of bounded memory).
    pub fn armed_deadlines(&self) -> usize {
        self.deadlines.len()
    }

    // ----- internals --------------------------------------------------------

    fn admit(&self, submission: &Submission) -> Result<(), SubmitError> {
        if submission.policy.max_attempts == 0 {
            return Err(SubmitError::InvalidPolicy(
                "max_attempts must be at least 1",
            ));
        }
        if submission.policy.timeout.is_zero() {
            return Err(SubmitError::InvalidPolicy(
                "timeout must be greater than zero",
            ));
        }
        if self.executions.contains_key(&submission.id) || self.done.contains_key(&submission.id) {
            return Err(SubmitError::Duplicate(submission.id));
        }
        Ok(())
    }

    fn enqueue(&mut self, now: Instant, submission: Submission, attempts_started: u32) {
        let id = submission.id;
        let start_deadline = match submission.policy.schedule_to_start {
            Some(limit) if attempts_started == 0 => Some(now + limit),
            _ => None,
        };
        if let Some(at) = start_deadline {
            self.deadlines.insert(at, Timer::ScheduleToStart(id));
        }
        let runtime = self.runtimes.acquire(&submission.runtime);
        let ticket = self.ready.push_back(runtime, id);
        let place = Place::Queued {
            runtime,
            ticket,
            avoid: None,
        };
        let mut execution = Execution::new(submission, attempts_started, place);
        execution.start_deadline = start_deadline;
        self.executions.insert(id, execution);
        self.by_status[Status::Pending as usize] += 1;
    }

    /// Puts a pending execution back in line ahead of everything waiting,
    /// whatever its runtime; its retry avoids `avoid`.
    fn queue_front(&mut self, id: ExecutionId, runtime: RuntimeId, avoid: Option<SessionId>) {
        if let Some(exec) = self.executions.get_mut(&id) {
            let ticket = self.ready.push_front(runtime, id);
            exec.place = Place::Queued {
                runtime,
                ticket,
                avoid,
            };
        }
    }

    /// Dispatches while some ready execution has a free slot on a worker
    /// that runs it.
    fn pump(&mut self, now: Instant) {
        while let Some((id, session)) = self.next_dispatch() {
            self.dispatch(now, id, session);
        }
    }

    /// What to start next, and where: among the runtimes whose queue head a
    /// worker could take now, the head that became ready first, to the
    /// least-loaded worker that runs it (one its last attempt did not time
    /// out on, if another has room). Looks only at queue heads (if a
    /// runtime's head cannot start, nothing behind it can: they all need the
    /// same workers), so a decision costs O(R log W) for R runtimes waiting.
    fn next_dispatch(&self) -> Option<(ExecutionId, SessionId)> {
        if !self.workers.has_free_slot() {
            return None;
        }
        let mut next: Option<(Ticket, ExecutionId, SessionId)> = None;
        for (runtime, ticket, id) in self.ready.heads() {
            if next.is_some_and(|(first, _, _)| first < ticket) {
                continue;
            }
            let avoid = self.executions.get(&id).and_then(|exec| match exec.place {
                Place::Queued { avoid, .. } => avoid,
                _ => None,
            });
            if let Some(session) = self.workers.least_loaded_for(runtime, avoid) {
                next = Some((ticket, id, session));
            }
        }
        next.map(|(_, id, session)| (id, session))
    }

    /// Starts the next attempt of the queued execution `id` on `session`.
    fn dispatch(&mut self, now: Instant, id: ExecutionId, session: SessionId) {
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        let Place::Queued {
            runtime, ticket, ..
        } = exec.place
        else {
            return;
        };
        self.ready.remove(runtime, ticket);
        exec.attempt = exec.attempt.max(exec.taken) + 1;
        exec.taken = exec.attempt;
        self.by_status[Status::Pending as usize] -= 1;
        self.by_status[Status::Running as usize] += 1;
        self.outputs.push_back(Output::Dispatch(Dispatch {
            session,
            execution: id,
            attempt: exec.attempt,
            function: exec.function.clone(),
            payload: exec.payload.clone(),
            timeout: exec.policy.timeout,
        }));
        self.run_on(now, id, runtime, session);
    }

    /// The execution's current attempt runs on `session` from `now`: its
    /// start deadline goes, its attempt deadline (timeout plus grace) is
    /// armed, and the session holds the attempt.
    fn run_on(&mut self, now: Instant, id: ExecutionId, runtime: RuntimeId, session: SessionId) {
        let grace = self.config.timeout_grace;
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        if let Some(at) = exec.start_deadline.take() {
            self.deadlines.remove(at, Timer::ScheduleToStart(id));
        }
        let deadline = now + exec.policy.timeout + grace;
        exec.place = Place::Running {
            runtime,
            session,
            deadline,
        };
        self.deadlines.insert(deadline, Timer::Attempt(id));
        let attempt = exec.attempt;
        self.workers
            .update(session, |worker| worker.in_flight.push((id, attempt)));
    }

    /// Moves an execution to its terminal state, disarming whatever it waited on.
    fn finish(&mut self, now: Instant, id: ExecutionId, terminal: Terminal) {
        let Some(exec) = self.executions.remove(&id) else {
            return;
        };
        let previous = exec.status();
        match exec.place {
            Place::Queued {
                runtime, ticket, ..
            } => self.ready.remove(runtime, ticket),
            Place::Backoff { until, .. } => self.deadlines.remove(until, Timer::Backoff(id)),
            Place::Running { deadline, .. } => self.deadlines.remove(deadline, Timer::Attempt(id)),
            Place::Orphaned { until, .. } => self.deadlines.remove(until, Timer::Orphaned(id)),
        }
        if let Some(at) = exec.start_deadline {
            self.deadlines.remove(at, Timer::ScheduleToStart(id));
        }
        self.runtimes.release(exec.place.runtime());
        self.by_status[previous as usize] -= 1;
        self.by_status[terminal.status() as usize] += 1;
        let done = Done {
            function: exec.function,
            status: terminal.status(),
            attempt: exec.attempt,
        };
        self.done.insert(id, done);
        self.outputs.push_back(Output::Finished {
            execution: id,
            terminal,
        });
        self.retain(now, now, id);
    }

    /// Ends a session and puts its unfinished attempts back in line.
    fn lose(&mut self, now: Instant, session: SessionId, reason: LossReason) {
        let Some(worker) = self.workers.remove(session) else {
            return;
        };
        if let Runs::Only(runtimes) = &worker.runs {
            for &runtime in runtimes {
                self.runtimes.release(runtime);
            }
        }
        self.deadlines
            .remove(worker.liveness_check, Timer::Liveness(session));
        self.outputs.push_back(Output::WorkerLost {
            session,
            worker: worker.id.clone(),
            reason,
        });
        for (id, attempt) in worker.in_flight {
            let Some(exec) = self.executions.get_mut(&id) else {
                continue;
            };
            let Place::Running {
                session: s,
                deadline,
                ..
            } = exec.place
            else {
                continue;
            };
            if s != session || exec.attempt != attempt {
                continue;
            }
            self.deadlines.remove(deadline, Timer::Attempt(id));
            self.requeue_lost(now, id, attempt, None, |lost| {
                format!(
                    "worker lost {lost} times (last: {}, {session}: {reason})",
                    worker.id
                )
            });
        }
    }

    /// The running (or orphaned) attempt `attempt` of `id` will never
    /// report: put the execution back in line after a backoff (its retry
    /// avoiding `avoid`), or fail it with `why(lost)` once it has used up its
    /// attempts. The attempt's deadline must already be disarmed.
    fn requeue_lost(
        &mut self,
        now: Instant,
        id: ExecutionId,
        attempt: u32,
        avoid: Option<SessionId>,
        why: impl FnOnce(u32) -> String,
    ) {
        let Some(exec) = self.executions.get_mut(&id) else {
            return;
        };
        if exec.status() != Status::Running {
            return;
        }
        let runtime = exec.place.runtime();
        exec.lost += 1;
        // Out of attempts, or of attempt numbers (some were taken by
        // attempts whose records were lost).
        if exec.lost >= exec.policy.max_attempts || exec.taken >= exec.policy.max_attempts {
            let error = why(exec.lost);
            self.finish(now, id, failed(error));
            return;
        }
        self.by_status[Status::Running as usize] -= 1;
        self.by_status[Status::Pending as usize] += 1;
        let retry_at = now + self.config.retry_backoff.delay(exec.lost);
        if retry_at <= now {
            self.queue_front(id, runtime, avoid);
        } else {
            exec.place = Place::Backoff {
                runtime,
                until: retry_at,
                avoid,
            };
            self.deadlines.insert(retry_at, Timer::Backoff(id));
        }
        self.outputs.push_back(Output::Requeued {
            execution: id,
            lost_attempt: attempt,
            retry_at,
        });
    }

    /// A quarantined session that has answered for every attempt it held
    /// takes work again.
    fn lift_quarantine_if_answered(&mut self, session: SessionId) {
        let Some(worker) = self.workers.get(session) else {
            return;
        };
        if !worker.quarantined || !worker.in_flight.is_empty() {
            return;
        }
        let id = worker.id.clone();
        self.workers.update(session, |worker| {
            worker.quarantined = false;
            worker.timeouts_in_a_row = 0;
        });
        self.outputs.push_back(Output::QuarantineLifted {
            session,
            worker: id,
        });
    }
}

fn failed(error: String) -> Terminal {
    Terminal::Failed {
        error,
        output: Bytes::new(),
    }
}

fn view(id: ExecutionId, exec: &Execution) -> ExecutionView<'_> {
    ExecutionView {
        id,
        function: &exec.function,
        runtime: Some(&exec.runtime),
        status: exec.status(),
        attempt: exec.attempt,
        session: match exec.place {
            Place::Running { session, .. } => Some(session),
            _ => None,
        },
    }
}

fn done_view(id: ExecutionId, done: &Done) -> ExecutionView<'_> {
    ExecutionView {
        id,
        function: &done.function,
        runtime: None,
        status: done.status,
        attempt: done.attempt,
        session: None,
    }
}

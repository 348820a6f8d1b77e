//! The connected workers and the index that picks the least-loaded one.
//!
//! A worker's load is what the scheduler has in flight on it: that count is
//! authoritative (heartbeats only report what the worker sees, for inspection).
//! Workers with a free slot sit in an ordered set keyed by (free slots, descending;
//! session, ascending), so choosing a worker is one lookup and every change of load
//! is O(log W). Ties go to the older session, deterministically.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use crate::ids::{ExecutionId, SessionId, WorkerId};
use crate::time::Instant;

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) id: WorkerId,
    pub(crate) pool_size: u32,
    /// Pool size plus the scheduler's prefetch allowance.
    pub(crate) capacity: u32,
    /// Attempts dispatched to this session and not yet answered. An attempt stays
    /// here after its execution was cancelled or timed out, until the worker
    /// reports it: the slot really is busy until then.
    pub(crate) in_flight: Vec<(ExecutionId, u32)>,
    pub(crate) draining: bool,
    pub(crate) connected_at: Instant,
    pub(crate) last_heard: Instant,
    /// When the liveness timer for this session is armed to fire.
    pub(crate) liveness_check: Instant,
    pub(crate) reported_running: u32,
    /// Attempts in a row the scheduler timed out on this session.
    pub(crate) timeouts_in_a_row: u32,
    /// Takes no new work until it has answered for every attempt it holds.
    pub(crate) quarantined: bool,
}

impl Worker {
    pub(crate) fn free(&self) -> u32 {
        if self.draining || self.quarantined {
            0
        } else {
            self.capacity.saturating_sub(self.in_flight.len() as u32)
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct WorkerTable {
    workers: BTreeMap<SessionId, Worker>,
    by_id: FxHashMap<WorkerId, SessionId>,
    with_free_slots: BTreeSet<(Reverse<u32>, SessionId)>,
}

impl WorkerTable {
    pub(crate) fn insert(&mut self, session: SessionId, worker: Worker) {
        self.by_id.insert(worker.id.clone(), session);
        self.index(session, worker.free());
        self.workers.insert(session, worker);
    }

    pub(crate) fn remove(&mut self, session: SessionId) -> Option<Worker> {
        let worker = self.workers.remove(&session)?;
        self.unindex(session, worker.free());
        if self.by_id.get(&worker.id) == Some(&session) {
            self.by_id.remove(&worker.id);
        }
        Some(worker)
    }

    pub(crate) fn get(&self, session: SessionId) -> Option<&Worker> {
        self.workers.get(&session)
    }

    pub(crate) fn contains(&self, session: SessionId) -> bool {
        self.workers.contains_key(&session)
    }

    pub(crate) fn session_of(&self, id: &WorkerId) -> Option<SessionId> {
        self.by_id.get(id).copied()
    }

    /// The worker with the most free slots, if any has one.
    pub(crate) fn least_loaded(&self) -> Option<SessionId> {
        self.with_free_slots.first().map(|&(_, session)| session)
    }

    /// The least-loaded worker other than `avoid`, or `avoid` itself when no
    /// other has a free slot.
    pub(crate) fn least_loaded_avoiding(&self, avoid: Option<SessionId>) -> Option<SessionId> {
        let mut best = self.with_free_slots.iter().map(|&(_, session)| session);
        let first = best.next()?;
        if Some(first) != avoid {
            return Some(first);
        }
        Some(best.next().unwrap_or(first))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SessionId, &Worker)> {
        self.workers
            .iter()
            .map(|(&session, worker)| (session, worker))
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Applies `change` to a worker and keeps the free-slot index in step.
    pub(crate) fn update<R>(
        &mut self,
        session: SessionId,
        change: impl FnOnce(&mut Worker) -> R,
    ) -> Option<R> {
        let worker = self.workers.get_mut(&session)?;
        let before = worker.free();
        let result = change(worker);
        let after = worker.free();
        if before != after {
            self.unindex(session, before);
            self.index(session, after);
        }
        Some(result)
    }

    /// Takes `(execution, attempt)` off the session's in-flight list; false if it
    /// was not there (a duplicate, stale or misrouted report). Anything from a
    /// live session counts as hearing from it.
    pub(crate) fn release(
        &mut self,
        now: Instant,
        session: SessionId,
        execution: ExecutionId,
        attempt: u32,
    ) -> bool {
        self.update(session, |worker| {
            worker.last_heard = now;
            let found = worker
                .in_flight
                .iter()
                .position(|&entry| entry == (execution, attempt));
            found.map(|index| worker.in_flight.swap_remove(index))
        })
        .flatten()
        .is_some()
    }

    fn index(&mut self, session: SessionId, free: u32) {
        if free > 0 {
            self.with_free_slots.insert((Reverse(free), session));
        }
    }

    fn unindex(&mut self, session: SessionId, free: u32) {
        if free > 0 {
            self.with_free_slots.remove(&(Reverse(free), session));
        }
    }
}

//! The connected workers and the indexes that pick the least-loaded one able
//! to run a given runtime.
//!
//! A worker's load is what the scheduler has in flight on it: that count is
//! authoritative (heartbeats only report what the worker sees, for inspection).
//! Workers with a free slot sit in ordered sets keyed by (free slots, descending;
//! session, ascending): one set per runtime holding the workers that announced
//! it (indexed by [`RuntimeId`]), and one set of workers that announced
//! nothing and run everything. A worker lives in as many sets as it runs
//! runtimes (a handful), so choosing a worker for a runtime is two lookups and
//! every change of load is O(k log W). Ties go to the older session,
//! deterministically.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::runtimes::RuntimeId;
use crate::ids::{ExecutionId, SessionId, WorkerId};
use crate::time::Instant;

/// The runtimes a worker runs, as it announced them when it connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capabilities {
    /// The worker announced nothing (a seed worker): it runs every runtime.
    Any,
    /// The worker runs these runtimes and no other.
    Only(BTreeSet<Arc<str>>),
}

impl Capabilities {
    /// A worker that runs exactly `runtimes`.
    pub fn only<R: Into<Arc<str>>>(runtimes: impl IntoIterator<Item = R>) -> Capabilities {
        Capabilities::Only(runtimes.into_iter().map(Into::into).collect())
    }

    pub fn runs(&self, runtime: &str) -> bool {
        match self {
            Capabilities::Any => true,
            Capabilities::Only(runtimes) => runtimes.contains(runtime),
        }
    }
}

/// What a worker runs, with the runtime names resolved to the ids the
/// indexes use. The worker holds each id until it leaves.
#[derive(Debug)]
pub(crate) enum Runs {
    Any,
    Only(Vec<RuntimeId>),
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) id: WorkerId,
    /// As announced, for inspection. Fixed for the session: a worker that
    /// changes runtimes reconnects.
    pub(crate) capabilities: Capabilities,
    pub(crate) runs: Runs,
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
    free: FreeSlots,
}

impl WorkerTable {
    pub(crate) fn insert(&mut self, session: SessionId, worker: Worker) {
        self.by_id.insert(worker.id.clone(), session);
        self.free.join(session, &worker.runs, worker.free());
        self.workers.insert(session, worker);
    }

    pub(crate) fn remove(&mut self, session: SessionId) -> Option<Worker> {
        let worker = self.workers.remove(&session)?;
        self.free.leave(session, &worker.runs, worker.free());
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

    /// Whether any worker at all has a free slot: when none has, nothing can
    /// be dispatched whatever its runtime.
    pub(crate) fn has_free_slot(&self) -> bool {
        self.free.with_free > 0
    }

    /// The least-loaded worker that runs `runtime`, other than `avoid`; or
    /// `avoid` itself when no other worker that runs it has a free slot.
    pub(crate) fn least_loaded_for(
        &self,
        runtime: RuntimeId,
        avoid: Option<SessionId>,
    ) -> Option<SessionId> {
        self.free.least_loaded_for(runtime, avoid)
    }

    /// Connected workers that run `runtime`, busy or not.
    pub(crate) fn running(&self, runtime: RuntimeId) -> usize {
        self.free.connected_for(runtime)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SessionId, &Worker)> {
        self.workers
            .iter()
            .map(|(&session, worker)| (session, worker))
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Applies `change` to a worker and keeps the free-slot indexes in step.
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
            self.free.reindex(session, &worker.runs, before, after);
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
}

type Load = (Reverse<u32>, SessionId);

/// Workers with a free slot, most free slots first, ties to the older session.
/// Workers with none are left out, so the first entry is always a candidate.
#[derive(Debug, Default)]
struct FreeIndex(BTreeSet<Load>);

impl FreeIndex {
    fn insert(&mut self, session: SessionId, free: u32) {
        if free > 0 {
            self.0.insert((Reverse(free), session));
        }
    }

    fn remove(&mut self, session: SessionId, free: u32) {
        if free > 0 {
            self.0.remove(&(Reverse(free), session));
        }
    }

    fn first(&self) -> Option<Load> {
        self.0.first().copied()
    }

    /// The best entry that is not `avoid`: one of the first two.
    fn first_other(&self, avoid: Option<SessionId>) -> Option<Load> {
        let first = self.first()?;
        if Some(first.1) != avoid {
            return Some(first);
        }
        self.0.iter().nth(1).copied()
    }
}

/// The workers that announced one runtime.
#[derive(Debug, Default)]
struct RuntimeWorkers {
    /// How many are connected, busy or not.
    connected: usize,
    free: FreeIndex,
}

/// The free-slot indexes, per runtime and for workers that run everything.
/// A worker is in `any` or in the entry of every runtime it announced, never
/// both, so the candidates for a runtime are the union of two disjoint sets.
#[derive(Debug, Default)]
struct FreeSlots {
    any: FreeIndex,
    any_connected: usize,
    /// By runtime id. The entry of an id no worker holds is empty.
    by_runtime: Vec<RuntimeWorkers>,
    /// Workers with at least one free slot, whatever they run.
    with_free: usize,
}

impl FreeSlots {
    fn join(&mut self, session: SessionId, runs: &Runs, free: u32) {
        match runs {
            Runs::Any => self.any_connected += 1,
            Runs::Only(runtimes) => {
                for &runtime in runtimes {
                    if self.by_runtime.len() <= runtime.index() {
                        self.by_runtime
                            .resize_with(runtime.index() + 1, RuntimeWorkers::default);
                    }
                    self.by_runtime[runtime.index()].connected += 1;
                }
            }
        }
        self.reindex(session, runs, 0, free);
    }

    fn leave(&mut self, session: SessionId, runs: &Runs, free: u32) {
        self.reindex(session, runs, free, 0);
        match runs {
            Runs::Any => self.any_connected -= 1,
            Runs::Only(runtimes) => {
                for &runtime in runtimes {
                    self.by_runtime[runtime.index()].connected -= 1;
                }
            }
        }
    }

    /// Moves a worker whose free slots went from `before` to `after` in every
    /// index it belongs to.
    fn reindex(&mut self, session: SessionId, runs: &Runs, before: u32, after: u32) {
        let move_in = |index: &mut FreeIndex| {
            index.remove(session, before);
            index.insert(session, after);
        };
        match runs {
            Runs::Any => move_in(&mut self.any),
            Runs::Only(runtimes) => {
                for &runtime in runtimes {
                    move_in(&mut self.by_runtime[runtime.index()].free);
                }
            }
        }
        match (before > 0, after > 0) {
            (false, true) => self.with_free += 1,
            (true, false) => self.with_free -= 1,
            _ => {}
        }
    }

    fn least_loaded_for(&self, runtime: RuntimeId, avoid: Option<SessionId>) -> Option<SessionId> {
        let announced = self
            .by_runtime
            .get(runtime.index())
            .map(|entry| &entry.free);
        let best = |pick: &dyn Fn(&FreeIndex) -> Option<Load>| {
            let from_any = pick(&self.any);
            let from_announced = announced.and_then(pick);
            from_any.into_iter().chain(from_announced).min()
        };
        best(&|index| index.first_other(avoid))
            // Nobody else has room: `avoid` is then the only candidate left.
            .or_else(|| avoid.and_then(|_| best(&FreeIndex::first)))
            .map(|(_, session)| session)
    }

    fn connected_for(&self, runtime: RuntimeId) -> usize {
        let announced = self
            .by_runtime
            .get(runtime.index())
            .map_or(0, |entry| entry.connected);
        self.any_connected + announced
    }
}

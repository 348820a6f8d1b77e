//! An ordered set of deadlines with exact removal.
//!
//! Both state machines keep every pending deadline here, keyed by what it is for.
//! Removal is exact (not lazy), so memory stays proportional to live deadlines no
//! matter how long the timeouts are, and the earliest deadline is one lookup away.

use std::collections::BTreeSet;

use crate::time::Instant;

#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    set: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Deadlines<K> {
    pub(crate) fn new() -> Self {
        Deadlines {
            set: BTreeSet::new(),
        }
    }

    pub(crate) fn insert(&mut self, at: Instant, key: K) {
        self.set.insert((at, key));
    }

    pub(crate) fn remove(&mut self, at: Instant, key: K) {
        self.set.remove(&(at, key));
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Takes the earliest deadline if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

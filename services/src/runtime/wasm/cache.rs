//! The compiled modules a runtime keeps, by code: a function defined again
//! (after a reconnect the scheduler defines everything anew, under the same
//! or a new id) reuses its compiled module instead of compiling it again.
//!
//! Bounded, least recently used out. Keyed by a hash of the code, and the
//! code itself is kept and compared on a hit, so two modules whose hashes
//! collide can never be mistaken for each other.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

#[derive(Debug)]
pub(super) struct ModuleCache<V> {
    capacity: usize,
    entries: HashMap<u64, Entry<V>>,
    /// Advances on every use; an entry's `used` tells how recently it was.
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    code: Bytes,
    value: V,
    used: u64,
}

impl<V: Clone> ModuleCache<V> {
    /// A cache of at most `capacity` modules (0: keeps none).
    pub(super) fn new(capacity: usize) -> ModuleCache<V> {
        ModuleCache {
            capacity,
            entries: HashMap::new(),
            clock: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// What was kept for exactly `code`.
    pub(super) fn get(&mut self, code: &[u8]) -> Option<V> {
        self.clock += 1;
        let entry = self.entries.get_mut(&key(code))?;
        if entry.code != code {
            return None;
        }
        entry.used = self.clock;
        Some(entry.value.clone())
    }

    /// Keeps `value` for `code`, dropping the least recently used module if
    /// the cache is full.
    pub(super) fn insert(&mut self, code: Bytes, value: V) {
        if self.capacity == 0 {
            return;
        }
        self.clock += 1;
        let key = key(&code);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let entry = Entry {
            code,
            value,
            used: self.clock,
        };
        self.entries.insert(key, entry);
    }
}

fn key(code: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    code.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_within_capacity() {
        let mut cache = ModuleCache::new(2);
        cache.insert(Bytes::from_static(b"a"), 1);
        cache.insert(Bytes::from_static(b"b"), 2);
        assert_eq!(cache.get(b"a"), Some(1));
        cache.insert(Bytes::from_static(b"c"), 3);
        // `b` was the least recently used.
        assert_eq!(cache.get(b"b"), None);
        assert_eq!(cache.get(b"a"), Some(1));
        assert_eq!(cache.get(b"c"), Some(3));
        assert_eq!(cache.len(), 2);
        cache.insert(Bytes::from_static(b"c"), 4);
        assert_eq!((cache.get(b"c"), cache.len()), (Some(4), 2));
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let mut cache = ModuleCache::new(0);
        cache.insert(Bytes::from_static(b"a"), 1);
        assert_eq!(cache.get(b"a"), None);
    }
}

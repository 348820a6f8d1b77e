//! Runtime names as small ids.
//!
//! The per-runtime ready queues and worker indexes are consulted on every
//! dispatch and every change of load. Indexing them by a small id instead of
//! searching them by name leaves one name lookup per submission (and one per
//! runtime a connecting worker announces).
//!
//! An id is held by every unfinished execution of its runtime and by every
//! connected worker that announced it. When the last holder lets go, the name
//! is forgotten and the id is free for the next new name, so memory follows
//! the runtimes in use rather than every name ever seen; whatever is indexed
//! by a free id is empty by then (nothing waits in its queue, no worker is in
//! its index).

use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RuntimeId(u32);

impl RuntimeId {
    /// Position in vectors indexed by runtime.
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) const fn from_index(index: usize) -> RuntimeId {
        RuntimeId(index as u32)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Runtimes {
    ids: BTreeMap<Arc<str>, RuntimeId>,
    /// By id.
    slots: Vec<Slot>,
    /// Free ids, reused last freed first (deterministically).
    free: Vec<RuntimeId>,
}

#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    /// Zero for a free id.
    holders: usize,
}

impl Runtimes {
    /// The id of `name`, held once more until [`release`](Self::release).
    pub(crate) fn acquire(&mut self, name: &Arc<str>) -> RuntimeId {
        let id = match self.ids.get(&**name) {
            Some(&id) => id,
            None => {
                let slot = Slot {
                    name: name.clone(),
                    holders: 0,
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.slots[id.index()] = slot;
                        id
                    }
                    None => {
                        self.slots.push(slot);
                        RuntimeId::from_index(self.slots.len() - 1)
                    }
                };
                self.ids.insert(name.clone(), id);
                id
            }
        };
        self.slots[id.index()].holders += 1;
        id
    }

    /// Lets go of one hold on `id`; the last one frees it.
    pub(crate) fn release(&mut self, id: RuntimeId) {
        let slot = &mut self.slots[id.index()];
        slot.holders -= 1;
        if slot.holders == 0 {
            self.ids.remove(&slot.name);
            self.free.push(id);
        }
    }

    /// Every runtime in use, by name, with its id.
    pub(crate) fn by_name(&self) -> impl Iterator<Item = (&str, RuntimeId)> {
        self.ids.iter().map(|(name, &id)| (&**name, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_lives_while_held_and_is_reused_once_free() {
        let (wasm, python): (Arc<str>, Arc<str>) = ("wasm".into(), "python".into());
        let mut runtimes = Runtimes::default();
        let first = runtimes.acquire(&wasm);
        assert_eq!(runtimes.acquire(&wasm), first);
        runtimes.release(first);
        assert_eq!(runtimes.by_name().collect::<Vec<_>>(), [("wasm", first)]);
        runtimes.release(first);
        assert!(runtimes.by_name().next().is_none(), "forgotten");
        assert_eq!(runtimes.acquire(&python), first, "reused");
    }
}

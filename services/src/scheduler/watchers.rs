//! Who follows which execution, with limits.
//!
//! A watch is the sending half of a channel whose receiver is a client's
//! stream. Clients go away without a word (a `?wait=1ms` that times out, a
//! cancelled RPC), so a sender whose receiver is gone is dropped as soon as
//! anything looks at its execution: when the stream's end is reported (the
//! API's stream guard sends `Command::Unwatched`), when another watch is
//! added to the same execution, and, once the total reaches its limit, in
//! one sweep over all of them before a new watch is refused. So dead watches
//! cannot pile up, and live ones are bounded per execution and in total.

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tonic::Status;

use taskforge_core::ExecutionId;
use taskforge_proto::common::ExecutionInfo;

pub(crate) type Watcher = mpsc::UnboundedSender<ExecutionInfo>;

#[derive(Debug)]
pub(crate) struct Watchers {
    by_execution: FxHashMap<ExecutionId, Vec<Watcher>>,
    total: usize,
    per_execution_limit: usize,
    total_limit: usize,
}

impl Watchers {
    pub(crate) fn new(per_execution_limit: usize, total_limit: usize) -> Watchers {
        Watchers {
            by_execution: FxHashMap::default(),
            total: 0,
            per_execution_limit,
            total_limit,
        }
    }

    /// Adds a watch of `id`, or refuses it (RESOURCE_EXHAUSTED) beyond the
    /// limits counted after dropping the dead.
    pub(crate) fn add(&mut self, id: ExecutionId, watcher: Watcher) -> Result<(), Status> {
        self.sweep(id);
        if self.total >= self.total_limit {
            self.sweep_all();
        }
        if self.total >= self.total_limit {
            return Err(Status::resource_exhausted(format!(
                "{} watches are open, the most the scheduler keeps; \
                 poll GET /jobs/{{id}} instead, or retry later",
                self.total
            )));
        }
        let watchers = self.by_execution.entry(id).or_default();
        if watchers.len() >= self.per_execution_limit {
            return Err(Status::resource_exhausted(format!(
                "execution {id} already has {} watches, the most one execution may have",
                watchers.len()
            )));
        }
        watchers.push(watcher);
        self.total += 1;
        Ok(())
    }

    pub(crate) fn is_watched(&self, id: ExecutionId) -> bool {
        self.by_execution.contains_key(&id)
    }

    /// Sends `info` to every watch of `id`; `last` ends them all (a terminal
    /// state), otherwise those whose client is gone are dropped.
    pub(crate) fn send(&mut self, id: ExecutionId, info: &ExecutionInfo, last: bool) {
        if last {
            for watcher in self.remove(id) {
                let _ = watcher.send(info.clone());
            }
            return;
        }
        let Some(watchers) = self.by_execution.get_mut(&id) else {
            return;
        };
        let before = watchers.len();
        watchers.retain(|watcher| watcher.send(info.clone()).is_ok());
        self.total -= before - watchers.len();
        if watchers.is_empty() {
            self.by_execution.remove(&id);
        }
    }

    /// Ends every watch of `id` (the execution was forgotten).
    pub(crate) fn remove(&mut self, id: ExecutionId) -> Vec<Watcher> {
        let watchers = self.by_execution.remove(&id).unwrap_or_default();
        self.total -= watchers.len();
        watchers
    }

    /// Drops the watches of `id` whose client has gone.
    pub(crate) fn sweep(&mut self, id: ExecutionId) {
        let Some(watchers) = self.by_execution.get_mut(&id) else {
            return;
        };
        let before = watchers.len();
        watchers.retain(|watcher| !watcher.is_closed());
        self.total -= before - watchers.len();
        if watchers.is_empty() {
            self.by_execution.remove(&id);
        }
    }

    fn sweep_all(&mut self) {
        let mut total = 0;
        self.by_execution.retain(|_, watchers| {
            watchers.retain(|watcher| !watcher.is_closed());
            total += watchers.len();
            !watchers.is_empty()
        });
        self.total = total;
        // A burst of watches can leave a large, mostly empty table behind.
        if self.by_execution.capacity() > 4 * self.by_execution.len().max(64) {
            self.by_execution.shrink_to_fit();
        }
    }

    /// Ends every watch.
    pub(crate) fn clear(&mut self) {
        self.by_execution.clear();
        self.total = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: &str) -> ExecutionInfo {
        ExecutionInfo {
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dead_watches_are_dropped_when_another_is_added() {
        let mut watchers = Watchers::new(3, 100);
        let id = ExecutionId(1);
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = mpsc::unbounded_channel();
            watchers.add(id, tx).unwrap();
            receivers.push(rx);
        }
        assert_eq!(watchers.len(), 3);
        drop(receivers);
        // All three are dead: a fourth fits under the per-execution limit of 3.
        let (tx, _rx) = mpsc::unbounded_channel();
        watchers.add(id, tx).unwrap();
        assert_eq!(watchers.len(), 1);
    }

    #[test]
    fn live_watches_are_capped_per_execution_and_in_total() {
        let mut watchers = Watchers::new(2, 3);
        let mut keep = Vec::new();
        for id in [1, 1] {
            let (tx, rx) = mpsc::unbounded_channel();
            watchers.add(ExecutionId(id), tx).unwrap();
            keep.push(rx);
        }
        let (tx, _rx) = mpsc::unbounded_channel();
        let refused = watchers.add(ExecutionId(1), tx).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let (tx, rx) = mpsc::unbounded_channel();
        watchers.add(ExecutionId(2), tx).unwrap();
        keep.push(rx);
        let (tx, _rx) = mpsc::unbounded_channel();
        let refused = watchers.add(ExecutionId(3), tx).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Once one client goes, the total has room again (found by a sweep).
        keep.pop();
        let (tx, _rx) = mpsc::unbounded_channel();
        watchers.add(ExecutionId(3), tx).unwrap();
        assert_eq!(watchers.len(), 3);
    }

    #[test]
    fn a_terminal_state_ends_every_watch_and_updates_drop_the_dead() {
        let mut watchers = Watchers::new(10, 10);
        let (live, mut live_rx) = mpsc::unbounded_channel();
        let (dead, dead_rx) = mpsc::unbounded_channel();
        watchers.add(ExecutionId(1), live).unwrap();
        watchers.add(ExecutionId(1), dead).unwrap();
        drop(dead_rx);
        watchers.send(ExecutionId(1), &info("RUNNING"), false);
        assert_eq!(watchers.len(), 1);
        watchers.send(ExecutionId(1), &info("COMPLETED"), true);
        assert_eq!(watchers.len(), 0);
        assert!(!watchers.is_watched(ExecutionId(1)));
        assert_eq!(live_rx.try_recv().unwrap().status, "RUNNING");
        assert_eq!(live_rx.try_recv().unwrap().status, "COMPLETED");
    }
}

//! Retention: what the core keeps of finished executions, and for how long.
//!
//! A finished execution stays (as a [`Done`](super::Done): function, status,
//! attempt) until it is older than `retention.max_age` or more than
//! `retention.max_count` are held, oldest first ([`Output::Evicted`]), or
//! until the caller forgets it because its store answers for the history.

use super::{Output, Retention, Scheduler};
use crate::ids::ExecutionId;
use crate::time::Instant;

impl Scheduler {
    /// Forgets a finished execution at once, with no [`Output::Evicted`]:
    /// for a caller whose store keeps the history and answers for it, so
    /// the core holds only live work. False if `id` is not finished here.
    pub fn forget(&mut self, id: ExecutionId) -> bool {
        let Some(done) = self.done.remove(&id) else {
            return false;
        };
        self.by_status[done.status as usize] -= 1;
        // Its place in the retention order goes once it reaches the front
        // (executions are forgotten about in the order they finished).
        while let Some(&(_, front)) = self.finished.front() {
            if self.done.contains_key(&front) {
                break;
            }
            self.finished.pop_front();
        }
        true
    }

    /// Remembers that `id` finished at `at` (now, or earlier for a restored
    /// execution), keeping the retention order by finishing time.
    pub(super) fn retain(&mut self, now: Instant, at: Instant, id: ExecutionId) {
        if self.finished.back().is_none_or(|&(last, _)| last <= at) {
            self.finished.push_back((at, id));
        } else {
            // Only restores land here; they come nearly in order, so the
            // insertion point is close to the back.
            let index = self.finished.partition_point(|&(t, _)| t <= at);
            self.finished.insert(index, (at, id));
        }
        self.evict(now);
    }

    /// Forgets terminal executions past their retention, oldest first.
    pub(super) fn evict(&mut self, now: Instant) {
        let Retention { max_age, max_count } = self.config.retention;
        while let Some(&(finished_at, id)) = self.finished.front() {
            if self.finished.len() <= max_count && finished_at + max_age > now {
                break;
            }
            self.finished.pop_front();
            // Forgotten already: nothing to evict.
            let Some(done) = self.done.remove(&id) else {
                continue;
            };
            self.by_status[done.status as usize] -= 1;
            self.outputs.push_back(Output::Evicted { execution: id });
        }
    }
}

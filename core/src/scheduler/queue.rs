//! Executions ready to start, one queue per runtime (indexed by
//! [`RuntimeId`]).
//!
//! A worker runs only some runtimes, so one shared FIFO would let an execution
//! nobody can run right now hold back everything behind it. Each runtime gets
//! its own queue instead, and the scheduler looks only at the heads: within a
//! runtime every execution can go to the same workers, so if the head cannot
//! start, nothing behind it can either.
//!
//! Every entry carries a [`Ticket`] from one sequence shared by all runtimes,
//! so comparing heads tells which became ready first. Entries put at the back
//! take the next ticket up; entries put back at the front (a retry after a
//! lost attempt) take the next ticket down, ahead of every other entry in any
//! runtime. The tickets therefore order all entries exactly as one shared
//! queue would, and each runtime's queue stays sorted by ticket: a `VecDeque`
//! that only grows at its ends, where starting the head is O(1) and taking an
//! execution out of the middle (cancelled, expired) is a binary search.

use std::collections::VecDeque;

use super::runtimes::RuntimeId;
use crate::ids::ExecutionId;

/// An entry's place in the ready order shared by all runtimes: lower goes
/// first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(i64);

#[derive(Debug)]
pub(crate) struct ReadyQueues {
    /// By runtime id; as long as the most runtimes in use at once.
    by_runtime: Vec<Queue>,
    /// The ticket the next entry put at the back takes; counts up.
    next_back: i64,
    /// The ticket the next entry put at the front takes; counts down.
    next_front: i64,
}

impl Default for ReadyQueues {
    fn default() -> Self {
        ReadyQueues {
            by_runtime: Vec::new(),
            next_back: 0,
            next_front: -1,
        }
    }
}

impl ReadyQueues {
    /// Queues `id` behind everything ready so far.
    pub(crate) fn push_back(&mut self, runtime: RuntimeId, id: ExecutionId) -> Ticket {
        let ticket = Ticket(self.next_back);
        self.next_back += 1;
        self.queue_mut(runtime).insert(ticket, id);
        ticket
    }

    /// Queues `id` ahead of everything ready so far, in every runtime.
    pub(crate) fn push_front(&mut self, runtime: RuntimeId, id: ExecutionId) -> Ticket {
        let ticket = Ticket(self.next_front);
        self.next_front -= 1;
        self.queue_mut(runtime).insert(ticket, id);
        ticket
    }

    /// Takes out the entry `ticket` of `runtime` (no-op if it is not there).
    pub(crate) fn remove(&mut self, runtime: RuntimeId, ticket: Ticket) {
        if let Some(queue) = self.by_runtime.get_mut(runtime.index()) {
            queue.remove(ticket);
        }
    }

    /// The head of every non-empty queue.
    pub(crate) fn heads(&self) -> impl Iterator<Item = (RuntimeId, Ticket, ExecutionId)> {
        self.by_runtime
            .iter()
            .enumerate()
            .filter_map(|(index, queue)| {
                let (ticket, id) = queue.first()?;
                Some((RuntimeId::from_index(index), ticket, id))
            })
    }

    /// How many executions wait in `runtime`'s queue.
    pub(crate) fn len(&self, runtime: RuntimeId) -> usize {
        self.by_runtime
            .get(runtime.index())
            .map_or(0, |queue| queue.live)
    }

    fn queue_mut(&mut self, runtime: RuntimeId) -> &mut Queue {
        if self.by_runtime.len() <= runtime.index() {
            self.by_runtime
                .resize_with(runtime.index() + 1, Queue::default);
        }
        &mut self.by_runtime[runtime.index()]
    }
}

/// One runtime's entries, sorted by ticket. An entry taken out of the middle
/// leaves a hole (`None`) rather than shifting the rest; holes at either end
/// are dropped at once, so both ends are always live entries, and the holes
/// are swept out when they outnumber the live entries (plus a little slack),
/// which keeps memory within about twice the live count at O(1) amortised
/// per removal.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<(Ticket, Option<ExecutionId>)>,
    /// Entries that are not holes: the executions waiting.
    live: usize,
}

/// Holes tolerated before a sweep even when few entries are live, so a short
/// queue is not swept on every removal.
const HOLES_BEFORE_SWEEP: usize = 32;

impl Queue {
    fn insert(&mut self, ticket: Ticket, id: ExecutionId) {
        // Tickets come from counters moving away from every ticket issued, so
        // a new entry always belongs at one end.
        if self
            .entries
            .front()
            .is_none_or(|&(first, _)| ticket < first)
        {
            self.entries.push_front((ticket, Some(id)));
        } else {
            debug_assert!(self.entries.back().is_some_and(|&(last, _)| last < ticket));
            self.entries.push_back((ticket, Some(id)));
        }
        self.live += 1;
    }

    fn first(&self) -> Option<(Ticket, ExecutionId)> {
        let &(ticket, id) = self.entries.front()?;
        Some((ticket, id.expect("the ends are never holes")))
    }

    fn remove(&mut self, ticket: Ticket) {
        if self
            .entries
            .front()
            .is_some_and(|&(first, _)| first == ticket)
        {
            // Starting the head, the common case: no search, no hole.
            self.entries.pop_front();
        } else {
            let Ok(index) = self.entries.binary_search_by_key(&ticket, |&(t, _)| t) else {
                return;
            };
            if self.entries[index].1.take().is_none() {
                return;
            }
        }
        self.live -= 1;
        while self.entries.front().is_some_and(|(_, id)| id.is_none()) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|(_, id)| id.is_none()) {
            self.entries.pop_back();
        }
        if self.entries.len() - self.live > self.live + HOLES_BEFORE_SWEEP {
            self.entries.retain(|(_, id)| id.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RuntimeId = RuntimeId::from_index(0);
    const B: RuntimeId = RuntimeId::from_index(1);

    fn heads(queues: &ReadyQueues) -> Vec<(RuntimeId, u64)> {
        queues
            .heads()
            .map(|(runtime, _, id)| (runtime, id.0))
            .collect()
    }

    #[test]
    fn front_entries_go_before_every_back_entry_in_any_runtime() {
        let mut queues = ReadyQueues::default();
        let first = queues.push_back(A, ExecutionId(1));
        let second = queues.push_back(B, ExecutionId(2));
        let retry = queues.push_front(B, ExecutionId(3));
        let later_retry = queues.push_front(A, ExecutionId(4));
        assert!(later_retry < retry && retry < first && first < second);
        assert_eq!(heads(&queues), [(A, 4), (B, 3)]);
        queues.remove(B, retry);
        queues.remove(B, second);
        assert_eq!(heads(&queues), [(A, 4)]);
        assert_eq!((queues.len(A), queues.len(B)), (2, 0));
    }

    #[test]
    fn entries_taken_from_the_middle_leave_the_order_and_bounded_holes() {
        let mut queues = ReadyQueues::default();
        let tickets: Vec<_> = (0..1000)
            .map(|id| queues.push_back(A, ExecutionId(id)))
            .collect();
        // Every odd one leaves from the middle.
        for ticket in tickets.iter().skip(1).step_by(2) {
            queues.remove(A, *ticket);
        }
        assert_eq!(queues.len(A), 500);
        let entries = queues.by_runtime[A.index()].entries.len();
        assert!(entries <= 2 * 500 + HOLES_BEFORE_SWEEP, "{entries} entries");
        // The rest start in order; the holes are skipped.
        let mut started = Vec::new();
        loop {
            let head = queues.heads().next();
            let Some((_, ticket, id)) = head else { break };
            started.push(id.0);
            queues.remove(A, ticket);
        }
        assert_eq!(started, (0..1000).step_by(2).collect::<Vec<_>>());
        assert!(queues.by_runtime[A.index()].entries.is_empty());
        // Removing what is gone already changes nothing.
        queues.remove(A, tickets[0]);
        assert_eq!(queues.len(A), 0);
    }
}

//! Group commit: the scheduler's records reach disk in batches, one fsync each.
//!
//! The actor hands over a batch of records at the end of every turn of its loop
//! and goes on. The committer takes every batch that is waiting, appends them all,
//! fsyncs once, and acknowledges the last batch's sequence number. While one fsync
//! runs, the next group gathers, so durability costs one flush per group, not per
//! execution. The actor holds back every reply that promises durability (ACCEPTED,
//! a terminal state) until the batch holding its record is acknowledged.
//!
//! Commit delay: a batch may say that results are on their way for executions
//! whose acceptance it (or an earlier batch not yet durable) holds — quick ones,
//! dispatched as they were accepted. An idle committer then waits for them, up to
//! the delay, before its fsync, so an execution that ends within it is accepted and
//! finished by one fsync instead of two in a row. The wait parks the thread (on two
//! cores a spinning committer takes the CPU the worker needs to produce the
//! result), and only a committer that was idle waits: under load the next group
//! gathers during the current fsync anyway.
//!
//! In the binary the committer is a dedicated thread, so a slow disk never stalls
//! the async runtime. In the simulation it is a task on the simulated host (no
//! threads may escape the simulator), calling the same store.

use std::time::Duration;

use tokio::sync::mpsc;

use taskforge_core::ExecutionId;

use crate::store::{Location, Record, Store};

/// Where the committer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreRunner {
    /// A dedicated OS thread (real disks block).
    #[default]
    Thread,
    /// A task on the current tokio runtime (the simulated filesystem).
    Task,
}

/// What the committer reports after each group.
#[derive(Debug)]
pub(crate) enum Commit {
    /// Every batch up to and including `through` is durable; the
    /// executions whose ends they held are filed in the history at these
    /// locations.
    Durable {
        through: u64,
        filed: Vec<(ExecutionId, Location)>,
        /// Executions with idempotency keys that the store's own retention
        /// forgot (see `Store::take_pruned`).
        pruned: Vec<ExecutionId>,
    },
    /// The store failed; batches up to this sequence number may not be durable.
    Failed { through: u64, error: String },
}

/// One turn's records, numbered in the order they were handed over.
#[derive(Debug)]
struct Batch {
    seq: u64,
    records: Vec<Record>,
    /// Results are on their way for executions accepted in this batch or an
    /// earlier one not yet durable (see the commit delay above).
    results_due: bool,
}

/// A compaction that takes longer is worth a line in the log.
const SLOW_COMPACTION: std::time::Duration = std::time::Duration::from_millis(20);

/// The actor's side of the committer.
#[derive(Debug)]
pub(crate) struct Committer {
    batches: BatchSender,
    next_seq: u64,
}

/// A thread parks on a std channel (its timed wait is precise to
/// microseconds); a task waits on tokio's, whose timers follow the
/// simulation's clock.
#[derive(Debug)]
enum BatchSender {
    Thread(std::sync::mpsc::Sender<Batch>),
    Task(mpsc::UnboundedSender<Batch>),
}

impl Committer {
    /// Starts the committer; its reports arrive on `reports`. It waits up to
    /// `delay` for results that batches say are due (zero: never waits).
    pub(crate) fn start(
        store: Box<dyn Store>,
        runner: StoreRunner,
        delay: Duration,
        reports: mpsc::UnboundedSender<Commit>,
    ) -> std::io::Result<Committer> {
        let batches = match runner {
            StoreRunner::Thread => {
                let (batches, incoming) = std::sync::mpsc::channel::<Batch>();
                std::thread::Builder::new()
                    .name("taskforge-store".into())
                    .spawn(move || run_on_thread(store, incoming, delay, reports))?;
                BatchSender::Thread(batches)
            }
            StoreRunner::Task => {
                let (batches, incoming) = mpsc::unbounded_channel::<Batch>();
                tokio::spawn(run_as_task(store, incoming, delay, reports));
                BatchSender::Task(batches)
            }
        };
        Ok(Committer {
            batches,
            next_seq: 1,
        })
    }

    /// The sequence number the next submitted batch will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hands a batch over; returns its sequence number. `results_due`: see
    /// the commit delay (module docs).
    pub(crate) fn submit(&mut self, records: Vec<Record>, results_due: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let batch = Batch {
            seq,
            records,
            results_due,
        };
        // The committer only stops when this sender is dropped.
        let _ = match &self.batches {
            BatchSender::Thread(sender) => sender.send(batch).map_err(drop),
            BatchSender::Task(sender) => sender.send(batch).map_err(drop),
        };
        seq
    }
}

/// The committer's loop on a thread of its own: one group per wake-up.
fn run_on_thread(
    mut store: Box<dyn Store>,
    incoming: std::sync::mpsc::Receiver<Batch>,
    delay: Duration,
    reports: mpsc::UnboundedSender<Commit>,
) {
    while let Ok(first) = incoming.recv() {
        let mut group = Group::open(&mut *store, first, delay);
        let deadline = std::time::Instant::now() + delay;
        loop {
            group.add_all(&mut *store, std::iter::from_fn(|| incoming.try_recv().ok()));
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !group.waits_for_results() || left.is_zero() {
                break;
            }
            match incoming.recv_timeout(left) {
                Ok(batch) => group.add(&mut *store, batch),
                Err(_) => break,
            }
        }
        group.commit(&mut *store, &reports);
    }
}

/// The same loop as a task, on tokio's clock (the simulation's time).
async fn run_as_task(
    mut store: Box<dyn Store>,
    mut incoming: mpsc::UnboundedReceiver<Batch>,
    delay: Duration,
    reports: mpsc::UnboundedSender<Commit>,
) {
    while let Some(first) = incoming.recv().await {
        let mut group = Group::open(&mut *store, first, delay);
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            group.add_all(&mut *store, std::iter::from_fn(|| incoming.try_recv().ok()));
            if !group.waits_for_results() || tokio::time::Instant::now() >= deadline {
                break;
            }
            match tokio::time::timeout_at(deadline, incoming.recv()).await {
                Ok(Some(batch)) => group.add(&mut *store, batch),
                Ok(None) | Err(_) => break,
            }
        }
        group.commit(&mut *store, &reports);
    }
}

/// The batches one fsync makes durable, appended as they come.
struct Group {
    through: u64,
    result: Result<(), crate::store::StoreError>,
    /// The newest batch says results are due, and the group may wait for
    /// them: it began with a batch that found the committer idle.
    waits: bool,
}

impl Group {
    /// A group begins with the batch that woke an idle committer.
    fn open(store: &mut dyn Store, first: Batch, delay: Duration) -> Group {
        let mut group = Group {
            through: first.seq,
            result: Ok(()),
            waits: !delay.is_zero() && first.results_due,
        };
        group.append(store, first);
        group
    }

    /// A batch that arrived while the group gathered.
    fn add(&mut self, store: &mut dyn Store, batch: Batch) {
        self.waits &= batch.results_due;
        self.append(store, batch);
    }

    /// Every batch already waiting.
    fn add_all(&mut self, store: &mut dyn Store, waiting: impl Iterator<Item = Batch>) {
        for batch in waiting {
            self.add(store, batch);
        }
    }

    fn append(&mut self, store: &mut dyn Store, batch: Batch) {
        self.through = batch.seq;
        if self.result.is_ok() {
            self.result = append_all(store, &batch.records);
        }
    }

    fn waits_for_results(&self) -> bool {
        self.waits && self.result.is_ok()
    }

    /// One sync for the whole group, the report, then a compaction if due.
    fn commit(self, store: &mut dyn Store, reports: &mpsc::UnboundedSender<Commit>) {
        let through = self.through;
        let report = match self.result.and_then(|()| store.sync()) {
            Ok(()) => Commit::Durable {
                through,
                filed: store.take_filed(),
                pruned: store.take_pruned(),
            },
            Err(error) => Commit::Failed {
                through,
                error: error.to_string(),
            },
        };
        let _ = reports.send(report);
        if store.wants_compaction() {
            compact(store);
        }
    }
}

/// Timed for the log only: a slow compaction holds back the next group's
/// fsync.
fn compact(store: &mut dyn Store) {
    let started = std::time::Instant::now();
    match store.compact() {
        Ok(()) => {
            let took = started.elapsed();
            let ms = took.as_secs_f64() * 1e3;
            match took >= SLOW_COMPACTION {
                true => tracing::info!(ms, "store compacted (slowly)"),
                false => tracing::debug!(ms, "store compacted"),
            }
        }
        Err(error) => {
            tracing::error!(%error, "store compaction failed; the log keeps growing");
        }
    }
}

fn append_all(store: &mut dyn Store, records: &[Record]) -> Result<(), crate::store::StoreError> {
    records.iter().try_for_each(|record| store.append(record))
}

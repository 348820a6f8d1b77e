//! Group commit: the scheduler's records reach disk in batches, one fsync each.
//!
//! The actor hands over a batch of records at the end of every turn of its loop
//! and goes on. The committer takes every batch that is waiting, appends them all,
//! fsyncs once, and acknowledges the last batch's sequence number. While one fsync
//! runs, the next group gathers, so durability costs one flush per group, not per
//! execution. The actor holds back every reply that promises durability (ACCEPTED,
//! a terminal state) until the batch holding its record is acknowledged.
//!
//! In the binary the committer is a dedicated thread, so a slow disk never stalls
//! the async runtime. In the simulation it is a task on the simulated host (no
//! threads may escape the simulator), calling the same store.

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

type Batch = (u64, Vec<Record>);

/// A compaction that takes longer is worth a line in the log.
const SLOW_COMPACTION: std::time::Duration = std::time::Duration::from_millis(20);

/// The actor's side of the committer.
#[derive(Debug)]
pub(crate) struct Committer {
    batches: mpsc::UnboundedSender<Batch>,
    next_seq: u64,
}

impl Committer {
    /// Starts the committer; its reports arrive on `reports`.
    pub(crate) fn start(
        store: Box<dyn Store>,
        runner: StoreRunner,
        reports: mpsc::UnboundedSender<Commit>,
    ) -> std::io::Result<Committer> {
        let (batches, mut incoming) = mpsc::unbounded_channel::<Batch>();
        match runner {
            StoreRunner::Thread => {
                std::thread::Builder::new()
                    .name("taskforge-store".into())
                    .spawn(move || {
                        let mut store = store;
                        while let Some(first) = incoming.blocking_recv() {
                            commit_group(&mut *store, first, &mut incoming, &reports);
                        }
                        drop(store);
                    })?;
            }
            StoreRunner::Task => {
                tokio::spawn(async move {
                    let mut store = store;
                    while let Some(first) = incoming.recv().await {
                        commit_group(&mut *store, first, &mut incoming, &reports);
                    }
                });
            }
        }
        Ok(Committer {
            batches,
            next_seq: 1,
        })
    }

    /// The sequence number the next submitted batch will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hands a batch over; returns its sequence number.
    pub(crate) fn submit(&mut self, records: Vec<Record>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // The committer only stops when this sender is dropped.
        let _ = self.batches.send((seq, records));
        seq
    }
}

/// Writes `first` and every batch already waiting behind it, then one sync.
fn commit_group(
    store: &mut dyn Store,
    first: Batch,
    waiting: &mut mpsc::UnboundedReceiver<Batch>,
    reports: &mpsc::UnboundedSender<Commit>,
) {
    let mut through = first.0;
    let mut result = append_all(store, &first.1);
    while let Ok((seq, records)) = waiting.try_recv() {
        through = seq;
        if result.is_ok() {
            result = append_all(store, &records);
        }
    }
    let result = result.and_then(|()| store.sync());
    let report = match result {
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
        // Timed for the log only: a slow compaction holds back the next
        // group's fsync.
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
}

fn append_all(store: &mut dyn Store, records: &[Record]) -> Result<(), crate::store::StoreError> {
    records.iter().try_for_each(|record| store.append(record))
}

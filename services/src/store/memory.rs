//! A store with no files, for tests that need a [`Store`] but not a disk.
//!
//! The synced state lives behind an `Arc<Mutex<..>>` shared by every clone,
//! while appends wait in the handle that made them until its `sync`. A clone
//! starts with nothing buffered, so cloning models a restart: drop the
//! scheduler and its store handle, build a new scheduler on a clone, and its
//! `load` returns exactly what was synced — unsynced appends are lost, as they
//! would be in a crash.

use std::sync::{Arc, Mutex, MutexGuard};

use super::live::LiveState;
use super::{Record, Recovered, Store, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    synced: Arc<Mutex<LiveState>>,
    buffered: Vec<Record>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn lock(state: &Mutex<LiveState>) -> MutexGuard<'_, LiveState> {
    // A test that panicked while holding the lock has failed already; the state
    // itself is never left half updated, so later users may go on.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Clone for MemoryStore {
    /// Shares what was synced; starts with nothing buffered.
    fn clone(&self) -> MemoryStore {
        MemoryStore {
            synced: Arc::clone(&self.synced),
            buffered: Vec::new(),
        }
    }
}

impl Store for MemoryStore {
    /// Everything synced so far, through any clone. Unlike the file store it may
    /// be called more than once.
    fn load(&mut self) -> Result<Recovered, StoreError> {
        let synced = lock(&self.synced);
        Ok(Recovered {
            functions: synced.functions().cloned().collect(),
            executions: synced.recovered_executions(),
            warnings: Vec::new(),
        })
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.buffered.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let mut synced = lock(&self.synced);
        for record in self.buffered.drain(..) {
            if let Err(ignored) = synced.apply(&record) {
                tracing::warn!("store: {ignored}");
            }
        }
        Ok(())
    }

    fn wants_compaction(&self) -> bool {
        false
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ExecutionRecord, FinishedRecord, RecoveredExecution};
    use bytes::Bytes;
    use taskforge_core::{ExecutionId, Policy, Terminal};

    fn accepted(id: u64) -> Record {
        Record::Accepted(ExecutionRecord {
            idempotency: None,
            id: ExecutionId(id),
            function_id: "f".into(),
            payload: Bytes::from_static(b"p"),
            policy: Policy::default(),
            created_at_us: id,
        })
    }

    #[test]
    fn a_clone_recovers_what_was_synced_and_nothing_else() -> Result<(), StoreError> {
        let mut store = MemoryStore::new();
        assert_eq!(store.load()?, Recovered::default());
        store.append(&accepted(1))?;
        store.append(&accepted(2))?;
        store.sync()?;
        store.append(&Record::Evicted { id: ExecutionId(1) })?;
        store.append(&accepted(3))?; // never synced: lost with the "crash"

        let mut restarted = store.clone();
        drop(store);
        let recovered = restarted.load()?;
        let ids: Vec<_> = recovered.executions.iter().map(|e| e.record.id.0).collect();
        assert_eq!(ids, [1, 2]);

        let finished = FinishedRecord {
            terminal: Terminal::Cancelled,
            attempt: 0,
            worker_id: String::new(),
            started_at_us: 0,
            finished_at_us: 9,
            logs: String::new(),
        };
        restarted.append(&Record::Finished {
            id: ExecutionId(2),
            finished: finished.clone(),
        })?;
        restarted.compact()?;
        assert_eq!(
            restarted.clone().load()?.executions[1],
            RecoveredExecution {
                record: match accepted(2) {
                    // Finished: the payload is gone.
                    Record::Accepted(record) => ExecutionRecord {
                        payload: Bytes::new(),
                        ..record
                    },
                    _ => unreachable!(),
                },
                attempts_started: 0,
                finished: Some(finished),
            }
        );
        Ok(())
    }
}

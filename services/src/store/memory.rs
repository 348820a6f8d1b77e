//! A store with no files, for tests that need a [`Store`] but not a disk.
//!
//! The synced state lives behind an `Arc<Mutex<..>>` shared by every clone,
//! while appends wait in the handle that made them until its `sync`. A clone
//! starts with nothing buffered, so cloning models a restart: drop the
//! scheduler and its store handle, build a new scheduler on a clone, and its
//! `load` returns exactly what was synced — unsynced appends are lost, as they
//! would be in a crash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;
use taskforge_core::ExecutionId;

use super::live::LiveState;
use super::{
    Filed, FinishedExecution, HistoryReader, Location, Record, Recovered, Store, StoreError,
};

#[derive(Debug, Default)]
pub struct MemoryStore {
    synced: Arc<Mutex<Synced>>,
    buffered: Vec<Record>,
    filed: Vec<(ExecutionId, Location)>,
}

/// What every clone shares: the live state, and the history by filing
/// number (a location is the number, split across segment and offset).
#[derive(Debug, Default)]
struct Synced {
    live: LiveState,
    history: BTreeMap<u64, FinishedExecution>,
    next_filed: u64,
    number_of: FxHashMap<ExecutionId, u64>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn lock(state: &Mutex<Synced>) -> MutexGuard<'_, Synced> {
    // A test that panicked while holding the lock has failed already; the state
    // itself is never left half updated, so later users may go on.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn location_of(number: u64) -> Location {
    Location {
        segment: (number >> 32) as u32,
        offset: number as u32,
        len: 0,
    }
}

fn number_of(location: Location) -> u64 {
    (u64::from(location.segment) << 32) | u64::from(location.offset)
}

impl Clone for MemoryStore {
    /// Shares what was synced; starts with nothing buffered.
    fn clone(&self) -> MemoryStore {
        MemoryStore {
            synced: Arc::clone(&self.synced),
            buffered: Vec::new(),
            filed: Vec::new(),
        }
    }
}

impl Store for MemoryStore {
    /// Everything synced so far, through any clone. Unlike the file store it may
    /// be called more than once.
    fn load(&mut self) -> Result<Recovered, StoreError> {
        let synced = lock(&self.synced);
        let history = synced
            .history
            .iter()
            .map(|(&number, done)| Filed {
                id: done.record.id,
                function_id: Arc::from(done.record.function_id.as_str()),
                status: done.finished.terminal.status(),
                attempt: done.finished.attempt,
                finished_at_us: done.finished.finished_at_us,
                idempotency: done.record.idempotency.clone(),
                location: location_of(number),
            })
            .collect();
        Ok(Recovered {
            functions: synced.live.functions().cloned().collect(),
            executions: synced.live.recovered_executions(),
            history,
            warnings: Vec::new(),
        })
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.buffered.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let mut synced = lock(&self.synced);
        let synced = &mut *synced;
        for record in self.buffered.drain(..) {
            let applied = match &record {
                Record::Finished { id, finished } => {
                    synced.live.finish(*id, finished).map(|done| {
                        let number = synced.next_filed;
                        synced.next_filed += 1;
                        synced.history.insert(number, done);
                        synced.number_of.insert(*id, number);
                        self.filed.push((*id, location_of(number)));
                    })
                }
                Record::Evicted { id, .. } if !synced.live.holds(*id) => {
                    if let Some(number) = synced.number_of.remove(id) {
                        synced.history.remove(&number);
                    }
                    Ok(())
                }
                record => synced.live.apply(record),
            };
            if let Err(ignored) = applied {
                tracing::warn!("store: {ignored}");
            }
        }
        Ok(())
    }

    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        std::mem::take(&mut self.filed)
    }

    fn history(&self) -> Arc<dyn HistoryReader> {
        Arc::new(MemoryHistory(Arc::clone(&self.synced)))
    }

    fn wants_compaction(&self) -> bool {
        false
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

#[derive(Debug)]
struct MemoryHistory(Arc<Mutex<Synced>>);

impl HistoryReader for MemoryHistory {
    fn read(
        &self,
        id: ExecutionId,
        location: Location,
    ) -> Result<Option<FinishedExecution>, StoreError> {
        let synced = lock(&self.0);
        Ok(synced
            .history
            .get(&number_of(location))
            .filter(|done| done.record.id == id)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ExecutionRecord, FinishedRecord};
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
        store.append(&Record::Evicted {
            id: ExecutionId(1),
            filed: None,
        })?;
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
        let filed = restarted.take_filed();
        assert_eq!(filed.len(), 1);
        let recovered = restarted.clone().load()?;
        assert_eq!(recovered.executions.len(), 1, "only 1 is unfinished");
        assert_eq!(recovered.history.len(), 1);
        assert_eq!(recovered.history[0].location, filed[0].1);
        let read = restarted
            .history()
            .read(ExecutionId(2), filed[0].1)?
            .expect("filed");
        assert_eq!(
            read,
            FinishedExecution {
                record: match accepted(2) {
                    // Finished: the payload is gone.
                    Record::Accepted(record) => ExecutionRecord {
                        payload: Bytes::new(),
                        ..record
                    },
                    _ => unreachable!(),
                },
                finished,
            }
        );
        Ok(())
    }
}

//! The live state: what a sequence of records amounts to.
//!
//! Both stores fold records into a [`LiveState`]: every function, and every
//! execution not yet evicted with the latest of what happened to it. It is what
//! `load` hands back, and what compaction writes out as a snapshot, so a log and
//! the snapshot made from it always load to the same thing. It is also where the
//! rules for records that change nothing live (see [`Record`]): one place, so
//! the JSON Lines store, the memory store and the tests agree.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use taskforge_core::ExecutionId;

use super::{ExecutionRecord, FinishedRecord, FunctionRecord, Record, RecoveredExecution};

#[derive(Clone, Debug, Default)]
pub(crate) struct LiveState {
    /// Keyed by registration sequence, so iteration is registration order and
    /// a deletion is a removal.
    functions: BTreeMap<u64, FunctionRecord>,
    function_slots: HashMap<String, u64>,
    next_function: u64,
    /// Keyed by acceptance sequence, so iteration is acceptance order and an
    /// eviction is a removal, not a tombstone.
    executions: BTreeMap<u64, LiveExecution>,
    sequence_of: HashMap<ExecutionId, u64>,
    next_sequence: u64,
    /// Execution records a snapshot of this state holds; kept as we go so
    /// that deciding whether to compact costs nothing.
    execution_snapshot_len: u64,
}

#[derive(Clone, Debug)]
struct LiveExecution {
    record: ExecutionRecord,
    /// The latest start; a snapshot keeps only this one.
    last_start: Option<Start>,
    finished: Option<FinishedRecord>,
}

#[derive(Clone, Debug)]
struct Start {
    attempt: u32,
    worker_id: String,
    started_at_us: u64,
}

impl LiveExecution {
    fn snapshot_len(&self) -> u64 {
        1 + u64::from(self.last_start.is_some()) + u64::from(self.finished.is_some())
    }
}

/// Why a record changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ignored {
    UnknownFunction(String),
    UnknownExecution {
        kind: &'static str,
        id: ExecutionId,
    },
    AlreadyAccepted(ExecutionId),
    AlreadyFinished(ExecutionId),
    StartAfterFinish(ExecutionId),
    StaleStart {
        id: ExecutionId,
        attempt: u32,
        latest: u32,
    },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::UnknownFunction(id) => {
                write!(f, "deletion of unknown function {id:?} ignored")
            }
            Ignored::UnknownExecution { kind, id } => {
                write!(f, "{kind} record for unknown execution {id} ignored")
            }
            Ignored::AlreadyAccepted(id) => {
                write!(f, "second accepted record for execution {id} ignored")
            }
            Ignored::AlreadyFinished(id) => write!(
                f,
                "second finished record for execution {id} ignored (a terminal state never changes)"
            ),
            Ignored::StartAfterFinish(id) => {
                write!(f, "started record for finished execution {id} ignored")
            }
            Ignored::StaleStart {
                id,
                attempt,
                latest,
            } => write!(
                f,
                "started record for attempt {attempt} of execution {id} ignored: attempt {latest} already started"
            ),
        }
    }
}

impl LiveState {
    /// Folds one record in, or says why it changes nothing (and leaves the
    /// state as it was).
    pub(crate) fn apply(&mut self, record: &Record) -> Result<(), Ignored> {
        match record {
            Record::Function(function) => {
                self.register(function);
                Ok(())
            }
            Record::FunctionDeleted { function_id } => {
                let slot = self
                    .function_slots
                    .remove(function_id)
                    .ok_or_else(|| Ignored::UnknownFunction(function_id.clone()))?;
                self.functions.remove(&slot);
                Ok(())
            }
            Record::Accepted(execution) => self.accept(execution),
            Record::Started {
                id,
                attempt,
                worker_id,
                started_at_us,
            } => {
                let execution = self.execution_mut("started", *id)?;
                if execution.finished.is_some() {
                    return Err(Ignored::StartAfterFinish(*id));
                }
                let latest = execution.last_start.as_ref().map_or(0, |s| s.attempt);
                if *attempt <= latest {
                    return Err(Ignored::StaleStart {
                        id: *id,
                        attempt: *attempt,
                        latest,
                    });
                }
                let first = execution.last_start.is_none();
                execution.last_start = Some(Start {
                    attempt: *attempt,
                    worker_id: worker_id.clone(),
                    started_at_us: *started_at_us,
                });
                self.execution_snapshot_len += u64::from(first);
                Ok(())
            }
            Record::Finished { id, finished } => {
                let execution = self.execution_mut("finished", *id)?;
                if execution.finished.is_some() {
                    return Err(Ignored::AlreadyFinished(*id));
                }
                execution.finished = Some(finished.clone());
                self.execution_snapshot_len += 1;
                Ok(())
            }
            Record::Evicted { id } => {
                let sequence = self
                    .sequence_of
                    .remove(id)
                    .ok_or(Ignored::UnknownExecution {
                        kind: "evicted",
                        id: *id,
                    })?;
                if let Some(execution) = self.executions.remove(&sequence) {
                    self.execution_snapshot_len -= execution.snapshot_len();
                }
                Ok(())
            }
        }
    }

    fn register(&mut self, function: &FunctionRecord) {
        let slot = match self.function_slots.get(&function.function_id) {
            Some(&slot) => slot,
            None => {
                let slot = self.next_function;
                self.next_function += 1;
                self.function_slots
                    .insert(function.function_id.clone(), slot);
                slot
            }
        };
        self.functions.insert(slot, function.clone());
    }

    fn accept(&mut self, execution: &ExecutionRecord) -> Result<(), Ignored> {
        if self.sequence_of.contains_key(&execution.id) {
            return Err(Ignored::AlreadyAccepted(execution.id));
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.sequence_of.insert(execution.id, sequence);
        self.executions.insert(
            sequence,
            LiveExecution {
                record: execution.clone(),
                last_start: None,
                finished: None,
            },
        );
        self.execution_snapshot_len += 1;
        Ok(())
    }

    fn execution_mut(
        &mut self,
        kind: &'static str,
        id: ExecutionId,
    ) -> Result<&mut LiveExecution, Ignored> {
        self.sequence_of
            .get(&id)
            .and_then(|sequence| self.executions.get_mut(sequence))
            .ok_or(Ignored::UnknownExecution { kind, id })
    }

    /// Functions in registration order; a snapshot holds one record each.
    pub(crate) fn functions(&self) -> impl ExactSizeIterator<Item = &FunctionRecord> {
        self.functions.values()
    }

    /// How many records [`execution_snapshot`](Self::execution_snapshot) yields.
    pub(crate) fn execution_snapshot_len(&self) -> u64 {
        self.execution_snapshot_len
    }

    /// Executions in acceptance order, as `load` reports them.
    pub(crate) fn recovered_executions(&self) -> Vec<RecoveredExecution> {
        self.executions
            .values()
            .map(|execution| RecoveredExecution {
                record: execution.record.clone(),
                attempts_started: execution.last_start.as_ref().map_or(0, |s| s.attempt),
                finished: execution.finished.clone(),
            })
            .collect()
    }

    /// The fewest execution records that load back to this state: per execution
    /// in acceptance order, its acceptance, its latest start and its end.
    pub(crate) fn execution_snapshot(&self) -> impl Iterator<Item = Record> + '_ {
        self.executions.values().flat_map(|execution| {
            let id = execution.record.id;
            let accepted = Record::Accepted(execution.record.clone());
            let started = execution.last_start.as_ref().map(|start| Record::Started {
                id,
                attempt: start.attempt,
                worker_id: start.worker_id.clone(),
                started_at_us: start.started_at_us,
            });
            let finished = execution
                .finished
                .as_ref()
                .map(|finished| Record::Finished {
                    id,
                    finished: finished.clone(),
                });
            std::iter::once(accepted).chain(started).chain(finished)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use taskforge_core::{Policy, Terminal};

    fn accepted(id: u64) -> Record {
        Record::Accepted(ExecutionRecord {
            idempotency: None,
            id: ExecutionId(id),
            function_id: "f".into(),
            payload: Bytes::new(),
            policy: Policy::default(),
            created_at_us: 0,
        })
    }

    fn started(id: u64, attempt: u32) -> Record {
        Record::Started {
            id: ExecutionId(id),
            attempt,
            worker_id: format!("w{attempt}"),
            started_at_us: u64::from(attempt),
        }
    }

    fn finished(id: u64) -> Record {
        Record::Finished {
            id: ExecutionId(id),
            finished: FinishedRecord {
                terminal: Terminal::Cancelled,
                attempt: 0,
                worker_id: String::new(),
                started_at_us: 0,
                finished_at_us: 1,
            },
        }
    }

    fn function(id: &str, name: &str) -> Record {
        Record::Function(FunctionRecord {
            function_id: id.into(),
            name: name.into(),
            language: "builtin".into(),
            code: Bytes::from_static(b"echo"),
            timeout_ms: 0,
            max_attempts: 0,
            created_at_us: 0,
        })
    }

    fn load(records: &[Record]) -> LiveState {
        let mut live = LiveState::default();
        for record in records {
            let _ = live.apply(record);
        }
        live
    }

    #[test]
    fn records_that_change_nothing_are_refused_and_leave_the_state_alone() {
        let mut live = load(&[accepted(1), started(1, 2), finished(1)]);
        let id = ExecutionId(1);
        let cases = [
            (accepted(1), Ignored::AlreadyAccepted(id)),
            (finished(1), Ignored::AlreadyFinished(id)),
            (started(1, 3), Ignored::StartAfterFinish(id)),
            (
                started(9, 1),
                Ignored::UnknownExecution {
                    kind: "started",
                    id: ExecutionId(9),
                },
            ),
        ];
        let before = live.recovered_executions();
        for (record, expected) in cases {
            assert_eq!(live.apply(&record), Err(expected));
        }
        assert_eq!(live.recovered_executions(), before);

        let mut live = load(&[accepted(2), started(2, 2)]);
        assert_eq!(
            live.apply(&started(2, 1)),
            Err(Ignored::StaleStart {
                id: ExecutionId(2),
                attempt: 1,
                latest: 2
            })
        );
        assert_eq!(live.recovered_executions()[0].attempts_started, 2);
    }

    #[test]
    fn eviction_forgets_an_execution_and_its_id_can_be_accepted_again() {
        let mut live = load(&[accepted(1), accepted(2), started(1, 1), finished(1)]);
        assert_eq!(live.execution_snapshot_len(), 4);
        live.apply(&Record::Evicted { id: ExecutionId(1) })
            .expect("1 is known");
        assert_eq!(live.execution_snapshot_len(), 1);
        assert_eq!(
            live.apply(&finished(1)),
            Err(Ignored::UnknownExecution {
                kind: "finished",
                id: ExecutionId(1)
            })
        );
        live.apply(&accepted(1)).expect("1 was forgotten");
        let order: Vec<_> = live
            .recovered_executions()
            .iter()
            .map(|e| e.record.id.0)
            .collect();
        assert_eq!(order, [2, 1], "acceptance order, the new 1 last");
    }

    #[test]
    fn a_function_registered_again_is_replaced_in_place() {
        let live = load(&[
            function("a", "one"),
            function("b", "two"),
            function("a", "three"),
        ]);
        let names: Vec<_> = live.functions().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["three", "two"]);
    }

    #[test]
    fn a_snapshot_loads_back_to_the_same_state() {
        let live = load(&[
            accepted(1),
            started(1, 1),
            started(1, 2),
            accepted(2),
            finished(2),
            accepted(3),
            Record::Evicted { id: ExecutionId(2) },
        ]);
        let snapshot: Vec<_> = live.execution_snapshot().collect();
        assert_eq!(snapshot.len() as u64, live.execution_snapshot_len());
        assert_eq!(snapshot, [accepted(1), started(1, 2), accepted(3)]);
        assert_eq!(
            load(&snapshot).recovered_executions(),
            live.recovered_executions()
        );
    }
}

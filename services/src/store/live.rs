//! The live state: what a sequence of records amounts to.
//!
//! Both stores fold records into a [`LiveState`]: every function, and every
//! execution not yet evicted with the latest of what happened to it. It is what
//! `load` hands back, and what compaction writes out as a snapshot, so a log and
//! the snapshot made from it always load to the same thing. It is also where the
//! rules for records that change nothing live (see [`Record`]): one place, so
//! the JSON Lines store, the memory store and the tests agree.
//!
//! A finished execution leaves the live state for the history (see
//! `history.rs`): [`LiveState::finish`] hands it over whole, without its
//! payload (nothing runs or shows it after the end). Only logs written before
//! the history existed hold `finished` and `evicted` records; loading folds
//! them in as before, and [`LiveState::drain_finished`] then moves what
//! finished to the history.
//!
//! The state also keeps the size of its own snapshot, in records and (when fed
//! through [`LiveState::apply_line`]) in bytes, so that deciding whether a log
//! is worth compacting costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

use bytes::Bytes;
use taskforge_core::ExecutionId;

use super::codec;
use super::{
    ExecutionRecord, FinishedExecution, FinishedRecord, FunctionRecord, Record, RecoveredExecution,
};

#[derive(Clone, Debug, Default)]
pub(crate) struct LiveState {
    /// Keyed by registration sequence, so iteration is registration order and
    /// a deletion is a removal.
    functions: BTreeMap<u64, LiveFunction>,
    function_slots: HashMap<String, u64>,
    next_function: u64,
    /// Bytes of the function records a snapshot holds.
    function_bytes: u64,
    /// Keyed by acceptance sequence, so iteration is acceptance order and an
    /// eviction is a removal, not a tombstone.
    executions: BTreeMap<u64, LiveExecution>,
    sequence_of: HashMap<ExecutionId, u64>,
    next_sequence: u64,
    /// What the execution records of a snapshot of this state take; kept as
    /// we go so that deciding whether to compact costs nothing.
    execution_footprint: Footprint,
}

/// How much room a run of lines takes: what compaction weighs a log against
/// the snapshot that would replace it by. Records alone are not enough: a few
/// records can carry megabytes of payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl Footprint {
    /// One line of `bytes` bytes, newline included.
    pub(crate) fn line(bytes: u64) -> Footprint {
        Footprint { records: 1, bytes }
    }
}

impl Add for Footprint {
    type Output = Footprint;

    fn add(self, other: Footprint) -> Footprint {
        Footprint {
            records: self.records + other.records,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl AddAssign for Footprint {
    fn add_assign(&mut self, other: Footprint) {
        *self = *self + other;
    }
}

impl Sub for Footprint {
    type Output = Footprint;

    fn sub(self, other: Footprint) -> Footprint {
        Footprint {
            records: self.records - other.records,
            bytes: self.bytes - other.bytes,
        }
    }
}

impl SubAssign for Footprint {
    fn sub_assign(&mut self, other: Footprint) {
        *self = *self - other;
    }
}

#[derive(Clone, Debug)]
struct LiveFunction {
    record: FunctionRecord,
    /// The length of its line in a snapshot; 0 when not sized.
    line_bytes: u64,
}

#[derive(Clone, Debug)]
struct LiveExecution {
    /// Its payload is empty once the execution finished.
    record: ExecutionRecord,
    /// The latest start; a snapshot keeps only this one.
    last_start: Option<Start>,
    finished: Option<FinishedRecord>,
    /// The lengths of its lines in a snapshot; 0 when not sized.
    lines: LineBytes,
}

/// The length of each line a snapshot writes for one execution.
#[derive(Clone, Copy, Debug, Default)]
struct LineBytes {
    accepted: u64,
    started: u64,
    finished: u64,
}

#[derive(Clone, Debug)]
struct Start {
    attempt: u32,
    worker_id: String,
    started_at_us: u64,
}

impl LiveExecution {
    fn footprint(&self) -> Footprint {
        let records = 1 + u64::from(self.last_start.is_some()) + u64::from(self.finished.is_some());
        let lines = self.lines;
        Footprint {
            records,
            bytes: lines.accepted + lines.started + lines.finished,
        }
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
    /// state as it was). Keeps the snapshot's size in records only; see
    /// [`apply_line`](Self::apply_line).
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
                if let Some(function) = self.functions.remove(&slot) {
                    self.function_bytes -= function.line_bytes;
                }
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
                self.execution_footprint.records += u64::from(first);
                Ok(())
            }
            Record::Finished { id, finished } => {
                let execution = self.execution_mut("finished", *id)?;
                if execution.finished.is_some() {
                    return Err(Ignored::AlreadyFinished(*id));
                }
                execution.finished = Some(finished.clone());
                // Nothing runs or shows the payload after the end, and a
                // finished execution may be retained for long.
                execution.record.payload = Bytes::new();
                self.execution_footprint.records += 1;
                Ok(())
            }
            Record::Evicted { id, .. } => {
                let sequence = self
                    .sequence_of
                    .remove(id)
                    .ok_or(Ignored::UnknownExecution {
                        kind: "evicted",
                        id: *id,
                    })?;
                if let Some(execution) = self.executions.remove(&sequence) {
                    self.execution_footprint -= execution.footprint();
                }
                Ok(())
            }
        }
    }

    /// As [`apply`](Self::apply), and also keeps the snapshot's size in bytes:
    /// `line_bytes` is the length of `record`'s line, newline included. The
    /// JSON Lines store has that length at hand (it just encoded or read the
    /// line), which is what keeps sizing cheap.
    pub(crate) fn apply_line(&mut self, record: &Record, line_bytes: u64) -> Result<(), Ignored> {
        self.apply(record)?;
        self.size_line(record, line_bytes);
        Ok(())
    }

    /// Records the length of the line of `record`, just applied, as the length
    /// of the snapshot line it stands for. Removals need nothing here: `apply`
    /// takes away what the removed records were sized at.
    fn size_line(&mut self, record: &Record, line_bytes: u64) {
        match record {
            Record::Function(function) => {
                let Some(live) = self
                    .function_slots
                    .get(&function.function_id)
                    .and_then(|slot| self.functions.get_mut(slot))
                else {
                    return;
                };
                self.function_bytes = self.function_bytes - live.line_bytes + line_bytes;
                live.line_bytes = line_bytes;
            }
            Record::Accepted(execution) => {
                self.resize_execution(execution.id, |live| live.lines.accepted = line_bytes);
            }
            Record::Started { id, .. } => {
                // Replaces the older start, which a snapshot no longer holds.
                self.resize_execution(*id, |live| live.lines.started = line_bytes);
            }
            Record::Finished { id, .. } => self.resize_execution(*id, |live| {
                live.lines.finished = line_bytes;
                // The acceptance is now written without its payload. Encoding
                // it again costs little, as the payload is gone; should it
                // fail, the old length only overstates the snapshot.
                let accepted = Record::Accepted(live.record.clone());
                if let Ok(bytes) = codec::encoded_len(&accepted) {
                    live.lines.accepted = bytes;
                }
            }),
            Record::FunctionDeleted { .. } | Record::Evicted { .. } => {}
        }
    }

    /// Changes the line lengths of execution `id`, keeping the total in step.
    fn resize_execution(&mut self, id: ExecutionId, change: impl FnOnce(&mut LiveExecution)) {
        let Some(execution) = self.live_execution(id) else {
            return;
        };
        let before = execution.footprint().bytes;
        change(execution);
        let after = execution.footprint().bytes;
        self.execution_footprint.bytes = self.execution_footprint.bytes - before + after;
    }

    fn register(&mut self, function: &FunctionRecord) {
        match self.function_slots.get(&function.function_id) {
            // Replaced in place; its size is updated by `size_line`.
            Some(slot) => {
                if let Some(live) = self.functions.get_mut(slot) {
                    live.record = function.clone();
                }
            }
            None => {
                let slot = self.next_function;
                self.next_function += 1;
                self.function_slots
                    .insert(function.function_id.clone(), slot);
                let live = LiveFunction {
                    record: function.clone(),
                    line_bytes: 0,
                };
                self.functions.insert(slot, live);
            }
        }
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
                lines: LineBytes::default(),
            },
        );
        self.execution_footprint.records += 1;
        Ok(())
    }

    fn execution_mut(
        &mut self,
        kind: &'static str,
        id: ExecutionId,
    ) -> Result<&mut LiveExecution, Ignored> {
        self.live_execution(id)
            .ok_or(Ignored::UnknownExecution { kind, id })
    }

    fn live_execution(&mut self, id: ExecutionId) -> Option<&mut LiveExecution> {
        let sequence = self.sequence_of.get(&id)?;
        self.executions.get_mut(sequence)
    }

    /// Ends execution `id` and takes it out of the live state, whole but for
    /// its payload, for the history. Refused as `apply` would refuse the
    /// `Finished` record.
    pub(crate) fn finish(
        &mut self,
        id: ExecutionId,
        finished: &FinishedRecord,
    ) -> Result<FinishedExecution, Ignored> {
        let execution = self.execution_mut("finished", id)?;
        if execution.finished.is_some() {
            return Err(Ignored::AlreadyFinished(id));
        }
        let sequence = self.sequence_of.remove(&id).unwrap_or_default();
        let Some(execution) = self.executions.remove(&sequence) else {
            return Err(Ignored::UnknownExecution {
                kind: "finished",
                id,
            });
        };
        self.execution_footprint -= execution.footprint();
        Ok(FinishedExecution {
            record: ExecutionRecord {
                payload: Bytes::new(),
                ..execution.record
            },
            finished: finished.clone(),
        })
    }

    /// Takes every finished execution out of the live state, in acceptance
    /// order (those a log from before the history left here).
    pub(crate) fn drain_finished(&mut self) -> Vec<FinishedExecution> {
        let done: Vec<u64> = self
            .executions
            .iter()
            .filter(|(_, execution)| execution.finished.is_some())
            .map(|(&sequence, _)| sequence)
            .collect();
        let mut drained = Vec::with_capacity(done.len());
        for sequence in done {
            let Some(execution) = self.executions.remove(&sequence) else {
                continue;
            };
            self.sequence_of.remove(&execution.record.id);
            self.execution_footprint -= execution.footprint();
            if let Some(finished) = execution.finished {
                drained.push(FinishedExecution {
                    record: execution.record,
                    finished,
                });
            }
        }
        drained
    }

    /// Whether `id` is a live execution.
    pub(crate) fn holds(&self, id: ExecutionId) -> bool {
        self.sequence_of.contains_key(&id)
    }

    /// Functions in registration order; a snapshot holds one record each.
    pub(crate) fn functions(&self) -> impl ExactSizeIterator<Item = &FunctionRecord> {
        self.functions.values().map(|live| &live.record)
    }

    /// What a snapshot of [`functions`](Self::functions) takes (bytes only as
    /// far as records came through [`apply_line`](Self::apply_line)).
    pub(crate) fn function_snapshot_footprint(&self) -> Footprint {
        Footprint {
            records: self.functions.len() as u64,
            bytes: self.function_bytes,
        }
    }

    /// What [`execution_snapshot`](Self::execution_snapshot) takes (bytes
    /// only as far as records came through [`apply_line`](Self::apply_line)).
    pub(crate) fn execution_snapshot_footprint(&self) -> Footprint {
        self.execution_footprint
    }

    /// Payload bytes held, to check that finished executions hold none.
    #[cfg(test)]
    pub(crate) fn held_payload_bytes(&self) -> usize {
        self.executions
            .values()
            .map(|execution| execution.record.payload.len())
            .sum()
    }

    /// Unfinished executions in acceptance order, as `load` reports them.
    pub(crate) fn recovered_executions(&self) -> Vec<RecoveredExecution> {
        self.executions
            .values()
            .filter(|execution| execution.finished.is_none())
            .map(|execution| RecoveredExecution {
                record: execution.record.clone(),
                attempts_started: execution.last_start.as_ref().map_or(0, |s| s.attempt),
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
    use taskforge_core::{Policy, Terminal};

    fn accepted(id: u64) -> Record {
        accepted_with(id, Bytes::new())
    }

    fn accepted_with(id: u64, payload: Bytes) -> Record {
        Record::Accepted(ExecutionRecord {
            idempotency: None,
            id: ExecutionId(id),
            function_id: "f".into(),
            payload,
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

    fn finished_record() -> FinishedRecord {
        FinishedRecord {
            terminal: Terminal::Cancelled,
            attempt: 0,
            worker_id: String::new(),
            started_at_us: 0,
            finished_at_us: 1,
            logs: String::new(),
        }
    }

    fn finished(id: u64) -> Record {
        Record::Finished {
            id: ExecutionId(id),
            finished: finished_record(),
        }
    }

    fn function(id: &str, name: &str) -> Record {
        Record::Function(FunctionRecord {
            max_memory_bytes: 0,
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

    fn line_len(record: &Record) -> u64 {
        let mut line = Vec::new();
        codec::encode(record, &mut line).expect("records always encode");
        line.len() as u64
    }

    /// As the JSON Lines store loads: sized by the lines' lengths.
    fn load_lines(records: &[Record]) -> LiveState {
        let mut live = LiveState::default();
        for record in records {
            let _ = live.apply_line(record, line_len(record));
        }
        live
    }

    fn footprint_of(records: impl IntoIterator<Item = Record>) -> Footprint {
        records
            .into_iter()
            .map(|record| Footprint::line(line_len(&record)))
            .fold(Footprint::default(), Footprint::add)
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
        assert_eq!(live.execution_snapshot_footprint().records, 4);
        live.apply(&Record::Evicted {
            id: ExecutionId(1),
            filed: None,
        })
        .expect("1 is known");
        assert_eq!(live.execution_snapshot_footprint().records, 1);
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
    fn a_finished_execution_holds_no_payload_and_a_pending_one_keeps_it() {
        let payload = Bytes::from(vec![b'x'; 1 << 20]);
        let mut records = Vec::new();
        for id in 0..300 {
            records.push(accepted_with(id, payload.clone()));
            if id >= 10 {
                records.push(finished(id));
            }
        }
        let mut live = load(&records);
        assert_eq!(live.held_payload_bytes(), 10 * payload.len());
        for execution in live.recovered_executions() {
            assert_eq!(execution.record.payload, payload);
        }
        // And a snapshot, written without those payloads, loads the same.
        let snapshot: Vec<_> = live.execution_snapshot().collect();
        let mut again = load(&snapshot);
        assert_eq!(again.recovered_executions(), live.recovered_executions());
        let finished = live.drain_finished();
        assert_eq!(finished.len(), 290);
        assert!(finished.iter().all(|done| done.record.payload.is_empty()));
        assert_eq!(again.drain_finished(), finished);
    }

    #[test]
    fn a_finish_hands_the_execution_over_whole_and_forgets_it() {
        let mut live = load_lines(&[
            accepted_with(1, Bytes::from_static(b"payload")),
            started(1, 1),
            started(1, 2),
            accepted(2),
        ]);
        let done = live
            .finish(ExecutionId(1), &finished_record())
            .expect("1 is live");
        assert_eq!(done.record.payload, Bytes::new());
        assert_eq!(done.finished, finished_record());
        assert!(!live.holds(ExecutionId(1)));
        assert_eq!(
            live.finish(ExecutionId(1), &finished_record()),
            Err(Ignored::UnknownExecution {
                kind: "finished",
                id: ExecutionId(1)
            })
        );
        // The snapshot no longer counts it.
        let snapshot: Vec<_> = live.execution_snapshot().collect();
        assert_eq!(snapshot, [accepted(2)]);
        assert_eq!(
            live.execution_snapshot_footprint(),
            footprint_of(live.execution_snapshot())
        );
    }

    #[test]
    fn the_snapshot_footprint_is_what_the_snapshot_takes() {
        let live = load_lines(&[
            function("a", "one"),
            function("b", "two"),
            function("a", "a longer name than before"),
            Record::FunctionDeleted {
                function_id: "b".into(),
            },
            accepted_with(1, Bytes::from_static(b"a payload dropped at the end")),
            started(1, 1),
            started(1, 2),
            accepted_with(2, Bytes::from_static(b"kept while pending")),
            started(2, 1),
            finished(1),
            accepted(3),
            finished(3),
            Record::Evicted {
                id: ExecutionId(3),
                filed: None,
            },
        ]);
        let functions = live.functions().cloned().map(Record::Function);
        assert_eq!(live.function_snapshot_footprint(), footprint_of(functions));
        assert_eq!(
            live.execution_snapshot_footprint(),
            footprint_of(live.execution_snapshot())
        );
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
            Record::Evicted {
                id: ExecutionId(2),
                filed: None,
            },
        ]);
        let snapshot: Vec<_> = live.execution_snapshot().collect();
        assert_eq!(
            snapshot.len() as u64,
            live.execution_snapshot_footprint().records
        );
        assert_eq!(snapshot, [accepted(1), started(1, 2), accepted(3)]);
        assert_eq!(
            load(&snapshot).recovered_executions(),
            live.recovered_executions()
        );
    }
}

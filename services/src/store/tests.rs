//! Tests of the JSON Lines store as a whole: every record kind through the
//! files, torn and corrupt lines, compaction, the history's segments, and
//! crashes and faults on the crash-model filesystem, ending with a property
//! test over random histories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use taskforge_core::{ExecutionId, Policy, Terminal};

use super::crash_fs::{CrashFs, Fault};
use super::fs::tests::TempDir;
use super::live::LiveState;
use super::*;

const DIR: &str = "/data";

fn executions_log() -> PathBuf {
    PathBuf::from(DIR).join("executions.jsonl")
}

fn history_dir() -> PathBuf {
    PathBuf::from(DIR).join("history")
}

fn log_size(fs: &CrashFs) -> u64 {
    let log = fs.read(&executions_log()).ok().flatten();
    log.map_or(0, |bytes| bytes.len() as u64)
}

fn reload(fs: &CrashFs) -> Result<(JsonlStore, Recovered), StoreError> {
    let mut store = JsonlStore::open(Arc::new(fs.clone()), PathBuf::from(DIR))?;
    let recovered = store.load()?;
    Ok((store, recovered))
}

fn function(id: &str, code: &[u8]) -> Record {
    Record::Function(FunctionRecord {
        max_memory_bytes: 0,
        function_id: id.into(),
        name: format!("{id}-name"),
        language: "builtin".into(),
        code: Bytes::copy_from_slice(code),
        timeout_ms: 2_500,
        max_attempts: 4,
        created_at_us: 11,
    })
}

fn execution(id: u64, payload: &[u8]) -> ExecutionRecord {
    ExecutionRecord {
        idempotency: None,
        id: ExecutionId(id),
        function_id: "f".into(),
        payload: Bytes::copy_from_slice(payload),
        policy: Policy {
            max_attempts: 3,
            timeout: Duration::from_millis(1_500),
            schedule_to_start: Some(Duration::from_secs(60)),
        },
        created_at_us: 1_000 + id,
    }
}

fn accepted(id: u64, payload: &[u8]) -> Record {
    Record::Accepted(execution(id, payload))
}

fn started(id: u64, attempt: u32) -> Record {
    Record::Started {
        id: ExecutionId(id),
        attempt,
        worker_id: format!("worker-{attempt}"),
        started_at_us: 2_000 + u64::from(attempt),
    }
}

fn finished_record(terminal: Terminal) -> FinishedRecord {
    FinishedRecord {
        terminal,
        attempt: 1,
        worker_id: "worker-1".into(),
        started_at_us: 2_001,
        finished_at_us: 3_000,
        logs: String::new(),
    }
}

fn finished(id: u64, terminal: Terminal) -> Record {
    Record::Finished {
        id: ExecutionId(id),
        finished: finished_record(terminal),
    }
}

/// Retention forgets an execution the test never learnt the location of
/// (a live one, or one whose history line is left to come back).
fn evicted(id: u64) -> Record {
    Record::Evicted {
        id: ExecutionId(id),
        filed: None,
    }
}

fn append_all(store: &mut JsonlStore, records: &[Record]) -> Result<(), StoreError> {
    records.iter().try_for_each(|record| store.append(record))
}

/// The live executions' ids, in acceptance order.
fn ids(recovered: &Recovered) -> Vec<u64> {
    recovered.executions.iter().map(|e| e.record.id.0).collect()
}

/// The filed executions' ids, in filing order.
fn filed_ids(recovered: &Recovered) -> Vec<u64> {
    recovered.history.iter().map(|f| f.id.0).collect()
}

/// An execution as a load shows it: live, or finished and read back from
/// the history.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Live {
        record: ExecutionRecord,
        attempts_started: u32,
    },
    Finished(FinishedExecution),
}

/// Functions, and executions by id.
type State = (Vec<FunctionRecord>, BTreeMap<u64, Seen>);

/// Everything a load found, the history read back through the store.
fn state(store: &dyn Store, recovered: &Recovered) -> State {
    let mut executions = BTreeMap::new();
    for execution in &recovered.executions {
        let seen = Seen::Live {
            record: execution.record.clone(),
            attempts_started: execution.attempts_started,
        };
        executions.insert(execution.record.id.0, seen);
    }
    let history = store.history();
    for filed in &recovered.history {
        let done = history
            .read(filed.id, filed.location)
            .expect("a filed execution reads back")
            .expect("a filed execution is there");
        assert_eq!(filed.status, done.finished.terminal.status());
        assert_eq!(filed.attempt, done.finished.attempt);
        assert_eq!(filed.function_id.as_ref(), done.record.function_id);
        let previous = executions.insert(filed.id.0, Seen::Finished(done));
        assert_eq!(previous, None, "{} is both live and filed", filed.id);
    }
    (recovered.functions.clone(), executions)
}

/// Every kind of record, with bytes that are and are not UTF-8, and every
/// terminal state.
fn every_kind() -> Vec<Record> {
    vec![
        function("f", b"echo"),
        function("g", &[0xde, 0xad, 0xbe, 0xef]),
        accepted(1, br#"{"name":"Ada","a":1,"b":2}"#),
        accepted(2, &[0xff, 0xfe, 0x00, b'\n']),
        Record::Accepted(ExecutionRecord {
            payload: Bytes::new(),
            policy: Policy {
                max_attempts: 1,
                timeout: Duration::ZERO,
                schedule_to_start: None,
            },
            ..execution(3, b"")
        }),
        accepted(4, b"line one\nline \"two\"\t\\"),
        accepted(5, b"evicted soon"),
        accepted(6, &[0xc3, 0x28, b'\n']),
        started(1, 1),
        started(2, 1),
        started(2, 2),
        finished(
            1,
            Terminal::Completed {
                output: Bytes::from_static(&[0x80, 0x81]),
            },
        ),
        finished(
            2,
            Terminal::Failed {
                error: "worker lost 3 times".into(),
                output: Bytes::from_static("partial ✓".as_bytes()),
            },
        ),
        finished(3, Terminal::Cancelled),
        finished(
            5,
            Terminal::Completed {
                output: Bytes::new(),
            },
        ),
        evicted(5),
    ]
}

fn expected_every_kind() -> State {
    let Record::Accepted(third) = &every_kind()[4] else {
        unreachable!("the fifth record is the third acceptance");
    };
    let live = |record| Seen::Live {
        record,
        attempts_started: 0,
    };
    // Finished executions are filed without their payload.
    let done = |record: ExecutionRecord, terminal| {
        Seen::Finished(FinishedExecution {
            record: ExecutionRecord {
                payload: Bytes::new(),
                ..record
            },
            finished: finished_record(terminal),
        })
    };
    let Record::Function(f) = function("f", b"echo") else {
        unreachable!()
    };
    let Record::Function(g) = function("g", &[0xde, 0xad, 0xbe, 0xef]) else {
        unreachable!()
    };
    let executions = BTreeMap::from([
        (
            1,
            done(
                execution(1, b""),
                Terminal::Completed {
                    output: Bytes::from_static(&[0x80, 0x81]),
                },
            ),
        ),
        (
            2,
            done(
                execution(2, b""),
                Terminal::Failed {
                    error: "worker lost 3 times".into(),
                    output: Bytes::from_static("partial ✓".as_bytes()),
                },
            ),
        ),
        (3, done(third.clone(), Terminal::Cancelled)),
        (4, live(execution(4, b"line one\nline \"two\"\t\\"))),
        // Evicted, but evictions are not written: retention forgets it
        // again at the next start.
        (
            5,
            done(
                execution(5, b""),
                Terminal::Completed {
                    output: Bytes::new(),
                },
            ),
        ),
        (6, live(execution(6, &[0xc3, 0x28, b'\n']))),
    ]);
    (vec![f, g], executions)
}

fn round_trip(fs: Arc<dyn FileSystem>, dir: PathBuf) -> Result<(), StoreError> {
    let mut store = JsonlStore::open(Arc::clone(&fs), dir.clone())?;
    assert_eq!(store.load()?, Recovered::default());
    append_all(&mut store, &every_kind())?;
    store.sync()?;
    drop(store);

    let mut store = JsonlStore::open(Arc::clone(&fs), dir.clone())?;
    let recovered = store.load()?;
    assert_eq!(recovered.warnings, Vec::<String>::new());
    assert_eq!(state(&store, &recovered), expected_every_kind());

    // And once more through a snapshot.
    store.compact()?;
    drop(store);
    let mut store = JsonlStore::open(fs, dir)?;
    let recovered = store.load()?;
    assert_eq!(state(&store, &recovered), expected_every_kind());
    Ok(())
}

#[test]
fn every_record_kind_round_trips_through_the_files() -> Result<(), StoreError> {
    round_trip(Arc::new(CrashFs::new()), PathBuf::from(DIR))
}

#[test]
fn every_record_kind_round_trips_on_the_real_filesystem() -> Result<(), StoreError> {
    let dir = TempDir::new("round-trip");
    round_trip(Arc::new(StdFileSystem), dir.0.join("nested").join("data"))
}

#[test]
fn a_torn_last_line_is_skipped_reported_and_cleaned_up() -> Result<(), StoreError> {
    let fragments: [&[u8]; 3] = [
        br#"{"type":"accepted","id":"00000000000000"#, // no newline
        b"\0\0\0\0",                                   // a tail the crash zero-filled
        b"{\"type\":\"evicted\",\"id\":\"nonsense\"}\n", // complete, but unreadable
    ];
    for fragment in fragments {
        let fs = CrashFs::new();
        let (mut store, _) = reload(&fs)?;
        append_all(&mut store, &[accepted(1, b"a"), accepted(2, b"b")])?;
        store.sync()?;
        drop(store);
        fs.append_durably(&executions_log(), fragment);

        let (mut store, recovered) = reload(&fs)?;
        assert_eq!(ids(&recovered), [1, 2]);
        assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
        let warning = &recovered.warnings[0];
        assert!(
            warning.starts_with("/data/executions.jsonl:3: skipped a"),
            "{warning}"
        );
        assert!(warning.contains("last line"), "{warning}");

        // The next record lands on a line of its own.
        store.append(&accepted(3, b"c"))?;
        store.sync()?;
        drop(store);
        let (_, recovered) = reload(&fs)?;
        assert_eq!(recovered.warnings, Vec::<String>::new());
        assert_eq!(ids(&recovered), [1, 2, 3]);
    }
    Ok(())
}

#[test]
fn a_corrupt_line_in_the_middle_is_an_error_naming_file_and_line() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    store.append(&accepted(1, b"a"))?;
    store.sync()?;
    drop(store);
    fs.append_durably(&executions_log(), b"{\"type\":\"accepted\",\"id\":\n");
    fs.append_durably(
        &executions_log(),
        b"{\"type\":\"evicted\",\"id\":\"0000000000000001\"}\n",
    );
    let before = fs.read(&executions_log()).ok().flatten();

    let error = reload(&fs)
        .map(|_| ())
        .expect_err("a damaged middle line must stop the load");
    assert!(
        matches!(&error, StoreError::Corrupt { line: 2, path, .. } if *path == executions_log()),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("/data/executions.jsonl:2: EOF while parsing a value"),
        "{message}"
    );
    assert_eq!(
        fs.read(&executions_log()).ok().flatten(),
        before,
        "left as found"
    );
    Ok(())
}

/// Appends `records`, syncs, and returns where the executions they finished
/// were filed.
fn commit_filed(
    store: &mut JsonlStore,
    records: &[Record],
) -> Result<BTreeMap<u64, Location>, StoreError> {
    append_all(store, records)?;
    store.sync()?;
    Ok(store
        .take_filed()
        .into_iter()
        .map(|(id, location)| (id.0, location))
        .collect())
}

fn segments(fs: &CrashFs) -> Vec<PathBuf> {
    fs.list(&history_dir())
}

#[test]
fn compaction_keeps_exactly_the_live_state_and_shrinks_the_log() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (store, _) = reload(&fs)?;
    // Small segments, so that retention empties some.
    let mut store = store.with_segment_bytes(8 << 10);
    append_all(
        &mut store,
        &[
            function("f", b"echo"),
            function("g", b"sleep"),
            function("f", b"fail"),
        ],
    )?;
    let mut filed = BTreeMap::new();
    for id in 0..3_000 {
        let terminal = Terminal::Completed {
            output: Bytes::from(format!("out-{id}")),
        };
        // Started in one group and ended in the next, so the log holds
        // their records (one group for both would leave it empty).
        commit_filed(&mut store, &[accepted(id, b"payload"), started(id, 1)])?;
        let mut records = vec![finished(id, terminal)];
        if id >= 10 {
            // Retention drops all but the newest few.
            records.push(Record::Evicted {
                id: ExecutionId(id - 10),
                filed: filed.get(&(id - 10)).copied(),
            });
        }
        filed.extend(commit_filed(&mut store, &records)?);
    }
    assert_eq!(filed.len(), 3_000, "every end was filed");
    store.append(&accepted(5_000, b"still pending"))?;
    store.sync()?;
    assert!(store.wants_compaction());
    let segments_before = segments(&fs).len();
    assert!(segments_before > 50, "{segments_before} segments");
    let size_before = log_size(&fs);
    store.compact()?;
    assert!(!store.wants_compaction());
    let log = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(
        log.len() as u64 * 100 < size_before,
        "{size_before} bytes before, {} after",
        log.len()
    );
    assert_eq!(
        log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(),
        1,
        "only the pending execution"
    );
    assert_eq!(
        fs.list(Path::new(DIR)),
        [
            PathBuf::from("/data/executions.jsonl"),
            PathBuf::from("/data/functions.jsonl")
        ],
        "no temporary file left behind"
    );
    // The segments retention emptied are gone; the newest ones stay.
    let segments_after = segments(&fs).len();
    assert!(
        (1..=3).contains(&segments_after),
        "{segments_after} segments of {segments_before} left"
    );

    // Appends go on after the snapshot; a crash keeps both.
    append_all(&mut store, &[started(5_000, 1)])?;
    store.sync()?;
    fs.crash(0);
    let (store, after) = reload(&fs)?;
    assert_eq!(after.warnings, Vec::<String>::new());
    assert_eq!(ids(&after), [5_000]);
    assert_eq!(after.executions[0].attempts_started, 1);
    let kept = filed_ids(&after);
    assert!(
        kept.len() < 100,
        "{} filed executions came back",
        kept.len()
    );
    assert!(
        kept.ends_with(&(2_990..3_000).collect::<Vec<_>>()),
        "the ten retained are there: {kept:?}"
    );
    let (_, executions) = state(&store, &after);
    assert_eq!(
        executions.get(&2_999),
        Some(&Seen::Finished(FinishedExecution {
            record: execution(2_999, b""),
            finished: finished_record(Terminal::Completed {
                output: Bytes::from("out-2999"),
            }),
        }))
    );
    Ok(())
}

#[test]
fn a_filed_execution_is_read_back_until_its_segment_is_deleted() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (store, _) = reload(&fs)?;
    let mut store = store.with_segment_bytes(1);
    let reader = store.history();
    let filed = commit_filed(
        &mut store,
        &[accepted(1, b"a"), finished(1, Terminal::Cancelled)],
    )?;
    let location = filed[&1];
    let read = reader.read(ExecutionId(1), location)?;
    assert_eq!(
        read.map(|done| done.finished.terminal),
        Some(Terminal::Cancelled)
    );
    // A location read as another execution's is an error, not a wrong answer.
    assert!(matches!(
        reader.read(ExecutionId(2), location),
        Err(StoreError::Misplaced { .. })
    ));
    // A second execution goes to a new segment (one byte each); evicting the
    // first empties its segment, and the next compaction deletes it.
    commit_filed(
        &mut store,
        &[accepted(2, b"b"), finished(2, Terminal::Cancelled)],
    )?;
    store.append(&Record::Evicted {
        id: ExecutionId(1),
        filed: Some(location),
    })?;
    store.sync()?;
    assert_eq!(segments(&fs).len(), 2);
    store.compact()?;
    assert_eq!(segments(&fs).len(), 1);
    assert_eq!(reader.read(ExecutionId(1), location)?, None, "gone");
    drop(store);
    let (_, recovered) = reload(&fs)?;
    assert_eq!(filed_ids(&recovered), [2]);
    Ok(())
}

/// An execution accepted and finished before one sync is written to the
/// history alone: its lines never reach the log, and it loads as filed.
#[test]
fn an_execution_that_ends_in_the_group_that_accepted_it_skips_the_log() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    commit(&mut store, &[accepted(1, b"long"), started(1, 1)])?;
    let before = log_size(&fs);
    commit(
        &mut store,
        &[
            accepted(2, b"quick"),
            started(2, 1),
            accepted(3, b"pending"),
            finished(2, Terminal::Cancelled),
        ],
    )?;
    let log = String::from_utf8(fs.read(&executions_log()).unwrap().unwrap()).unwrap();
    assert!(!log.contains(&ExecutionId(2).to_string()), "{log}");
    assert!(log.contains(&ExecutionId(3).to_string()), "{log}");
    assert!(log_size(&fs) > before);

    let (_, recovered) = reload(&fs)?;
    assert_eq!(ids(&recovered), vec![1, 3]);
    assert_eq!(filed_ids(&recovered), vec![2]);
    Ok(())
}

#[test]
fn a_snapshot_larger_than_a_write_chunk_is_written_whole() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    let big = vec![b'x'; 300 << 10];
    for id in 0..8 {
        store.append(&accepted(id, &big))?;
        if id >= 4 {
            store.append(&evicted(id - 4))?;
        }
    }
    store.compact()?;
    fs.crash(0);
    let (_, recovered) = reload(&fs)?;
    assert_eq!(ids(&recovered), [4, 5, 6, 7]); // 1.2 MB in four lines
    assert!(recovered.executions.iter().all(|e| e.record.payload == big));
    Ok(())
}

/// Appends, syncs and compacts when asked to, as the scheduler's committer
/// does.
fn commit(store: &mut JsonlStore, records: &[Record]) -> Result<(), StoreError> {
    append_all(store, records)?;
    store.sync()?;
    if store.wants_compaction() {
        store.compact()?;
    }
    Ok(())
}

#[test]
fn large_payloads_make_the_log_compact_by_bytes() -> Result<(), StoreError> {
    // The audit's case: failed executions with 1 MiB payloads, ten retained.
    // By record count the log never compacts (four records an execution);
    // by bytes it stays near the slack, as the live state holds no payload.
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    let big = vec![b'x'; 1 << 20];
    let failed = || Terminal::Failed {
        error: "boom".into(),
        output: Bytes::from_static(b"partial"),
    };
    let bound = COMPACTION_MIN_SLACK_BYTES + (64 << 10);
    for id in 0..300 {
        let mut records = vec![accepted(id, &big), started(id, 1), finished(id, failed())];
        if id >= 10 {
            records.push(evicted(id - 10));
        }
        commit(&mut store, &records)?;
        let size = log_size(&fs);
        assert!(size <= bound, "after {id}: {size} bytes in the log");
    }
    // Pending executions keep their payload through compaction and restart.
    commit(&mut store, &[accepted(500, &big), accepted(501, b"small")])?;
    store.compact()?;
    drop(store);

    let (_, recovered) = reload(&fs)?;
    assert_eq!(recovered.warnings, Vec::<String>::new());
    assert_eq!(ids(&recovered), [500, 501]);
    assert_eq!(recovered.executions[0].record.payload, big);
    assert_eq!(recovered.executions[1].record.payload, &b"small"[..]);
    assert_eq!(filed_ids(&recovered).len(), 300);
    assert!(log_size(&fs) < (2 << 20) + (16 << 10), "{}", log_size(&fs));
    Ok(())
}

#[test]
fn compaction_drops_the_payloads_of_finished_executions() -> Result<(), StoreError> {
    // As many records as a snapshot holds, yet far more bytes: compaction
    // must not take the log for a snapshot already.
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    let big = vec![b'z'; 256 << 10];
    append_all(
        &mut store,
        &[accepted(1, &big), finished(1, Terminal::Cancelled)],
    )?;
    store.sync()?;
    store.compact()?;
    let log = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(log.len() < 1 << 10, "{} bytes", log.len());
    drop(store);
    let (store, recovered) = reload(&fs)?;
    assert_eq!(ids(&recovered), Vec::<u64>::new());
    assert_eq!(filed_ids(&recovered), [1]);
    let (_, executions) = state(&store, &recovered);
    assert_eq!(
        executions[&1],
        Seen::Finished(FinishedExecution {
            record: execution(1, b""),
            finished: finished_record(Terminal::Cancelled),
        })
    );
    Ok(())
}

#[test]
fn a_log_is_read_in_pieces_and_a_torn_tail_is_cut_back() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    let big = vec![b'y'; 512 << 10];
    for id in 0..24 {
        store.append(&accepted(id, &big))?;
    }
    store.sync()?;
    drop(store);
    let clean = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(clean.len() > 12 << 20);
    fs.append_durably(&executions_log(), br#"{"type":"accepted","id":"0000"#);

    let (_, recovered) = reload(&fs)?;
    // Neither reading the log nor cutting off its torn tail took it whole.
    assert!(fs.largest_read() <= 1 << 20, "{}", fs.largest_read());
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
    assert!(
        recovered.warnings[0].starts_with("/data/executions.jsonl:25: skipped a torn last line"),
        "{}",
        recovered.warnings[0]
    );
    assert_eq!(ids(&recovered), (0..24).collect::<Vec<_>>());
    assert!(recovered.executions.iter().all(|e| e.record.payload == big));
    assert_eq!(
        fs.read(&executions_log()).ok().flatten(),
        Some(clean),
        "cut back to exactly the lines before the torn one"
    );

    fs.crash(0);
    let (_, again) = reload(&fs)?;
    assert_eq!(again.warnings, Vec::<String>::new());
    assert_eq!(again.executions, recovered.executions);
    Ok(())
}

#[test]
fn the_first_sync_in_a_new_data_directory_survives_a_crash() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    store.append(&function("f", b"echo"))?;
    store.append(&accepted(1, b"a"))?;
    store.sync()?;
    fs.crash(0);
    let (_, recovered) = reload(&fs)?;
    assert_eq!(recovered.functions.len(), 1);
    assert_eq!(ids(&recovered), [1]);
    Ok(())
}

#[test]
fn synced_records_survive_a_crash_and_unsynced_ones_never_break_start() -> Result<(), StoreError> {
    // A crash in the middle of a sync: the bytes were written, the fsync never
    // returned. Any prefix of them may survive, cut anywhere, in each file.
    let unsynced = [
        accepted(3, b"c"),
        started(3, 1),
        finished(1, Terminal::Cancelled),
    ];
    for keep in [0, 1, 30, 100, 150, 200, usize::MAX] {
        let fs = CrashFs::new();
        let mut model = Model::default();
        let (mut store, _) = reload(&fs)?;
        // The first end filed makes the history's segment (and its name)
        // durable.
        let synced = [
            accepted(0, b"z"),
            finished(0, Terminal::Cancelled),
            accepted(1, b"a"),
            accepted(2, b"b"),
        ];
        for record in synced {
            store.append(&record)?;
            model.append(&record);
        }
        store.sync()?;
        model.synced();
        for record in &unsynced {
            store.append(record)?;
            model.append(record);
        }
        fs.fail_next(Fault::Sync);
        assert!(store.sync().is_err());
        fs.crash(keep);

        let (store, recovered) = reload(&fs)?;
        let survived = model
            .recovered(&store, &recovered)
            .unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        if keep == 0 {
            assert_eq!(survived, 0, "keep {keep}");
        }
        if keep == usize::MAX {
            // The history's fsync failed, so the logs were never written;
            // the history's line was, and all of it survived.
            assert_eq!(survived, 1, "keep {keep}");
        }
    }
    Ok(())
}

#[test]
fn a_crash_during_compaction_leaves_the_old_log() -> Result<(), StoreError> {
    for fault in [Fault::Create, Fault::Rename, Fault::SyncDir] {
        let fs = CrashFs::new();
        let (mut store, _) = reload(&fs)?;
        append_all(
            &mut store,
            &[accepted(1, b"a"), accepted(2, b"b"), evicted(1)],
        )?;
        store.sync()?;
        store.append(&accepted(3, b"never synced"))?;
        fs.fail_next(fault);
        assert!(store.compact().is_err(), "{fault:?}");
        fs.crash(0);

        let (mut store, recovered) = reload(&fs)?;
        assert_eq!(recovered.warnings, Vec::<String>::new(), "{fault:?}");
        assert_eq!(ids(&recovered), [2], "{fault:?}");
        // A stray temporary file is ignored, then replaced by the next
        // compaction.
        store.compact()?;
        assert_eq!(fs.list(std::path::Path::new(DIR)).len(), 2, "{fault:?}");
    }
    Ok(())
}

#[test]
fn after_a_failed_compaction_the_next_sync_makes_everything_durable() -> Result<(), StoreError> {
    for fault in [Fault::Create, Fault::Rename, Fault::SyncDir] {
        let fs = CrashFs::new();
        let (mut store, _) = reload(&fs)?;
        append_all(&mut store, &[accepted(1, b"a"), evicted(1)])?;
        store.sync()?;
        store.append(&accepted(2, b"b"))?;
        fs.fail_next(fault);
        assert!(store.compact().is_err(), "{fault:?}");
        store.append(&accepted(3, b"c"))?;
        store.sync()?;
        fs.crash(0);
        let (_, recovered) = reload(&fs)?;
        assert_eq!(ids(&recovered), [2, 3], "{fault:?}");
    }
    Ok(())
}

#[test]
fn a_failed_write_is_repaired_by_rewriting_the_log() -> Result<(), StoreError> {
    for fault in [Fault::Append, Fault::Sync] {
        let fs = CrashFs::new();
        let (mut store, _) = reload(&fs)?;
        append_all(&mut store, &[accepted(1, b"a"), accepted(2, b"b")])?;
        store.sync()?;
        append_all(&mut store, &[accepted(3, b"c"), accepted(4, b"d")])?;
        fs.fail_next(fault);
        let error = store.sync().expect_err("the fault fails the sync");
        assert!(
            error
                .to_string()
                .starts_with("cannot append to /data/executions.jsonl: injected fault"),
            "{error}"
        );
        // Appending after the half-written batch would glue a record onto a
        // fragment in the middle of the file: the next sync must not.
        store.append(&accepted(5, b"e"))?;
        store.sync()?;
        drop(store);

        let (_, recovered) = reload(&fs)?;
        assert_eq!(recovered.warnings, Vec::<String>::new(), "{fault:?}");
        assert_eq!(ids(&recovered), [1, 2, 3, 4, 5], "{fault:?}");
    }
    Ok(())
}

#[test]
fn records_that_change_nothing_are_not_written() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    // Synced on its own: an execution that ended in the group that accepted
    // it would not be in the log at all.
    store.append(&accepted(1, b"a"))?;
    store.sync()?;
    append_all(
        &mut store,
        &[
            accepted(1, b"twice"),
            finished(1, Terminal::Cancelled),
            finished(
                1,
                Terminal::Completed {
                    output: Bytes::new(),
                },
            ),
            started(1, 1),
            started(7, 1),
            evicted(8),
        ],
    )?;
    store.sync()?;
    let log = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), 1);
    let filed = store.take_filed();
    assert_eq!(filed.len(), 1, "{filed:?}");
    drop(store);
    let (store, recovered) = reload(&fs)?;
    assert_eq!(recovered.warnings, Vec::<String>::new());
    let (_, executions) = state(&store, &recovered);
    assert_eq!(
        executions[&1],
        Seen::Finished(FinishedExecution {
            record: execution(1, b""),
            finished: finished_record(Terminal::Cancelled),
        })
    );
    Ok(())
}

#[test]
fn records_for_unknown_executions_in_a_file_are_skipped_with_a_warning() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    fs.create_dir_all(std::path::Path::new(DIR))
        .map_err(|e| StoreError::io("create", std::path::Path::new(DIR), e))?;
    fs.append_durably(
        &executions_log(),
        b"{\"type\":\"evicted\",\"id\":\"0000000000000009\"}\n",
    );
    let (_, recovered) = reload(&fs)?;
    assert_eq!(
        recovered.warnings,
        ["/data/executions.jsonl:1: evicted record for unknown execution 0000000000000009 ignored"]
    );
    Ok(())
}

#[test]
fn the_store_must_be_loaded_once_before_use() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let mut store = JsonlStore::open(Arc::new(fs), PathBuf::from(DIR))?;
    assert!(matches!(
        store.append(&evicted(1)),
        Err(StoreError::NotLoaded)
    ));
    assert!(matches!(store.sync(), Err(StoreError::NotLoaded)));
    assert!(matches!(store.compact(), Err(StoreError::NotLoaded)));
    store.load()?;
    assert!(matches!(store.load(), Err(StoreError::AlreadyLoaded)));
    Ok(())
}

// The property: whatever happens — appends, syncs, compactions, failed
// operations, crashes tearing unsynced writes anywhere — a restart never fails,
// and loads exactly the records that were synced plus some prefix of those
// that were not, per file (the history and the two logs are synced one after
// the other).

#[derive(Clone, Debug)]
enum Op {
    Append(Record),
    Sync,
    Compact,
    Fail(Fault),
    Crash { keep_unsynced: usize },
}

/// What the store writes to each of its files.
#[derive(Clone, Debug, Default)]
struct Files {
    functions: Vec<Record>,
    log: Vec<Record>,
    history: Vec<FinishedExecution>,
}

/// The store as it runs: decides what each record does, and where it goes.
#[derive(Debug, Default)]
struct Running {
    functions: LiveState,
    /// Unfinished executions: acceptance, latest start.
    live: BTreeMap<u64, (ExecutionRecord, u32)>,
    /// Filed executions, with their time of acceptance.
    filed: BTreeMap<u64, u64>,
}

/// A model of the store: what it wrote where, what of that is durable, and
/// what a load of durable files amounts to.
#[derive(Debug, Default)]
struct Model {
    running: Running,
    durable: Files,
    pending: Files,
    /// Filed, then forgotten by retention (id, time of acceptance):
    /// evictions are not written, so a restart may bring them back
    /// (retention forgets them again).
    forgettable: BTreeSet<(u64, u64)>,
    /// Filed executions (id, time of acceptance) a restart did not bring
    /// back: their segments were deleted, they stay gone.
    gone: BTreeSet<(u64, u64)>,
}

impl Model {
    /// The store takes `record`.
    fn append(&mut self, record: &Record) {
        let running = &mut self.running;
        match record {
            Record::Function(_) | Record::FunctionDeleted { .. } => {
                if running.functions.apply(record).is_ok() {
                    self.pending.functions.push(record.clone());
                }
            }
            Record::Accepted(accepted) => {
                let id = accepted.id.0;
                if !running.live.contains_key(&id) {
                    // An id is reused only once retention forgot it (the
                    // scheduler never reuses one it holds): the old one may
                    // come back at a restart, as any forgotten one.
                    if let Some(created_at_us) = running.filed.remove(&id) {
                        self.forgettable.insert((id, created_at_us));
                    }
                    running.live.insert(id, (accepted.clone(), 0));
                    self.pending.log.push(record.clone());
                }
            }
            Record::Started { id, attempt, .. } => {
                if let Some((_, latest)) = running.live.get_mut(&id.0) {
                    if *attempt > *latest {
                        *latest = *attempt;
                        self.pending.log.push(record.clone());
                    }
                }
            }
            Record::Finished { id, finished } => {
                if let Some((accepted, _)) = running.live.remove(&id.0) {
                    running.filed.insert(id.0, accepted.created_at_us);
                    self.pending.history.push(FinishedExecution {
                        record: ExecutionRecord {
                            payload: Bytes::new(),
                            ..accepted
                        },
                        finished: finished.clone(),
                    });
                }
            }
            Record::Evicted { id, .. } => {
                if running.live.remove(&id.0).is_some() {
                    self.pending.log.push(record.clone());
                } else if let Some(&created_at_us) = running.filed.get(&id.0) {
                    self.forgettable.insert((id.0, created_at_us));
                }
            }
        }
    }

    fn synced(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.durable.functions.extend(pending.functions);
        self.durable.log.extend(pending.log);
        self.durable.history.extend(pending.history);
    }

    /// What loading `files` gives: the history first, then the logs, whose
    /// records of an execution the history holds are superseded by it
    /// (unless a later acceptance reuses its id).
    fn expected(&self, files: &Files) -> State {
        let mut functions = LiveState::default();
        for record in &files.functions {
            let _ = functions.apply(record);
        }
        let mut filed: BTreeMap<u64, FinishedExecution> = BTreeMap::new();
        for done in &files.history {
            filed.insert(done.record.id.0, done.clone());
        }
        let mut live: BTreeMap<u64, (ExecutionRecord, u32)> = BTreeMap::new();
        let mut superseded = BTreeSet::new();
        for record in &files.log {
            match record {
                Record::Accepted(accepted) => {
                    let id = accepted.id.0;
                    if let Some(done) = filed.get(&id) {
                        if accepted.created_at_us <= done.record.created_at_us {
                            superseded.insert(id);
                            continue;
                        }
                        filed.remove(&id);
                        superseded.remove(&id);
                    }
                    live.entry(id).or_insert((accepted.clone(), 0));
                }
                Record::Started { id, attempt, .. } if !superseded.contains(&id.0) => {
                    if let Some((_, latest)) = live.get_mut(&id.0) {
                        *latest = (*latest).max(*attempt);
                    }
                }
                Record::Evicted { id, .. } if !superseded.contains(&id.0) => {
                    live.remove(&id.0);
                }
                _ => {}
            }
        }
        // Gone ones still superseded their records in the log: the log was
        // compacted before their segment was deleted.
        let mut executions: BTreeMap<u64, Seen> = filed
            .into_iter()
            .filter(|(id, done)| !self.gone.contains(&(*id, done.record.created_at_us)))
            .map(|(id, done)| (id, Seen::Finished(done)))
            .collect();
        for (id, (record, attempts_started)) in live {
            executions.insert(
                id,
                Seen::Live {
                    record,
                    attempts_started,
                },
            );
        }
        (functions.functions().cloned().collect(), executions)
    }

    /// Whether `got` is `expected`, but for forgettable executions, which
    /// either may hold or lack.
    fn matches(&self, expected: &State, got: &State) -> bool {
        let remembered = |state: &State| -> State {
            let executions = state.1.iter().filter(|(id, seen)| match seen {
                Seen::Finished(done) => !self
                    .forgettable
                    .contains(&(**id, done.record.created_at_us)),
                Seen::Live { .. } => true,
            });
            let executions = executions.map(|(id, seen)| (*id, seen.clone()));
            (state.0.clone(), executions.collect())
        };
        remembered(expected) == remembered(got)
    }

    /// Checks a restart against the model, which then takes what survived as
    /// durable and what was loaded as the running state. Returns how many
    /// unsynced entries survived.
    fn recovered(&mut self, store: &JsonlStore, recovered: &Recovered) -> Result<usize, String> {
        let got = state(store, recovered);
        let pending = &self.pending;
        let mut survived = None;
        'search: for functions in 0..=pending.functions.len() {
            for log in 0..=pending.log.len() {
                for history in 0..=pending.history.len() {
                    let mut files = self.durable.clone();
                    files
                        .functions
                        .extend_from_slice(&pending.functions[..functions]);
                    files.log.extend_from_slice(&pending.log[..log]);
                    files.history.extend_from_slice(&pending.history[..history]);
                    if self.matches(&self.expected(&files), &got) {
                        survived = Some((files, functions + log + history));
                        break 'search;
                    }
                }
            }
        }
        let Some((files, count)) = survived else {
            return Err(format!(
                "recovered {got:?}, not the synced records plus a prefix of each file's {:?}",
                self.pending
            ));
        };
        self.durable = files;
        self.pending = Files::default();
        for warning in &recovered.warnings {
            if !warning.contains("last line") {
                return Err(format!("unexpected warning {warning}"));
            }
        }
        let mut functions = LiveState::default();
        for function in &recovered.functions {
            let _ = functions.apply(&Record::Function(function.clone()));
        }
        self.running = Running {
            functions,
            live: recovered
                .executions
                .iter()
                .map(|e| (e.record.id.0, (e.record.clone(), e.attempts_started)))
                .collect(),
            filed: BTreeMap::new(),
        };
        for (id, seen) in &got.1 {
            if let Seen::Finished(done) = seen {
                self.running.filed.insert(*id, done.record.created_at_us);
            }
        }
        for (id, seen) in &self.expected(&self.durable).1 {
            if let Seen::Finished(done) = seen {
                if !got.1.contains_key(id) {
                    self.gone.insert((*id, done.record.created_at_us));
                }
            }
        }
        Ok(count)
    }
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(Bytes::from),
        "\\PC{0,4}".prop_map(Bytes::from),
        vec(any::<u8>(), 0..12).prop_map(Bytes::from),
    ]
}

fn arb_terminal() -> impl Strategy<Value = Terminal> {
    prop_oneof![
        arb_bytes().prop_map(|output| Terminal::Completed { output }),
        ("[a-z ]{0,10}", arb_bytes())
            .prop_map(|(error, output)| Terminal::Failed { error, output }),
        "[a-z ]{0,10}".prop_map(|error| Terminal::TimedOut { error }),
        Just(Terminal::Cancelled),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    let id = || (0u64..6).prop_map(ExecutionId);
    prop_oneof![
        1 => (0u8..3, arb_bytes(), 0u64..5_000).prop_map(|(n, code, timeout_ms)| {
            Record::Function(FunctionRecord {
                max_memory_bytes: 0,
                function_id: format!("f{n}"),
                name: format!("name-{timeout_ms}"),
                language: "builtin".into(),
                code,
                timeout_ms,
                max_attempts: n.into(),
                created_at_us: timeout_ms,
            })
        }),
        4 => (
            (id(), arb_bytes(), 0u32..5, 0u64..10_000, proptest::option::of(0u64..10_000)),
            proptest::option::of(("[ -~]{1,24}", any::<u64>())),
        )
            .prop_map(|((id, payload, max_attempts, timeout_ms, start_ms), key)| {
                Record::Accepted(ExecutionRecord {
                    idempotency: key.map(|(key, digest)| IdempotencyKey { key, digest }),
                    id,
                    function_id: "f0".into(),
                    payload,
                    policy: Policy {
                        max_attempts,
                        timeout: Duration::from_millis(timeout_ms),
                        schedule_to_start: start_ms.map(Duration::from_millis),
                    },
                    created_at_us: timeout_ms,
                })
            }),
        3 => (id(), 0u32..4, 0u8..3).prop_map(|(id, attempt, worker)| Record::Started {
            id,
            attempt,
            worker_id: format!("w{worker}"),
            started_at_us: u64::from(attempt),
        }),
        3 => (id(), arb_terminal(), 0u32..4).prop_map(|(id, terminal, attempt)| Record::Finished {
            id,
            finished: FinishedRecord {
                terminal,
                attempt,
                worker_id: "w0".into(),
                started_at_us: 1,
                finished_at_us: 2,
                logs: if attempt % 2 == 0 { String::new() } else { "printed\n".into() },
            },
        }),
        1 => id().prop_map(|id| Record::Evicted { id, filed: None }),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        Just(Fault::Append),
        Just(Fault::Sync),
        Just(Fault::Create),
        Just(Fault::Rename),
        Just(Fault::SyncDir),
    ];
    prop_oneof![
        12 => arb_record().prop_map(Op::Append),
        4 => Just(Op::Sync),
        1 => Just(Op::Compact),
        2 => fault.prop_map(Op::Fail),
        2 => (0usize..300).prop_map(|keep_unsynced| Op::Crash { keep_unsynced }),
    ]
}

/// Restarts on `fs`, checks what loads against the model, and returns the
/// store (with small segments, so that retention empties and deletes them)
/// and where the filed executions are.
fn restart(
    fs: &CrashFs,
    model: &mut Model,
) -> Result<(JsonlStore, BTreeMap<u64, Location>), TestCaseError> {
    let (store, recovered) =
        reload(fs).map_err(|e| TestCaseError::fail(format!("restart failed: {e}")))?;
    let store = store.with_segment_bytes(256);
    let locations = recovered
        .history
        .iter()
        .map(|filed| (filed.id.0, filed.location))
        .collect();
    model
        .recovered(&store, &recovered)
        .map_err(TestCaseError::fail)?;
    let first = state(&store, &recovered);
    drop(store);
    // Whatever the first start repaired, a second start finds clean.
    let (store, again) =
        reload(fs).map_err(|e| TestCaseError::fail(format!("second restart failed: {e}")))?;
    prop_assert_eq!(&again.warnings, &Vec::<String>::new());
    prop_assert_eq!(state(&store, &again), first);
    drop(store);
    // The store used from here on, loaded a third time: loads change nothing.
    let (store, _) =
        reload(fs).map_err(|e| TestCaseError::fail(format!("third restart failed: {e}")))?;
    Ok((store.with_segment_bytes(256), locations))
}

/// Gives every acceptance its own time, as the scheduler's clock does: an
/// id reused after retention forgot it is told apart by it.
fn distinct_acceptances(mut ops: Vec<Op>) -> Vec<Op> {
    for (n, op) in ops.iter_mut().enumerate() {
        if let Op::Append(Record::Accepted(accepted)) = op {
            accepted.created_at_us = n as u64;
        }
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn restarts_load_exactly_what_was_synced(
        ops in vec(arb_op(), 1..80).prop_map(distinct_acceptances),
        last_crash_keeps in 0usize..300,
    ) {
        let fs = CrashFs::new();
        let mut model = Model::default();
        let (mut store, mut locations) = restart(&fs, &mut model)?;
        for op in ops {
            match op {
                Op::Append(mut record) => {
                    // Retention names where the execution was filed, as the
                    // scheduler does, so that segments empty and go.
                    if let Record::Evicted { id, filed } = &mut record {
                        *filed = locations.get(&id.0).copied();
                    }
                    prop_assert!(store.append(&record).is_ok());
                    model.append(&record);
                }
                Op::Sync => {
                    if store.sync().is_ok() {
                        model.synced();
                    }
                }
                Op::Compact => {
                    if store.compact().is_ok() {
                        model.synced();
                    }
                }
                Op::Fail(fault) => fs.fail_next(fault),
                Op::Crash { keep_unsynced } => {
                    fs.crash(keep_unsynced);
                    (store, locations) = restart(&fs, &mut model)?;
                }
            }
            locations.extend(store.take_filed().into_iter().map(|(id, at)| (id.0, at)));
        }
        fs.crash(last_crash_keeps);
        restart(&fs, &mut model)?;
    }
}

#[test]
fn a_long_history_with_a_torn_tail_recovers_all_but_the_torn_end() -> Result<(), StoreError> {
    // Thousands of executions over many segments; the crash tears the last
    // end being filed. Every end synced before is there, read back whole;
    // the torn one's execution is pending again (its acceptance is still in
    // the log), to run once more.
    let fs = CrashFs::new();
    let (store, _) = reload(&fs)?;
    let mut store = store.with_segment_bytes(64 << 10);
    let output = |id: u64| Terminal::Completed {
        output: Bytes::from(format!("{{\"n\":{id}}}")),
    };
    for id in 0..5_000 {
        commit(
            &mut store,
            &[accepted(id, b"p"), started(id, 1), finished(id, output(id))],
        )?;
    }
    append_all(&mut store, &[accepted(9_000, b"last"), started(9_000, 1)])?;
    store.sync()?;
    store.append(&finished(9_000, output(9_000)))?;
    fs.fail_next(Fault::Sync);
    assert!(store.sync().is_err());
    fs.crash(40); // part of the last line made it to the disk
    assert!(segments(&fs).len() > 10, "{} segments", segments(&fs).len());

    let (store, recovered) = reload(&fs)?;
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
    assert!(
        recovered.warnings[0].contains("skipped a torn last line"),
        "{}",
        recovered.warnings[0]
    );
    assert_eq!(filed_ids(&recovered), (0..5_000).collect::<Vec<_>>());
    assert_eq!(ids(&recovered), [9_000]);
    assert_eq!(recovered.executions[0].attempts_started, 1);
    let reader = store.history();
    for filed in recovered.history.iter().step_by(97) {
        let done = reader.read(filed.id, filed.location)?.expect("filed");
        assert_eq!(done.finished.terminal, output(filed.id.0));
    }
    drop(store);
    // The torn fragment was cut off: the next start is clean.
    let (_, again) = reload(&fs)?;
    assert_eq!(again.warnings, Vec::<String>::new());
    assert_eq!(filed_ids(&again).len(), 5_000);
    Ok(())
}

#[test]
fn a_log_from_before_the_history_is_filed_at_the_first_start() -> Result<(), StoreError> {
    // Such a log holds finished and evicted executions among the pending.
    let fs = CrashFs::new();
    fs.create_dir_all(Path::new(DIR))
        .map_err(|e| StoreError::io("create", Path::new(DIR), e))?;
    let old = [
        accepted(1, b"a"),
        accepted(2, b"b"),
        accepted(3, b"c"),
        started(1, 1),
        finished(1, Terminal::Cancelled),
        finished(2, Terminal::Cancelled),
        evicted(2),
    ];
    for record in &old {
        let mut line = Vec::new();
        codec::encode(record, &mut line).expect("records encode");
        fs.append_durably(&executions_log(), &line);
    }
    let (store, recovered) = reload(&fs)?;
    assert_eq!(recovered.warnings, Vec::<String>::new());
    assert_eq!(ids(&recovered), [3]);
    assert_eq!(filed_ids(&recovered), [1]);
    let expected = Seen::Finished(FinishedExecution {
        record: execution(1, b""),
        finished: finished_record(Terminal::Cancelled),
    });
    assert_eq!(state(&store, &recovered).1[&1], expected);
    drop(store);
    // Filed for good: the next start finds it in the history (and skips
    // the log's records of it), with nothing left to migrate.
    let (store, again) = reload(&fs)?;
    assert_eq!(again.warnings, Vec::<String>::new());
    assert_eq!((ids(&again), filed_ids(&again)), (vec![3], vec![1]));
    assert_eq!(state(&store, &again).1[&1], expected);
    assert_eq!(segments(&fs).len(), 1);
    Ok(())
}

#[test]
fn an_execution_forgotten_before_its_location_is_known_still_frees_its_segment()
-> Result<(), StoreError> {
    // The scheduler learns where an end was filed with the commit report; a
    // tiny retention may forget the execution first, naming no location.
    let fs = CrashFs::new();
    let (store, _) = reload(&fs)?;
    let mut store = store.with_segment_bytes(1);
    commit_filed(
        &mut store,
        &[accepted(1, b"a"), finished(1, Terminal::Cancelled)],
    )?;
    commit_filed(
        &mut store,
        &[
            accepted(2, b"b"),
            finished(2, Terminal::Cancelled),
            evicted(1),
        ],
    )?;
    assert_eq!(segments(&fs).len(), 2);
    store.compact()?;
    assert_eq!(segments(&fs).len(), 1, "the segment of 1 was deleted");
    Ok(())
}

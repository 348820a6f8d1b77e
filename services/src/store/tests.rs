//! Tests of the JSON Lines store as a whole: every record kind through the
//! files, torn and corrupt lines, compaction, and crashes and faults on the
//! crash-model filesystem, ending with a property test over random histories.

use std::path::PathBuf;
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

fn evicted(id: u64) -> Record {
    Record::Evicted {
        id: ExecutionId(id),
    }
}

fn append_all(store: &mut JsonlStore, records: &[Record]) -> Result<(), StoreError> {
    records.iter().try_for_each(|record| store.append(record))
}

fn ids(recovered: &Recovered) -> Vec<u64> {
    recovered.executions.iter().map(|e| e.record.id.0).collect()
}

/// What a sequence of records amounts to, as `load` would report it.
fn state_of(records: &[Record]) -> (Vec<FunctionRecord>, Vec<RecoveredExecution>) {
    let mut live = LiveState::default();
    for record in records {
        let _ = live.apply(record);
    }
    (
        live.functions().cloned().collect(),
        live.recovered_executions(),
    )
}

fn state(recovered: &Recovered) -> (Vec<FunctionRecord>, Vec<RecoveredExecution>) {
    (recovered.functions.clone(), recovered.executions.clone())
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

fn expected_every_kind() -> (Vec<FunctionRecord>, Vec<RecoveredExecution>) {
    let Record::Accepted(third) = &every_kind()[4] else {
        unreachable!("the fifth record is the third acceptance");
    };
    let recovered = |record, attempts_started, terminal: Option<Terminal>| RecoveredExecution {
        record,
        attempts_started,
        finished: terminal.map(finished_record),
    };
    let Record::Function(f) = function("f", b"echo") else {
        unreachable!()
    };
    let Record::Function(g) = function("g", &[0xde, 0xad, 0xbe, 0xef]) else {
        unreachable!()
    };
    // Finished executions come back without their payload.
    let executions = vec![
        recovered(
            execution(1, b""),
            1,
            Some(Terminal::Completed {
                output: Bytes::from_static(&[0x80, 0x81]),
            }),
        ),
        recovered(
            execution(2, b""),
            2,
            Some(Terminal::Failed {
                error: "worker lost 3 times".into(),
                output: Bytes::from_static("partial ✓".as_bytes()),
            }),
        ),
        recovered(third.clone(), 0, Some(Terminal::Cancelled)),
        recovered(execution(4, b"line one\nline \"two\"\t\\"), 0, None),
        recovered(execution(6, &[0xc3, 0x28, b'\n']), 0, None),
    ];
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
    assert_eq!(state(&recovered), expected_every_kind());

    // And once more through a snapshot.
    store.compact()?;
    drop(store);
    let recovered = JsonlStore::open(fs, dir)?.load()?;
    assert_eq!(state(&recovered), expected_every_kind());
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

#[test]
fn compaction_keeps_exactly_the_live_state_and_shrinks_the_log() -> Result<(), StoreError> {
    let fs = CrashFs::new();
    let (mut store, _) = reload(&fs)?;
    append_all(
        &mut store,
        &[
            function("f", b"echo"),
            function("g", b"sleep"),
            function("f", b"fail"),
        ],
    )?;
    for id in 0..3_000 {
        let terminal = Terminal::Completed {
            output: Bytes::from(format!("out-{id}")),
        };
        append_all(
            &mut store,
            &[
                accepted(id, b"payload"),
                started(id, 1),
                finished(id, terminal),
            ],
        )?;
        if id >= 10 {
            // Retention drops all but the newest few.
            store.append(&evicted(id - 10))?;
        }
    }
    store.append(&accepted(5_000, b"still pending"))?;
    store.sync()?;
    assert!(store.wants_compaction());
    drop(store);

    let (mut store, before) = reload(&fs)?;
    assert_eq!(
        ids(&before),
        (2_990..3_000).chain([5_000]).collect::<Vec<_>>()
    );
    let size_before = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .map_or(0, |b| b.len());
    store.compact()?;
    assert!(!store.wants_compaction());
    let log = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(
        log.len() * 100 < size_before,
        "{} bytes before, {} after",
        size_before,
        log.len()
    );
    assert_eq!(
        log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(),
        31
    );
    assert!(!String::from_utf8_lossy(&log).contains("evicted"));
    assert_eq!(
        fs.list(std::path::Path::new(DIR)),
        [
            PathBuf::from("/data/executions.jsonl"),
            PathBuf::from("/data/functions.jsonl")
        ],
        "no temporary file left behind"
    );

    // Appends go on after the snapshot; a crash keeps both.
    append_all(&mut store, &[started(5_000, 1), evicted(2_990)])?;
    store.sync()?;
    fs.crash(0);
    let (_, after) = reload(&fs)?;
    assert_eq!(after.warnings, Vec::<String>::new());
    assert_eq!(after.functions, before.functions);
    let mut expected = before.executions[1..].to_vec();
    if let Some(pending) = expected.last_mut() {
        pending.attempts_started = 1;
    }
    assert_eq!(after.executions, expected);
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

fn log_size(fs: &CrashFs) -> u64 {
    let log = fs.read(&executions_log()).ok().flatten();
    log.map_or(0, |bytes| bytes.len() as u64)
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
    assert_eq!(
        ids(&recovered),
        (290..300).chain([500, 501]).collect::<Vec<_>>()
    );
    for execution in &recovered.executions {
        let expected: &[u8] = match execution.record.id.0 {
            500 => &big,
            501 => b"small",
            _ => b"",
        };
        assert_eq!(execution.record.payload, expected);
    }
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
    let (_, recovered) = reload(&fs)?;
    assert_eq!(ids(&recovered), [1]);
    assert_eq!(recovered.executions[0].record.payload, Bytes::new());
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
    // returned. Any prefix of them may survive, cut anywhere.
    let unsynced = [
        accepted(3, b"c"),
        started(3, 1),
        finished(1, Terminal::Cancelled),
    ];
    for keep in [0, 1, 30, 100, 150, 200, usize::MAX] {
        let fs = CrashFs::new();
        let (mut store, _) = reload(&fs)?;
        append_all(&mut store, &[accepted(1, b"a"), accepted(2, b"b")])?;
        store.sync()?;
        append_all(&mut store, &unsynced)?;
        fs.fail_next(Fault::Sync);
        assert!(store.sync().is_err());
        fs.crash(keep);

        let (_, recovered) = reload(&fs)?;
        let synced = [accepted(1, b"a"), accepted(2, b"b")];
        let survived = (0..=unsynced.len()).find(|&k| {
            let records: Vec<_> = synced.iter().chain(&unsynced[..k]).cloned().collect();
            state_of(&records) == state(&recovered)
        });
        assert!(survived.is_some(), "keep {keep}: {recovered:?}");
        if keep == 0 {
            assert_eq!(survived, Some(0));
        }
        if keep == usize::MAX {
            assert_eq!(survived, Some(unsynced.len()));
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
    append_all(
        &mut store,
        &[
            accepted(1, b"a"),
            finished(1, Terminal::Cancelled),
            finished(
                1,
                Terminal::Completed {
                    output: Bytes::new(),
                },
            ),
            started(7, 1),
            evicted(8),
            accepted(1, b"again"),
        ],
    )?;
    store.sync()?;
    let log = fs
        .read(&executions_log())
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), 2);
    drop(store);
    let (_, recovered) = reload(&fs)?;
    assert_eq!(recovered.warnings, Vec::<String>::new());
    assert_eq!(
        recovered.executions[0]
            .finished
            .as_ref()
            .map(|f| &f.terminal),
        Some(&Terminal::Cancelled)
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
// that were not (per file: the two logs are synced one after the other).

#[derive(Clone, Debug)]
enum Op {
    Append(Record),
    Sync,
    Compact,
    Fail(Fault),
    Crash { keep_unsynced: usize },
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
        1 => id().prop_map(|id| Record::Evicted { id }),
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

/// Per log file (0: functions, 1: executions): the records known durable, and
/// those appended since the last successful sync.
#[derive(Debug, Default)]
struct Model {
    durable: [Vec<Record>; 2],
    pending: [Vec<Record>; 2],
}

fn file_of(record: &Record) -> usize {
    match record {
        Record::Function(_) => 0,
        _ => 1,
    }
}

impl Model {
    fn synced(&mut self) {
        for file in 0..2 {
            let pending = std::mem::take(&mut self.pending[file]);
            self.durable[file].extend(pending);
        }
    }

    /// Checks a restart against the model, which then takes what survived as
    /// durable.
    fn recovered(&mut self, recovered: &Recovered) -> Result<(), TestCaseError> {
        for file in 0..2 {
            let project = |(functions, executions): (
                Vec<FunctionRecord>,
                Vec<RecoveredExecution>,
            )| {
                match file {
                    0 => (functions, Vec::new()),
                    _ => (Vec::new(), executions),
                }
            };
            let got = project(state(recovered));
            let survived = (0..=self.pending[file].len()).find(|&k| {
                let records: Vec<_> = self.durable[file]
                    .iter()
                    .chain(&self.pending[file][..k])
                    .cloned()
                    .collect();
                project(state_of(&records)) == got
            });
            let Some(k) = survived else {
                return Err(TestCaseError::fail(format!(
                    "file {file}: recovered {got:?}, not the synced records plus a prefix of {:?}",
                    self.pending[file]
                )));
            };
            let pending = std::mem::take(&mut self.pending[file]);
            self.durable[file].extend(pending.into_iter().take(k));
        }
        for warning in &recovered.warnings {
            prop_assert!(
                warning.contains("last line"),
                "unexpected warning {}",
                warning
            );
        }
        Ok(())
    }
}

fn restart(fs: &CrashFs, model: &mut Model) -> Result<JsonlStore, TestCaseError> {
    let (store, recovered) =
        reload(fs).map_err(|e| TestCaseError::fail(format!("restart failed: {e}")))?;
    model.recovered(&recovered)?;
    drop(store);
    // Whatever the first start repaired, a second start finds clean.
    let (store, again) =
        reload(fs).map_err(|e| TestCaseError::fail(format!("second restart failed: {e}")))?;
    prop_assert_eq!(&again.warnings, &Vec::<String>::new());
    prop_assert_eq!(state(&again), state(&recovered));
    Ok(store)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn restarts_load_exactly_what_was_synced(
        ops in vec(arb_op(), 1..80),
        last_crash_keeps in 0usize..300,
    ) {
        let fs = CrashFs::new();
        let mut model = Model::default();
        let mut store = restart(&fs, &mut model)?;
        for op in ops {
            match op {
                Op::Append(record) => {
                    prop_assert!(store.append(&record).is_ok());
                    model.pending[file_of(&record)].push(record);
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
                    store = restart(&fs, &mut model)?;
                }
            }
        }
        fs.crash(last_crash_keeps);
        restart(&fs, &mut model)?;
    }
}

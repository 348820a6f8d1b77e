//! The contract every store keeps, checked on each: the JSON Lines store in
//! a temporary directory and the PostgreSQL store in a schema of its own.
//! What a store is given and synced, a reopened store loads; what was not
//! synced, it does not; finished executions are filed, and read back whole.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::scheduler::Retention;
use taskforge_core::{ExecutionId, Policy, Status, Terminal};
use taskforge_services::store::{
    ExecutionRecord, Filed, FinishedExecution, FinishedRecord, FunctionRecord, HistoryQuery,
    IdempotencyKey, JsonlStore, Location, PostgresStore, Record, Recovered, RecoveredExecution,
    StatusCounts, StdFileSystem, Store,
};

use support::postgres::TestSchema;
use support::processes::TempDir;

/// Opens the same store again, as a restart does.
trait Reopen {
    fn open(&self) -> Box<dyn Store>;
}

struct Jsonl(TempDir);

impl Reopen for Jsonl {
    fn open(&self) -> Box<dyn Store> {
        let store = JsonlStore::open(Arc::new(StdFileSystem), self.0.path().to_path_buf())
            .expect("open the JSON Lines store");
        Box::new(store)
    }
}

struct Postgres(TestSchema);

impl Reopen for Postgres {
    fn open(&self) -> Box<dyn Store> {
        Box::new(PostgresStore::new(self.0.config()))
    }
}

/// Runs `check` on each store; PostgreSQL's only where a server answers.
fn on_each_store(label: &str, check: impl Fn(&dyn Reopen)) {
    check(&Jsonl(TempDir::new(label)));
    if let Some(schema) = TestSchema::create(label) {
        check(&Postgres(schema));
    }
}

fn function(id: &str, code: &str) -> Record {
    Record::Function(FunctionRecord {
        function_id: id.into(),
        name: format!("{id} name"),
        language: "builtin".into(),
        code: Bytes::from(code.to_string()),
        timeout_ms: 2_500,
        max_attempts: 4,
        max_memory_bytes: 0,
        created_at_us: 11,
    })
}

fn execution(id: u64, payload: &[u8]) -> ExecutionRecord {
    ExecutionRecord {
        id: ExecutionId(id),
        function_id: "f".into(),
        payload: Bytes::copy_from_slice(payload),
        policy: Policy {
            max_attempts: 3,
            timeout: Duration::from_millis(1_500),
            schedule_to_start: Some(Duration::from_secs(60)),
        },
        created_at_us: 1_000 + id,
        idempotency: (id % 2 == 0).then(|| IdempotencyKey {
            key: format!("key-{id}"),
            digest: id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }),
    }
}

fn finished(terminal: Terminal) -> FinishedRecord {
    FinishedRecord {
        terminal,
        attempt: 2,
        worker_id: "worker-1".into(),
        started_at_us: 2_000,
        finished_at_us: 3_000,
        logs: "printed\n".into(),
    }
}

/// The finished executions a reopened store holds, in id order: what it
/// loaded, or, for a store that answers for its history itself, what its
/// search lists (its load brings back only the executions with an
/// idempotency key, whose retries must still be recognised).
fn filed(store: &dyn Store, recovered: &Recovered) -> Vec<Filed> {
    let reader = store.history();
    let mut filed = match reader.search() {
        None => recovered.history.clone(),
        Some(search) => {
            let all = HistoryQuery {
                limit: 1_000,
                ..HistoryQuery::default()
            };
            let listed: Vec<Filed> = search
                .list(&all)
                .expect("list the history")
                .into_iter()
                .map(|done| Filed {
                    id: done.record.id,
                    function_id: done.record.function_id.into(),
                    status: done.finished.terminal.status(),
                    attempt: done.finished.attempt,
                    finished_at_us: done.finished.finished_at_us,
                    idempotency: done.record.idempotency,
                    location: Location::default(),
                })
                .collect();
            let keyed: Vec<ExecutionId> = listed
                .iter()
                .filter(|f| f.idempotency.is_some())
                .map(|f| f.id)
                .collect();
            let mut loaded: Vec<ExecutionId> = recovered.history.iter().map(|f| f.id).collect();
            loaded.sort_unstable();
            assert_eq!(loaded, keyed, "only the keyed ones are loaded");
            listed
        }
    };
    filed.sort_by_key(|f| f.id);
    filed
}

fn loaded(store: &mut dyn Store) -> Recovered {
    let recovered = store.load().expect("load");
    assert_eq!(recovered.warnings, Vec::<String>::new());
    recovered
}

#[test]
fn what_was_synced_is_loaded_again_and_finished_executions_read_back_whole() {
    on_each_store("round_trip", |stores| {
        let ends = [
            Terminal::Completed {
                output: Bytes::from_static(b"{\"ok\":true}"),
            },
            Terminal::Failed {
                error: "boom".into(),
                output: Bytes::from_static(&[0xff, 0x00]),
            },
            Terminal::TimedOut {
                error: "timed out after 1.5s".into(),
            },
            Terminal::Cancelled,
        ];
        let mut store = stores.open();
        loaded(&mut *store);
        let mut records = vec![
            function("f", "echo"),
            function("g", "sleep"),
            function("f", "fail"), // replaced, keeping its place
            function("h", "spin"),
            Record::FunctionDeleted {
                function_id: "h".into(),
            },
        ];
        for id in 1..=6 {
            records.push(Record::Accepted(execution(id, format!("p{id}").as_bytes())));
        }
        records.push(Record::Started {
            id: ExecutionId(5),
            attempt: 1,
            worker_id: "w".into(),
            started_at_us: 1,
        });
        records.push(Record::Started {
            id: ExecutionId(5),
            attempt: 2,
            worker_id: "w".into(),
            started_at_us: 2,
        });
        for (id, end) in (1..=4).zip(ends.clone()) {
            records.push(Record::Finished {
                id: ExecutionId(id),
                finished: finished(end),
            });
        }
        for record in &records {
            store.append(record).expect("append");
        }
        store.sync().expect("sync");
        let mut filed_now: Vec<u64> = store.take_filed().iter().map(|(id, _)| id.0).collect();
        filed_now.sort_unstable();
        assert_eq!(filed_now, [1, 2, 3, 4]);
        drop(store);

        let mut store = stores.open();
        let recovered = loaded(&mut *store);
        let functions: Vec<_> = recovered
            .functions
            .iter()
            .map(|f| (f.function_id.as_str(), f.code.as_ref()))
            .collect();
        assert_eq!(functions, [("f", &b"fail"[..]), ("g", &b"sleep"[..])]);
        assert_eq!(
            recovered.executions,
            [
                RecoveredExecution {
                    record: execution(5, b"p5"),
                    attempts_started: 2,
                },
                RecoveredExecution {
                    record: execution(6, b"p6"),
                    attempts_started: 0,
                },
            ]
        );
        let history = filed(&*store, &recovered);
        assert_eq!(history.len(), 4);
        let reader = store.history();
        for (filed, end) in history.iter().zip(ends) {
            let id = filed.id.0;
            assert_eq!(filed.status, end.status());
            assert_eq!(filed.attempt, 2);
            assert_eq!(&*filed.function_id, "f");
            assert_eq!(filed.idempotency, execution(id, b"").idempotency);
            let read = reader
                .read(filed.id, filed.location)
                .expect("read")
                .expect("there");
            let expected = FinishedExecution {
                // Filed without its payload.
                record: execution(id, b""),
                finished: finished(end),
            };
            assert_eq!(read, expected, "execution {id}");
        }
        assert_eq!(
            history
                .iter()
                .filter(|f| f.status == Status::Failed)
                .count(),
            1
        );
    });
}

#[test]
fn what_was_not_synced_is_not_loaded() {
    on_each_store("unsynced", |stores| {
        let mut store = stores.open();
        loaded(&mut *store);
        store
            .append(&Record::Accepted(execution(1, b"kept")))
            .expect("append");
        store.sync().expect("sync");
        store
            .append(&Record::Accepted(execution(2, b"lost")))
            .expect("append");
        store
            .append(&Record::Finished {
                id: ExecutionId(1),
                finished: finished(Terminal::Cancelled),
            })
            .expect("append");
        drop(store); // a crash before the sync

        let mut store = stores.open();
        let recovered = loaded(&mut *store);
        let ids: Vec<u64> = recovered.executions.iter().map(|e| e.record.id.0).collect();
        assert_eq!(ids, [1], "1 is still pending; 2 was never acknowledged");
        assert!(filed(&*store, &recovered).is_empty());
    });
}

#[test]
fn records_that_change_nothing_change_nothing() {
    on_each_store("no_change", |stores| {
        let mut store = stores.open();
        loaded(&mut *store);
        let records = [
            Record::Accepted(execution(1, b"a")),
            Record::Accepted(execution(1, b"twice")),
            Record::Finished {
                id: ExecutionId(1),
                finished: finished(Terminal::Cancelled),
            },
            Record::Finished {
                id: ExecutionId(1),
                finished: finished(Terminal::Completed {
                    output: Bytes::new(),
                }),
            },
            Record::Started {
                id: ExecutionId(7),
                attempt: 1,
                worker_id: "w".into(),
                started_at_us: 1,
            },
        ];
        for record in &records {
            store.append(record).expect("append");
        }
        store.sync().expect("sync");
        assert_eq!(store.take_filed().len(), 1, "one end, filed once");
        drop(store);
        let mut store = stores.open();
        let recovered = loaded(&mut *store);
        assert!(recovered.executions.is_empty());
        let history = filed(&*store, &recovered);
        let [filed] = &history[..] else {
            panic!("one filed execution: {history:?}");
        };
        let read = store
            .history()
            .read(filed.id, filed.location)
            .expect("read")
            .expect("there");
        assert_eq!(
            read.finished.terminal,
            Terminal::Cancelled,
            "the first end stands"
        );
        assert_eq!(read.record.created_at_us, execution(1, b"").created_at_us);
    });
}

#[test]
fn migrations_apply_to_an_empty_database_and_again_change_nothing() {
    let Some(schema) = TestSchema::create("migrations") else {
        return;
    };
    let mut store = PostgresStore::new(schema.config());
    store.load().expect("connect and migrate an empty schema");
    store
        .append(&Record::Accepted(execution(1, b"a")))
        .expect("append");
    store.sync().expect("sync");
    drop(store);
    // Connecting again runs the migrations again: nothing to do, nothing lost.
    let mut store = PostgresStore::new(schema.config());
    let recovered = store.load().expect("connect and migrate again");
    assert_eq!(recovered.executions.len(), 1);
}

#[test]
fn a_searchable_history_lists_in_id_order_filters_and_counts() {
    let Some(schema) = TestSchema::create("search") else {
        return;
    };
    let mut store = PostgresStore::new(schema.config());
    loaded(&mut store);
    // Ids on both sides of the sign bit of a BIGINT: id order is unsigned.
    let ids = [3_u64, 1 << 62, (1 << 63) + 5, u64::MAX - 1];
    let ends = [
        Terminal::Completed {
            output: Bytes::new(),
        },
        Terminal::Cancelled,
        Terminal::Completed {
            output: Bytes::new(),
        },
        Terminal::Failed {
            error: "no".into(),
            output: Bytes::new(),
        },
    ];
    for (&id, end) in ids.iter().zip(ends) {
        let mut record = ExecutionRecord {
            id: ExecutionId(id),
            ..execution(1, b"p")
        };
        if id == 3 {
            record.function_id = "g".into();
        }
        store.append(&Record::Accepted(record)).expect("append");
        store
            .append(&Record::Finished {
                id: ExecutionId(id),
                finished: finished(end),
            })
            .expect("append");
    }
    // A live execution is not in the history.
    store
        .append(&Record::Accepted(execution(9, b"live")))
        .expect("append");
    store.sync().expect("sync");
    let reader = store.history();
    let search = reader.search().expect("PostgreSQL searches its history");
    let list = |query: HistoryQuery| -> Vec<u64> {
        let found = search.list(&query).expect("list");
        found.iter().map(|done| done.record.id.0).collect()
    };
    let all = HistoryQuery {
        limit: 10,
        ..HistoryQuery::default()
    };
    assert_eq!(list(all.clone()), ids);
    assert_eq!(
        list(HistoryQuery {
            limit: 2,
            ..all.clone()
        }),
        ids[..2]
    );
    assert_eq!(
        list(HistoryQuery {
            after: Some(ExecutionId(1 << 62)),
            ..all.clone()
        }),
        ids[2..]
    );
    assert_eq!(
        list(HistoryQuery {
            status: Some(Status::Completed),
            ..all.clone()
        }),
        [3, (1 << 63) + 5]
    );
    assert_eq!(
        list(HistoryQuery {
            function_id: Some("f".into()),
            status: Some(Status::Completed),
            ..all.clone()
        }),
        [(1 << 63) + 5]
    );
    assert_eq!(
        search.counts().expect("count"),
        StatusCounts {
            completed: 2,
            failed: 1,
            timed_out: 0,
            cancelled: 1,
        }
    );
}

#[test]
fn a_searchable_history_applies_retention_itself_and_reports_the_keys_it_forgot() {
    let Some(schema) = TestSchema::create("retention") else {
        return;
    };
    let by_count = Retention {
        max_age: Duration::from_secs(100 * 365 * 24 * 3600),
        max_count: 2,
    };
    let mut store = PostgresStore::new(schema.config()).retaining(by_count);
    loaded(&mut store);
    for id in 1..=5 {
        store
            .append(&Record::Accepted(execution(id, b"p")))
            .expect("append");
        if id < 5 {
            store
                .append(&Record::Finished {
                    id: ExecutionId(id),
                    finished: finished(Terminal::Cancelled),
                })
                .expect("append");
        }
    }
    store.sync().expect("sync");
    assert!(store.wants_compaction(), "retention is due");
    store.compact().expect("apply retention");
    assert!(!store.wants_compaction(), "not again at once");
    let listed = |store: &PostgresStore| -> Vec<u64> {
        let reader = store.history();
        let all = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        let found = reader.search().unwrap().list(&all).expect("list");
        found.iter().map(|done| done.record.id.0).collect()
    };
    // The newest two stay; of the two forgotten, 2 had a key.
    assert_eq!(listed(&store), [3, 4]);
    assert_eq!(store.take_pruned(), [ExecutionId(2)]);
    drop(store);

    // Past their age (they finished in 1970), every finished one goes; the
    // live one stays.
    let by_age = Retention {
        max_age: Duration::from_secs(24 * 3600),
        max_count: 1_000,
    };
    let mut store = PostgresStore::new(schema.config()).retaining(by_age);
    let recovered = loaded(&mut store);
    assert_eq!(recovered.executions.len(), 1);
    store.compact().expect("apply retention");
    assert_eq!(listed(&store), Vec::<u64>::new());
    assert_eq!(store.take_pruned(), [ExecutionId(4)]);
}

//! The lease row and fencing, on the real server: what the statements the
//! standby schedulers rely on grant and refuse, and that a store fenced by a
//! stale epoch writes nothing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use taskforge_core::{ExecutionId, Policy};
use taskforge_services::store::{
    ExecutionRecord, Fence, LeaseAnswer, LeaseDb, PostgresStore, Record, Store, StoreError,
    migrate_postgres,
};

use support::postgres::TestSchema;

const LONG: Duration = Duration::from_secs(60);

fn accepted(id: u64) -> Record {
    Record::Accepted(ExecutionRecord {
        id: ExecutionId(id),
        function_id: "f".into(),
        payload: Bytes::from_static(b"{}"),
        policy: Policy::default(),
        created_at_us: id,
        idempotency: None,
    })
}

fn execution_ids(schema: &TestSchema) -> Vec<i64> {
    schema.with_client(|client| {
        client
            .query("SELECT id FROM taskforge_executions ORDER BY id", &[])
            .expect("read")
            .iter()
            .map(|row| row.get(0))
            .collect()
    })
}

/// A schema with the tables in it.
fn migrated(label: &str) -> Option<TestSchema> {
    let schema = TestSchema::create(label)?;
    let url = schema.url().to_string();
    std::thread::spawn(move || migrate_postgres(&url))
        .join()
        .expect("the migration thread")
        .expect("migrate");
    Some(schema)
}

#[tokio::test]
async fn the_lease_is_granted_once_per_term_and_renewed_only_by_its_epoch() {
    let Some(schema) = migrated("lease_rules") else {
        return;
    };
    let mut a = LeaseDb::open(schema.url()).expect("a valid url");
    let mut b = LeaseDb::open(schema.url()).expect("a valid url");

    let first = a.acquire("a", "http://a", LONG).await.expect("acquire");
    assert_eq!(first, LeaseAnswer::Granted { epoch: 1 });
    // Held: refused, naming the holder.
    let refused = b.acquire("b", "http://b", LONG).await.expect("acquire");
    assert_eq!(
        refused,
        LeaseAnswer::Refused {
            epoch: 1,
            leader: "http://a".into()
        }
    );
    assert_eq!(
        a.renew(1, LONG).await.expect("renew"),
        LeaseAnswer::Granted { epoch: 1 }
    );
    // Only the current epoch renews.
    assert!(matches!(
        b.renew(0, LONG).await.expect("renew"),
        LeaseAnswer::Refused { epoch: 1, .. }
    ));
    // Released, the next acquisition is the next term, and the old epoch
    // cannot renew it back.
    a.release(1).await.expect("release");
    assert_eq!(
        b.acquire("b", "http://b", LONG).await.expect("acquire"),
        LeaseAnswer::Granted { epoch: 2 }
    );
    assert!(matches!(
        a.renew(1, LONG).await.expect("renew"),
        LeaseAnswer::Refused { epoch: 2, .. }
    ));
}

#[tokio::test]
async fn an_expired_lease_goes_to_the_next_term() {
    let Some(schema) = migrated("lease_expiry") else {
        return;
    };
    let mut a = LeaseDb::open(schema.url()).expect("a valid url");
    let mut b = LeaseDb::open(schema.url()).expect("a valid url");
    assert_eq!(
        a.acquire("a", "http://a", Duration::ZERO)
            .await
            .expect("acquire"),
        LeaseAnswer::Granted { epoch: 1 }
    );
    // A lease of no time has expired by the next statement (the database's
    // clock moves on between them).
    assert_eq!(
        b.acquire("b", "http://b", LONG).await.expect("acquire"),
        LeaseAnswer::Granted { epoch: 2 }
    );
}

#[test]
fn a_store_fenced_by_a_stale_epoch_writes_nothing_then_or_after() {
    let Some(schema) = migrated("fenced") else {
        return;
    };
    let set_epoch = |epoch: i64| {
        schema.with_client(move |client| {
            client
                .execute("UPDATE taskforge_lease SET epoch = $1", &[&epoch])
                .expect("set the epoch");
        })
    };
    set_epoch(1);
    let told = Arc::new(AtomicUsize::new(0));
    let counter = told.clone();
    let mut store = PostgresStore::new(schema.config()).fenced_by(Fence {
        epoch: 1,
        on_fenced: Box::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        }),
    });
    // A plain test thread, outside any runtime: the synchronous client
    // may run here.
    store.load().expect("load");
    store.append(&accepted(1)).expect("append");
    store.sync().expect("the epoch holds: written");

    set_epoch(2); // another scheduler took over
    store.append(&accepted(2)).expect("append");
    let error = store.sync().expect_err("fenced");
    assert!(matches!(error, StoreError::Fenced { epoch: 1 }), "{error}");
    assert_eq!(told.load(Ordering::Relaxed), 1);
    // Never again, not even with the epoch back.
    set_epoch(1);
    assert!(store.append(&accepted(3)).is_err());
    assert!(store.sync().is_err());
    assert_eq!(execution_ids(&schema), [1]);
}

#[test]
fn a_sync_after_a_lost_connection_writes_everything_on_a_new_one() {
    let Some(schema) = migrated("reconnect") else {
        return;
    };
    let mut config = schema.config();
    config.application_name("taskforge-reconnect-test");
    let mut store = PostgresStore::new(config);
    store.load().expect("load");
    store.append(&accepted(1)).expect("append");
    store.sync().expect("sync");
    // As a server restart does: the store's session ends.
    let ended: i64 = schema.with_client(|client| {
        client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'taskforge-reconnect-test'",
                &[],
            )
            .expect("terminate the store's session")
            .get(0)
    });
    assert_eq!(ended, 1);
    store.append(&accepted(2)).expect("append");
    // The first sync finds the connection dead; its records stay
    // buffered for the next, which opens a new one.
    let error = store.sync().expect_err("the connection was cut");
    assert!(matches!(error, StoreError::Database { .. }), "{error}");
    store.append(&accepted(3)).expect("append");
    store.sync().expect("a new connection");
    assert_eq!(execution_ids(&schema), [1, 2, 3]);
}

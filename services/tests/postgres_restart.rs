//! The database server restarted under load: the leader stops
//! acknowledging while it is down, recovers when it is back, and loses
//! nothing it acknowledged.
//!
//! This restarts the machine's PostgreSQL server, so it runs only when
//! `TASKFORGE_TEST_POSTGRES_RESTART` gives the command that does it (as
//! `.ci/run` does: `service postgresql restart`), and it is alone in its
//! test binary: no other test's connections are cut.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use support::postgres::TestSchema;
use support::processes::{TempDir, scheduler, worker};
use support::standby::{Triggering, leader_client, settled, until_leading};
use support::watch::register;

#[tokio::test]
async fn a_database_restart_under_load_loses_nothing_acknowledged() {
    let Ok(restart) = std::env::var("TASKFORGE_TEST_POSTGRES_RESTART") else {
        eprintln!(
            "skipped: set TASKFORGE_TEST_POSTGRES_RESTART to the command that restarts \
             the test server (e.g. 'service postgresql restart')"
        );
        return;
    };
    let Some(schema) = TestSchema::create("restart") else {
        return;
    };
    let dir = TempDir::new("restart");
    let (_scheduler, addr) = scheduler(dir.path(), &["--store", schema.url()]);
    until_leading(addr).await;
    let _worker = worker(addr, "w", 4);
    let mut client = leader_client(&[addr]);
    let sleep = register(&mut client, "sleep").await;

    let mut load = Triggering::start(leader_client(&[addr]), sleep, "10");
    load.until_acknowledged(100).await;
    let restarted = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &restart])
            .status()
            .expect("run the restart command")
    })
    .await
    .expect("the restart");
    assert!(
        restarted.success(),
        "the restart command failed: {restarted}"
    );
    let after = load.acknowledged_so_far();
    load.until_acknowledged(after + 100).await;
    let acknowledged = load.stop().await;

    for id in &acknowledged {
        let info = settled(&mut client, id).await;
        assert_eq!(info.status, "COMPLETED", "{info:?}");
    }
    let rows: BTreeMap<String, Option<String>> = schema.with_client(|client| {
        client
            .query("SELECT id, status FROM taskforge_executions", &[])
            .expect("read the executions")
            .iter()
            .map(|row| (format!("{:016x}", row.get::<_, i64>(0) as u64), row.get(1)))
            .collect()
    });
    for id in &acknowledged {
        assert_eq!(
            rows.get(id),
            Some(&Some("COMPLETED".to_string())),
            "execution {id}"
        );
    }
}

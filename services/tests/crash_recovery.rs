//! Real `taskforge` processes killed with SIGKILL: a worker mid-execution, and
//! the scheduler right after it acknowledged executions.

mod support;

use std::collections::BTreeMap;

use taskforge_proto::scheduler::{
    GetExecutionStatusRequest, GetFunctionRequest, ListExecutionsRequest,
};

use support::postgres::TestSchema;
use support::processes::{TempDir, scheduler, scheduler_client, worker};
use support::standby::{settled, until_leading};
use support::watch::{register, running, terminal, trigger};

#[tokio::test]
async fn a_killed_worker_s_executions_complete_on_another_worker() {
    let dir = TempDir::new("worker-kill");
    // No prefetch: each worker holds exactly what it runs, so the placement
    // below is two and two whichever worker connects first.
    let (_scheduler, addr) = scheduler(dir.path(), &["--prefetch", "0"]);
    let mut doomed = worker(addr, "doomed", 2);
    let _survivor = worker(addr, "survivor", 2);
    let mut client = scheduler_client(addr);
    let sleep = register(&mut client, "sleep").await;

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(trigger(&mut client, &sleep, "1500").await);
    }
    // Wait until all four run: two on each worker.
    let mut placed = BTreeMap::new();
    for id in &ids {
        let info = running(&mut client, id).await;
        placed.insert(id.clone(), info.worker_id);
    }
    let on_doomed: Vec<_> = placed
        .iter()
        .filter(|(_, worker)| *worker == "doomed")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(on_doomed.len(), 2, "least-loaded spread: {placed:?}");

    doomed.kill_9();

    for id in &ids {
        let info = terminal(&mut client, id).await;
        assert_eq!(info.status, "COMPLETED", "{info:?}");
        assert_eq!(info.worker_id, "survivor");
        let expected_attempt = if on_doomed.contains(id) { 2 } else { 1 };
        assert_eq!(info.attempt, expected_attempt, "{info:?}");
    }
}

#[tokio::test]
async fn accepted_executions_survive_a_scheduler_kill_9() {
    let dir = TempDir::new("scheduler-kill");
    let (mut first, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let echo = register(&mut client, "echo").await;
    let mut accepted = Vec::new();
    for n in 0..50 {
        let payload = format!("{{\"n\":{n}}}");
        accepted.push((trigger(&mut client, &echo, &payload).await, payload));
    }
    // No worker yet: every one of them is pending when the scheduler dies.
    first.kill_9();

    let (_second, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let function = client
        .get_function(GetFunctionRequest {
            function_id: echo.clone(),
        })
        .await
        .expect("the function is still registered")
        .into_inner();
    assert_eq!(function.code.as_ref(), b"echo");
    for (id, _) in &accepted {
        let status = client
            .get_execution_status(GetExecutionStatusRequest {
                execution_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status, "PENDING",
            "{id} was acknowledged, so it survives"
        );
    }

    let _worker = worker(addr, "late", 4);
    for (id, payload) in &accepted {
        let info = terminal(&mut client, id).await;
        assert_eq!(info.status, "COMPLETED");
        assert_eq!(info.output.as_ref(), payload.as_bytes());
    }
}

#[tokio::test]
async fn finished_executions_keep_their_results_across_a_scheduler_kill_9() {
    let dir = TempDir::new("scheduler-kill-finished");
    let (mut first, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let _worker = worker(addr, "w", 2);
    let echo = register(&mut client, "echo").await;
    let id = trigger(&mut client, &echo, "\"kept\"").await;
    // Watching it finish means the terminal record was durable first.
    assert_eq!(terminal(&mut client, &id).await.status, "COMPLETED");
    first.kill_9();

    let (_second, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let info = terminal(&mut client, &id).await;
    assert_eq!(info.status, "COMPLETED");
    assert_eq!(info.output.as_ref(), b"\"kept\"");
    assert_eq!(info.worker_id, "w");
    assert_eq!(info.attempt, 1, "the attempt it finished on is remembered");
}

/// A history longer than a page, finished before a SIGKILL, is served from
/// disk by the restarted scheduler: an old execution's status, and a
/// filtered listing followed page by page.
#[tokio::test]
async fn a_history_is_read_from_disk_after_a_scheduler_kill_9() {
    let dir = TempDir::new("scheduler-kill-history");
    let (mut first, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let _worker = worker(addr, "w", 4);
    let echo = register(&mut client, "echo").await;
    let fail = register(&mut client, "fail").await;
    let mut echoed = Vec::new();
    let mut failed = BTreeMap::new();
    for n in 0..120 {
        let payload = format!("{{\"n\":{n}}}");
        echoed.push((trigger(&mut client, &echo, &payload).await, payload));
        if n % 4 == 0 {
            let reason = format!("\"reason {n}\"");
            failed.insert(trigger(&mut client, &fail, &reason).await, n);
        }
    }
    for (id, _) in &echoed {
        assert_eq!(terminal(&mut client, id).await.status, "COMPLETED");
    }
    for id in failed.keys() {
        assert_eq!(terminal(&mut client, id).await.status, "FAILED");
    }
    first.kill_9();

    let (_second, addr) = scheduler(dir.path(), &[]);
    let mut client = scheduler_client(addr);
    let (oldest, payload) = &echoed[0];
    let status = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: oldest.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, "COMPLETED");
    assert_eq!(status.output.as_ref(), payload.as_bytes());
    let info = status.info.expect("the full record");
    assert_eq!((info.worker_id.as_str(), info.attempt), ("w", 1));
    assert!(info.created_at_us > 0 && info.finished_at_us >= info.started_at_us);

    // Only the failed ones, of the fail function, in pages of 7.
    let mut listed = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_executions(ListExecutionsRequest {
                status: "FAILED".into(),
                function_id: fail.clone(),
                limit: 7,
                after_execution_id: after.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        for info in page.executions {
            assert_eq!(info.status, "FAILED");
            listed.insert(info.execution_id, info.error);
        }
        if page.next_after_execution_id.is_empty() {
            break;
        }
        after = page.next_after_execution_id;
    }
    assert_eq!(listed.len(), failed.len());
    for (id, n) in &failed {
        assert_eq!(listed[id], format!("reason {n}"), "{id}");
    }
}

/// The same on the PostgreSQL store (`--store`): acknowledged executions and
/// finished results survive a scheduler kill -9.
#[tokio::test]
async fn the_postgres_store_survives_a_scheduler_kill_9() {
    let Some(schema) = TestSchema::create("kill9") else {
        return;
    };
    let dir = TempDir::new("postgres-kill");
    let store = ["--store", schema.url(), "--lease", "3s"];
    let (mut first, addr) = scheduler(dir.path(), &store);
    until_leading(addr).await;
    let mut client = scheduler_client(addr);
    let _worker = worker(addr, "w", 2);
    let echo = register(&mut client, "echo").await;
    let done = trigger(&mut client, &echo, "\"kept\"").await;
    assert_eq!(settled(&mut client, &done).await.status, "COMPLETED");
    first.kill_9();

    // It leads once the dead one's lease has expired.
    let (_second, addr) = scheduler(dir.path(), &store);
    until_leading(addr).await;
    let mut client = scheduler_client(addr);
    let info = settled(&mut client, &done).await;
    assert_eq!(info.status, "COMPLETED");
    assert_eq!(info.output.as_ref(), b"\"kept\"");
    assert_eq!((info.worker_id.as_str(), info.attempt), ("w", 1));
    // Nothing went to the data directory.
    assert!(!dir.path().join("executions.jsonl").exists());
}

//! On PostgreSQL the history is the database's: a finished execution is
//! forgotten by the scheduler once its end is durable, and everything a
//! client asks of it afterwards (status, watch, listings and their filters,
//! a cancel, the counts, an idempotent retry) is answered from SQL, merged
//! with the live executions the scheduler holds.
//!
//! A cluster in the test's process on the machine's PostgreSQL server (a
//! schema of its own; see `support/postgres.rs` for when this skips).

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use taskforge_proto::scheduler::{
    CancelExecutionRequest, GetClusterStatsRequest, GetExecutionStatusRequest,
    ListExecutionsRequest, TriggerExecutionRequest,
};
use taskforge_services::cluster::{Cluster, ClusterConfig};
use tonic::Code;

use support::cluster::loopback;
use support::postgres::TestSchema;
use support::processes::{TempDir, scheduler_client};
use support::standby::until_leading;
use support::watch::{Client, register, running, terminal, trigger};

/// Every execution a listing shows, page by page (`limit` each), in order.
async fn list_all(client: &mut Client, status: &str, function_id: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_executions(ListExecutionsRequest {
                status: status.to_string(),
                function_id: function_id.to_string(),
                after_execution_id: after.clone(),
                limit,
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.executions.len() <= limit as usize);
        ids.extend(page.executions.into_iter().map(|info| info.execution_id));
        if page.next_after_execution_id.is_empty() {
            return ids;
        }
        after = page.next_after_execution_id;
    }
}

fn sorted(ids: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = ids.iter().collect();
    set.into_iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_read_listed_filtered_and_counted_from_the_database() {
    let Some(schema) = TestSchema::create("history_sql") else {
        return;
    };
    let dir = TempDir::new("history-sql");
    let config = ClusterConfig {
        data_dir: None,
        database_url: Some(schema.url().to_string()),
        ..loopback(&dir, 1, 4)
    };
    let cluster = Cluster::start(config).await.expect("start the cluster");
    until_leading(cluster.grpc_addr).await;
    let mut client = scheduler_client(cluster.grpc_addr);
    let echo = register(&mut client, "echo").await;
    let fail = register(&mut client, "fail").await;
    let sleep = register(&mut client, "sleep").await;

    let mut echoes = Vec::new();
    for n in 0..12 {
        let id = trigger(&mut client, &echo, &n.to_string()).await;
        assert_eq!(terminal(&mut client, &id).await.status, "COMPLETED");
        echoes.push(id);
    }
    let mut fails = Vec::new();
    for n in 0..3 {
        let id = trigger(&mut client, &fail, &format!("\"no {n}\"")).await;
        assert_eq!(terminal(&mut client, &id).await.status, "FAILED");
        fails.push(id);
    }
    let keyed = TriggerExecutionRequest {
        function_id: echo.clone(),
        payload: Bytes::from_static(b"\"once\""),
        idempotency_key: "only-once".into(),
        ..Default::default()
    };
    let first = client
        .trigger_execution(keyed.clone())
        .await
        .expect("trigger")
        .into_inner()
        .execution_id;
    assert_eq!(terminal(&mut client, &first).await.status, "COMPLETED");
    echoes.push(first.clone());
    // One still running: live, held by the scheduler, not in the history.
    let live = trigger(&mut client, &sleep, "600000").await;
    running(&mut client, &live).await;

    // Forgotten by the scheduler once its end was durable: read back.
    let status = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: echoes[3].clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (status.status.as_str(), &status.output[..]),
        ("COMPLETED", &b"3"[..])
    );
    let watched = terminal(&mut client, &fails[1]).await;
    assert_eq!(watched.error, "no 1");

    // Listings merge the history with what is live, in id order, paged.
    let mut everything: Vec<String> = echoes.iter().chain(&fails).cloned().collect();
    everything.push(live.clone());
    assert_eq!(list_all(&mut client, "", "", 4).await, sorted(&everything));
    assert_eq!(list_all(&mut client, "FAILED", "", 2).await, sorted(&fails));
    assert_eq!(
        list_all(&mut client, "COMPLETED", &echo, 5).await,
        sorted(&echoes)
    );
    assert_eq!(list_all(&mut client, "", &fail, 100).await, sorted(&fails));
    assert_eq!(
        list_all(&mut client, "RUNNING", "", 10).await,
        std::slice::from_ref(&live)
    );
    assert_eq!(
        list_all(&mut client, "PENDING", "", 10).await,
        Vec::<String>::new()
    );

    // A retry of a keyed execution finds it, long after it finished.
    let again = client
        .trigger_execution(keyed)
        .await
        .expect("retry")
        .into_inner()
        .execution_id;
    assert_eq!(again, first);

    // A finished execution cannot be cancelled; an unknown one is not found.
    let cancel = |id: &str| CancelExecutionRequest {
        execution_id: id.to_string(),
    };
    let refused = client
        .cancel_execution(cancel(&echoes[0]))
        .await
        .expect_err("it finished");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("already finished as COMPLETED"));
    let unknown = client
        .cancel_execution(cancel("00000000000000ff"))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let status = client
        .get_execution_status(GetExecutionStatusRequest {
            execution_id: "00000000000000ff".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.status, "NOT_FOUND");

    // Counted from the database and from what is live.
    let stats = client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        (stats.completed, stats.failed, stats.running),
        (13, 3, 1),
        "{stats:?}"
    );
    client
        .cancel_execution(cancel(&live))
        .await
        .expect("cancel");
    cluster.shutdown().await;
}

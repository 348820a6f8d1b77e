//! What the scheduler's memory holds per finished execution.
//!
//! Finished executions go to the history on disk; memory keeps a summary of
//! each (its id in the listing index, where its record lies, and the core's
//! status and attempt) so that a long history costs little. On PostgreSQL
//! the history is the database's, and memory keeps nothing of it. These tests
//! count the bytes the allocator hands out — exact and deterministic, unlike
//! a process's resident size — while executions finish in a real cluster,
//! and again when a scheduler starts on a long history.

mod support;

use std::alloc::System;
use std::sync::Arc;

use bytes::Bytes;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::task::JoinSet;

use taskforge_proto::scheduler::{GetClusterStatsRequest, TriggerExecutionRequest};
use taskforge_services::clock::system_clock;
use taskforge_services::cluster::{Cluster, ClusterConfig};
use taskforge_services::scheduler::{SchedulerOptions, SchedulerService};
use taskforge_services::store::{JsonlStore, StdFileSystem};

use support::cluster::loopback;
use support::postgres::TestSchema;
use support::processes::{TempDir, scheduler_client};
use support::watch::{Client, is_terminal, register};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The budget per finished execution.
const BUDGET: f64 = 200.0;

/// The budget per finished execution when the store keeps the history
/// (PostgreSQL): nothing of it stays, but tables and buffers keep the size
/// they grew to (50 to 135 KB over 10k to 90k executions here and in CI, not
/// growing with them); any entry kept per execution (24 bytes and up)
/// exceeds it.
const BUDGET_IN_DATABASE: f64 = 16.0;

/// The allocator's counts are the whole process's: one measurement at a
/// time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes allocated and not yet freed, in the whole process (the counts of
/// allocated and freed bytes include what reallocations grew and shrank).
fn held() -> i64 {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// Runs `count` echo executions, 64 at a time, each followed to its end.
async fn run(client: &Client, function_id: &str, count: usize) {
    let mut running = JoinSet::new();
    for n in 0..count {
        if running.len() == 64 {
            running.join_next().await;
        }
        let mut client = client.clone();
        let request = TriggerExecutionRequest {
            function_id: function_id.to_string(),
            payload: Bytes::from(format!("{{\"n\":{n}}}")),
            ..Default::default()
        };
        running.spawn(async move {
            let mut updates = client
                .trigger_and_watch_execution(request)
                .await
                .expect("trigger")
                .into_inner();
            while let Some(info) = updates.message().await.expect("watch") {
                if is_terminal(&info) {
                    assert_eq!(info.status, "COMPLETED", "{info:?}");
                    return;
                }
            }
            panic!("the watch ended before the execution did");
        });
    }
    while running.join_next().await.is_some() {}
}

/// A round trip through the actor: everything it did before (filing the
/// executions whose ends were published) is done.
async fn settle(client: &mut Client) {
    client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .expect("stats");
}

/// Bytes the process holds more per execution after `measured` more have
/// finished, once `warm_up` brought connections, buffers and pools to their
/// working size.
async fn held_per_execution(
    client: &mut Client,
    function_id: &str,
    warm_up: usize,
    measured: usize,
) -> f64 {
    run(client, function_id, warm_up).await;
    settle(client).await;
    let before = held();
    run(client, function_id, measured).await;
    settle(client).await;
    (held() - before) as f64 / measured as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_execution_costs_the_scheduler_under_200_bytes() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const WARM_UP: usize = 5_000;
    const MEASURED: usize = 20_000;
    let dir = TempDir::new("history-memory");
    let cluster = Cluster::start(loopback(&dir, 1, 8))
        .await
        .expect("start the cluster");
    let mut client = scheduler_client(cluster.grpc_addr);
    let echo = register(&mut client, "echo").await;

    let running = held_per_execution(&mut client, &echo, WARM_UP, MEASURED).await;
    println!("while running: {running:.1} bytes held per finished execution");
    drop(client);
    cluster.shutdown().await;

    // A scheduler starting on that history holds as little.
    let before = held();
    let store = JsonlStore::open(Arc::new(StdFileSystem), dir.path().to_path_buf())
        .expect("open the store");
    let scheduler =
        SchedulerService::load(SchedulerOptions::default(), Box::new(store), system_clock())
            .expect("load");
    let restarted = (held() - before) as f64 / (WARM_UP + MEASURED) as f64;
    println!("after a restart: {restarted:.1} bytes held per finished execution");
    drop(scheduler);
    assert!(
        running <= BUDGET,
        "{running:.1} bytes per finished execution; the budget is {BUDGET}"
    );
    assert!(
        restarted <= BUDGET,
        "{restarted:.1} bytes per finished execution after a restart; the budget is {BUDGET}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_finished_execution_costs_the_scheduler_nothing() {
    let Some(schema) = TestSchema::create("history_memory") else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
    const WARM_UP: usize = 2_000;
    const MEASURED: usize = 30_000;
    let dir = TempDir::new("history-memory-postgres");
    let config = ClusterConfig {
        data_dir: None,
        database_url: Some(schema.url().to_string()),
        ..loopback(&dir, 1, 8)
    };
    let cluster = Cluster::start(config).await.expect("start the cluster");
    support::standby::until_leading(cluster.grpc_addr).await;
    let mut client = scheduler_client(cluster.grpc_addr);
    let echo = register(&mut client, "echo").await;
    let running = held_per_execution(&mut client, &echo, WARM_UP, MEASURED).await;
    println!("on PostgreSQL: {running:.1} bytes held per finished execution");
    let stats = client
        .get_cluster_stats(GetClusterStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.completed, (WARM_UP + MEASURED) as u64);
    drop(client);
    cluster.shutdown().await;
    assert!(
        running <= BUDGET_IN_DATABASE,
        "{running:.1} bytes per finished execution; the budget is {BUDGET_IN_DATABASE}"
    );
}

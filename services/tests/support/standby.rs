//! Schedulers that share a database: waiting for one to lead, and a client
//! that triggers without pause and keeps what was acknowledged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::{
    GetClusterStatsRequest, ListWorkersRequest, TriggerExecutionRequest, WatchExecutionRequest,
};
use taskforge_services::auth::{self, Credentials};
use taskforge_services::net::{self, ChannelConfig};
use tokio::sync::watch;
use tonic::Code;

use super::processes::{scheduler_client, scheduler_list};
use super::watch::{Client, GUARD, is_terminal};

/// A client of whichever of `schedulers` leads.
pub fn leader_client(schedulers: &[SocketAddr]) -> Client {
    let channel = net::connect_schedulers(
        &scheduler_list(schedulers),
        &ChannelConfig::default(),
        |_| Ok(None),
    )
    .expect("valid addresses");
    auth::scheduler_client(channel, Credentials::none())
}

/// What the scheduler at `addr` answers a call: `Ok` when it leads, else
/// its standby's message.
pub async fn ask(addr: SocketAddr) -> Result<(), String> {
    let mut client = scheduler_client(addr);
    match client.get_cluster_stats(GetClusterStatsRequest {}).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::Unavailable => Err(status.message().to_string()),
        Err(status) => panic!("{addr} answered {status}"),
    }
}

/// Asks the scheduler at `addr` until `done` holds for its answer; returns
/// the answer and how long it took. A lease changes hands on a timer, with
/// nothing to watch: this asks every 20 ms.
pub async fn until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&Result<(), String>) -> bool,
) -> (Result<(), String>, Duration) {
    let started = Instant::now();
    loop {
        let answer = ask(addr).await;
        if done(&answer) {
            return (answer, started.elapsed());
        }
        assert!(
            started.elapsed() < GUARD,
            "{addr}: still waiting for {what} after {GUARD:?}; it says {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the scheduler at `addr` leads; returns how long that took.
pub async fn until_leading(addr: SocketAddr) -> Duration {
    until(addr, "it to lead", Result::is_ok).await.1
}

/// Waits until the leader `client` reaches lists a worker named `id`
/// (asking every 20 ms: a join is not watchable).
pub async fn until_worker(client: &mut Client, id: &str) {
    let started = Instant::now();
    loop {
        let listed = client.list_workers(ListWorkersRequest {}).await;
        if listed.is_ok_and(|list| list.into_inner().workers.iter().any(|w| w.worker_id == id)) {
            return;
        }
        assert!(
            started.elapsed() < GUARD,
            "worker {id} did not join within {GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Triggers `function` with `payload` in a loop, retrying whatever is not
/// acknowledged, until told to stop; every acknowledged id is kept, in
/// order. An unacknowledged trigger may or may not have been recorded: the
/// tests promise nothing about those.
pub struct Triggering {
    pub acknowledged: Arc<Mutex<Vec<String>>>,
    count: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Triggering {
    pub fn start(mut client: Client, function: String, payload: &'static str) -> Triggering {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0);
        let (stop, stopped) = watch::channel(false);
        let kept = acknowledged.clone();
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                let request = TriggerExecutionRequest {
                    function_id: function.clone(),
                    payload: Bytes::from_static(payload.as_bytes()),
                    ..Default::default()
                };
                match client.trigger_execution(request).await {
                    Ok(response) => {
                        let mut kept = kept.lock().unwrap();
                        kept.push(response.into_inner().execution_id);
                        count_tx.send_replace(kept.len());
                    }
                    Err(status)
                        if matches!(status.code(), Code::InvalidArgument | Code::NotFound) =>
                    {
                        panic!("trigger: {status}")
                    }
                    // No leader for a moment, or the call died with one:
                    // not acknowledged, try again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Triggering {
            acknowledged,
            count,
            stop,
            task,
        }
    }

    /// Waits until `n` triggers in all were acknowledged.
    pub async fn until_acknowledged(&mut self, n: usize) {
        let reached = self.count.wait_for(|count| *count >= n);
        match tokio::time::timeout(GUARD, reached).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("the triggering task ended"),
            Err(_) => panic!("fewer than {n} triggers acknowledged after {GUARD:?}"),
        }
    }

    pub fn acknowledged_so_far(&self) -> usize {
        *self.count.borrow()
    }

    /// Stops and returns every acknowledged id.
    pub async fn stop(self) -> Vec<String> {
        let _ = self.stop.send(true);
        self.task.await.expect("the triggering task");
        let kept = self.acknowledged.lock().unwrap();
        kept.clone()
    }
}

/// The execution's terminal state, following it across changes of leader:
/// a watch that a stepping-down leader ends, or a standby refuses, is
/// opened again (every 20 ms) until one reports the end.
pub async fn settled(client: &mut Client, id: &str) -> ExecutionInfo {
    let started = Instant::now();
    loop {
        let request = WatchExecutionRequest {
            execution_id: id.to_string(),
        };
        let mut last = None;
        if let Ok(response) = client.watch_execution(request).await {
            let mut stream = response.into_inner();
            while let Ok(Some(info)) = stream.message().await {
                if is_terminal(&info) {
                    return info;
                }
                last = Some(info);
            }
        }
        assert!(
            started.elapsed() < GUARD,
            "execution {id}: no terminal state after {GUARD:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

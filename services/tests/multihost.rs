//! The cluster across real network hosts: network namespaces joined by veth
//! pairs to a bridge (iproute2's `ip`), addresses from 198.18.0.0/15 inside
//! those namespaces only. The scheduler runs on one host with TLS and both
//! tokens, two workers on two others, and the client — this test, from a
//! thread that entered the fourth host's namespace — drives it over gRPC.
//!
//! Needs root and `ip`. Elsewhere the test says so and returns, unless
//! `TASKFORGE_REQUIRE_NETNS` is set (`.ci/run` sets it), where that fails.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use taskforge_proto::common::ExecutionInfo;
use taskforge_proto::scheduler::ListWorkersRequest;
use taskforge_services::auth::{self, Credentials, SchedulerClient, Token};
use taskforge_services::net::{self, ChannelConfig};
use taskforge_services::tls::{self, ClientTlsArgs};

use support::processes::TempDir;
use support::watch::{GUARD, is_terminal, register, trigger, watch_until};

const SCHEDULER_IP: &str = "198.18.0.1";
const API_TOKEN: &str = "multihost-api";
const WORKER_TOKEN: &str = "multihost-workers";

/// Runs `ip ARGS`, failing with its message.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Network namespaces for the hosts and the bridge between them, and the
/// processes running in them; all removed on drop, also when a test fails.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    processes: Vec<Child>,
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("tf{}", std::process::id());
        let mut lab = Lab {
            prefix: prefix.clone(),
            namespaces: Vec::new(),
            processes: Vec::new(),
        };
        let lan = lab.namespace("lan");
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "br0", "up"]);
        lab
    }

    fn namespace(&mut self, host: &str) -> String {
        let name = format!("{}{host}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        name
    }

    fn lan(&self) -> String {
        format!("{}lan", self.prefix)
    }

    /// The bridge's end of `host`'s cable.
    fn port(&self, host: &str) -> String {
        format!("v{}{host}", std::process::id())
    }

    /// A host on the bridge at 198.18.0.`n`.
    fn host(&mut self, host: &str, n: u8) -> String {
        let name = self.namespace(host);
        let lan = self.lan();
        let port = self.port(host);
        ip(&[
            "link", "add", &port, "netns", &lan, "type", "veth", "peer", "name", "eth0", "netns",
            &name,
        ]);
        ip(&["-n", &lan, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("198.18.0.{n}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Cuts (or restores) `host`'s cable at the bridge.
    fn link(&self, host: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.lan(), "link", "set", &self.port(host), state]);
    }

    /// Starts `taskforge ARGS` on `namespace`.
    fn run(&mut self, namespace: &str, args: &[&str], stdout: Stdio) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_taskforge")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .expect("start taskforge in a namespace");
        self.processes.push(child);
        self.processes.last_mut().expect("just pushed")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

/// Whether this machine can make the lab, or why not.
fn lab_possible() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("no `ip` command (iproute2)".into()),
    }
}

/// Runs `body` on a thread inside the network namespace `namespace`, on a
/// runtime of its own: every socket it opens is that host's.
fn on_host<F, Fut, T>(namespace: &str, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = PathBuf::from("/var/run/netns").join(namespace);
    std::thread::spawn(move || {
        let handle = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter it");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(body())
    })
    .join()
    .expect("the client thread")
}

fn connect(ca: &Path) -> SchedulerClient {
    let url = format!("https://{SCHEDULER_IP}:50051");
    let args = ClientTlsArgs {
        ca: Some(ca.to_path_buf()),
        ..ClientTlsArgs::default()
    };
    let channel =
        net::connect_lazy_tls(&url, &ChannelConfig::default(), args.config(&url).unwrap()).unwrap();
    auth::scheduler_client(
        channel,
        Credentials::new(Some(&Token::new(API_TOKEN).unwrap())),
    )
}

async fn workers(client: &mut SchedulerClient) -> BTreeSet<String> {
    match client.list_workers(ListWorkersRequest {}).await {
        Ok(response) => response
            .into_inner()
            .workers
            .into_iter()
            .map(|worker| worker.worker_id)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Lists workers until exactly `expected` are connected.
async fn workers_become(client: &mut SchedulerClient, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|w| w.to_string()).collect();
    let settle = async {
        while workers(client).await != expected {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(GUARD, settle)
        .await
        .unwrap_or_else(|_| panic!("workers never became {expected:?}"));
}

async fn done(client: &mut SchedulerClient, id: &str) -> ExecutionInfo {
    let info = watch_until(client, id, "the end", is_terminal).await;
    assert_eq!(info.status, "COMPLETED", "{id}: {}", info.error);
    info
}

#[test]
fn a_cluster_across_network_hosts_survives_a_cut_link() {
    if let Err(why) = lab_possible() {
        assert!(
            std::env::var_os("TASKFORGE_REQUIRE_NETNS").is_none(),
            "TASKFORGE_REQUIRE_NETNS is set but the lab cannot run: {why}"
        );
        eprintln!("SKIPPED: the multi-host test needs root and iproute2 ({why})");
        return;
    }
    let dir = TempDir::new("multihost");
    let certs = dir.path().join("certs");
    tls::generate(&certs, &[SCHEDULER_IP.to_string()]).unwrap();
    let cert = |name: &str| certs.join(name).to_str().unwrap().to_string();
    let data = dir.path().join("data");

    let mut lab = Lab::new();
    let scheduler_host = lab.host("s", 1);
    let worker_hosts = [lab.host("w1", 2), lab.host("w2", 3)];
    let client_host = lab.host("c", 4);

    let scheduler = lab.run(
        &scheduler_host,
        &[
            "scheduler",
            "--grpc",
            &format!("{SCHEDULER_IP}:50051"),
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            &cert(tls::SERVER_CERT),
            "--tls-key",
            &cert(tls::SERVER_KEY),
            "--client-ca",
            &cert(tls::CA_CERT),
            "--api-token",
            API_TOKEN,
            "--worker-token",
            WORKER_TOKEN,
            "--heartbeat-timeout",
            "2s",
        ],
        Stdio::piped(),
    );
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the scheduler's first line");
    assert!(line.contains("listening on 198.18.0.1:50051"), "{line:?}");
    // Two workers, and an intruder beside w2 with the right certificate but
    // a guessed token.
    let workers = [
        (&worker_hosts[0], "w1", WORKER_TOKEN),
        (&worker_hosts[1], "w2", WORKER_TOKEN),
        (&worker_hosts[1], "intruder", "guessed"),
    ];
    for (host, id, token) in workers {
        let scheduler_url = format!("https://{SCHEDULER_IP}:50051");
        let (ca, cert, key) = (
            cert(tls::CA_CERT),
            cert(tls::WORKER_CERT),
            cert(tls::WORKER_KEY),
        );
        lab.run(
            host,
            &[
                "worker",
                "--scheduler",
                &scheduler_url,
                "--ca",
                &ca,
                "--tls-client-cert",
                &cert,
                "--tls-client-key",
                &key,
                "--worker-token",
                token,
                "--id",
                id,
                "--pool",
                "4",
                "--runtimes",
                "builtin",
                "--heartbeat-interval",
                "200ms",
            ],
            Stdio::null(),
        );
    }
    // A CA the scheduler's certificate is not from.
    let other = dir.path().join("other");
    tls::generate(&other, &[SCHEDULER_IP.to_string()]).unwrap();
    let other_ca = other.join(tls::CA_CERT);

    let ca = certs.join(tls::CA_CERT);
    let cut = |up: bool| lab.link("w1", up);
    let (before_cut, on_w1, sleep) = on_host(&client_host, {
        let ca = ca.clone();
        let other_ca = other_ca.clone();
        move || {
            async move {
                let mut client = connect(&ca);
                // The intruder never joins.
                workers_become(&mut client, &["w1", "w2"]).await;
                // A plaintext client and one trusting another CA are
                // refused; the scheduler goes on serving.
                let plain = net::connect_lazy(
                    &format!("http://{SCHEDULER_IP}:50051"),
                    &ChannelConfig::default(),
                )
                .unwrap();
                let mut plain = auth::scheduler_client(
                    plain,
                    Credentials::new(Some(&Token::new(API_TOKEN).unwrap())),
                );
                assert!(plain.list_workers(ListWorkersRequest {}).await.is_err());
                let stranger = connect(&other_ca)
                    .list_workers(ListWorkersRequest {})
                    .await
                    .unwrap_err();
                assert!(
                    format!("{stranger:?}")
                        .to_lowercase()
                        .contains("certificate"),
                    "{stranger:?}"
                );
                // The seed flow.
                let greet = register(&mut client, "sum_and_greet").await;
                let id = trigger(&mut client, &greet, r#"{"name":"Ada","a":2,"b":3}"#).await;
                let info = done(&mut client, &id).await;
                let output: serde_json::Value = serde_json::from_slice(&info.output).unwrap();
                assert_eq!(output["sum"], 5);
                // A burst spreads across both workers.
                let sleep = register(&mut client, "sleep").await;
                let mut ids = Vec::new();
                for _ in 0..16 {
                    ids.push(trigger(&mut client, &sleep, "200").await);
                }
                let mut used = BTreeSet::new();
                for id in &ids {
                    used.insert(done(&mut client, id).await.worker_id);
                }
                assert_eq!(used, ["w1".to_string(), "w2".to_string()].into());
                // Long sleeps, running on both, for the cut.
                let mut ids = Vec::new();
                for _ in 0..8 {
                    ids.push(trigger(&mut client, &sleep, "3000").await);
                }
                let mut on_w1 = Vec::new();
                for id in &ids {
                    let running = support::watch::running(&mut client, id).await;
                    if running.worker_id == "w1" {
                        on_w1.push(id.clone());
                    }
                }
                assert!(!on_w1.is_empty(), "nothing ran on w1");
                (ids, on_w1, sleep)
            }
        }
    });

    cut(false);
    on_host(&client_host, {
        let ca = ca.clone();
        let (ids, on_w1) = (before_cut.clone(), on_w1.clone());
        move || {
            async move {
                let mut client = connect(&ca);
                // w1's executions are re-queued to w2 once its heartbeats
                // stop, and everything completes.
                for id in &ids {
                    let info = done(&mut client, id).await;
                    if on_w1.contains(id) {
                        assert_eq!(info.worker_id, "w2", "{id} moved to the live worker");
                        assert!(info.attempt >= 2, "{id}: attempt {}", info.attempt);
                    }
                }
                workers_become(&mut client, &["w2"]).await;
            }
        }
    });

    cut(true);
    on_host(&client_host, move || {
        async move {
            let mut client = connect(&ca);
            // w1 comes back under a new session; its late results for the
            // attempts it lost were fenced: every execution still shows
            // the attempt that completed it on w2.
            workers_become(&mut client, &["w1", "w2"]).await;
            for id in &on_w1 {
                let info = done(&mut client, id).await;
                assert_eq!(info.worker_id, "w2", "{id} kept its w2 result");
            }
            let mut used = BTreeSet::new();
            let mut ids = Vec::new();
            for _ in 0..16 {
                ids.push(trigger(&mut client, &sleep, "200").await);
            }
            for id in &ids {
                used.insert(done(&mut client, id).await.worker_id);
            }
            assert!(used.contains("w1"), "w1 works again: {used:?}");
        }
    });
}

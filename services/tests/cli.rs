//! The client commands of the real `taskforge` binary (`deploy`, `invoke`,
//! `jobs`, `workers`) against a whole cluster on loopback.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use taskforge_services::cluster::Cluster;

use support::processes::TempDir;

async fn start(dir: &TempDir) -> Cluster {
    let config = support::cluster::loopback(dir, 1, 2);
    Cluster::start(config).await.expect("start the cluster")
}

/// Runs `taskforge ARGS --scheduler http://ADDR` to completion.
async fn taskforge(addr: SocketAddr, args: &[&str], stdin: Option<&'static str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskforge"));
    command
        .args(args)
        .args(["--scheduler", &format!("http://{addr}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("run taskforge");
        if let Some(text) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().expect("taskforge ran")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn deploy_invoke_and_list_from_the_command_line() {
    let dir = TempDir::new("cli");
    let cluster = start(&dir).await;
    let addr = cluster.grpc_addr;

    let handler = dir.path().join("greet.txt");
    std::fs::write(&handler, "sum_and_greet\n").unwrap();
    let handler = handler.to_str().unwrap();
    let unknown = taskforge(addr, &["deploy", handler], None).await;
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("--language"),
        "{}",
        stderr(&unknown)
    );

    let deployed = taskforge(
        addr,
        &["deploy", handler, "--language", "builtin", "--json"],
        None,
    )
    .await;
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let deployed: Value = serde_json::from_slice(&deployed.stdout).unwrap();
    assert_eq!(deployed["name"], "greet");
    let function_id = deployed["function_id"].as_str().unwrap().to_string();

    // By name, with the payload on standard input, waiting for the result.
    let invoked = taskforge(
        addr,
        &["invoke", "greet", "-", "--wait", "10s"],
        Some(r#"{"name":"Ada","a":2,"b":3}"#),
    )
    .await;
    assert!(invoked.status.success(), "{}", stderr(&invoked));
    let text = stdout(&invoked);
    assert!(text.starts_with("COMPLETED  "), "{text}");
    assert!(
        text.contains(r#"{"message":"Hello Ada","sum":5}"#),
        "{text}"
    );

    // By id, JSON out.
    let invoked = taskforge(
        addr,
        &[
            "invoke",
            &function_id,
            r#"{"name":"Bo","a":1,"b":1}"#,
            "--wait",
            "10s",
            "--json",
        ],
        None,
    )
    .await;
    let job: Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["output"]["sum"], 2);

    // A function that fails: the command says so and exits 2.
    let fail = dir.path().join("fail.txt");
    std::fs::write(&fail, "fail").unwrap();
    let fail = fail.to_str().unwrap();
    taskforge(addr, &["deploy", fail, "--language", "builtin"], None).await;
    let failed = taskforge(addr, &["invoke", "fail", "\"no\"", "--wait", "10s"], None).await;
    assert_eq!(failed.status.code(), Some(2));
    assert!(stdout(&failed).starts_with("FAILED"), "{}", stdout(&failed));

    let jobs = taskforge(addr, &["jobs", "--status", "completed"], None).await;
    let text = stdout(&jobs);
    assert!(text.starts_with("EXECUTION"), "{text}");
    assert_eq!(
        text.lines().count(),
        3,
        "a header and two executions:\n{text}"
    );
    let jobs = taskforge(addr, &["jobs", "--json"], None).await;
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 3);

    let workers = taskforge(addr, &["workers"], None).await;
    let text = stdout(&workers);
    assert!(text.contains("worker-1"), "{text}");
    assert!(text.contains("builtin"), "{text}");

    let missing = taskforge(addr, &["invoke", "nobody"], None).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no function has the id or name"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn deploy_checks_webassembly_modules() {
    let dir = TempDir::new("cli-wasm");
    let cluster = start(&dir).await;
    let addr = cluster.grpc_addr;

    let reactor = dir.path().join("reactor.wat");
    std::fs::write(&reactor, r#"(module (func (export "run")))"#).unwrap();
    let refused = taskforge(addr, &["deploy", reactor.to_str().unwrap()], None).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("_start"), "{}", stderr(&refused));

    let command = dir.path().join("noop.wat");
    std::fs::write(&command, r#"(module (func (export "_start")))"#).unwrap();
    let deployed = taskforge(addr, &["deploy", command.to_str().unwrap()], None).await;
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(stdout(&deployed).starts_with("deployed noop (wasm) as "));

    let unreachable = Command::new(env!("CARGO_BIN_EXE_taskforge"))
        .args(["workers", "--scheduler", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        stderr(&unreachable).contains("unreachable"),
        "{}",
        stderr(&unreachable)
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn deploy_a_python_file_and_see_its_logs() {
    use std::sync::Arc;
    use taskforge_services::runtime::process::{
        Interpreter, Language, ProcessConfig, ProcessRuntime,
    };
    use taskforge_services::runtime::{Runtime, Runtimes};
    use taskforge_services::worker::WorkerConfig;

    let dir = TempDir::new("cli-python");
    let python = Interpreter::find(Language::Python, "python3".as_ref()).expect("python3");
    let config = ProcessConfig {
        warm: 1,
        ..ProcessConfig::new(env!("CARGO_BIN_EXE_taskforge").into())
    };
    let runtime = ProcessRuntime::start(python, config).await.expect("python");
    let cluster = Cluster::start(taskforge_services::cluster::ClusterConfig {
        worker: WorkerConfig {
            runtimes: Runtimes::new([Arc::new(runtime) as Arc<dyn Runtime>]),
            ..WorkerConfig::new("worker", 2)
        },
        ..support::cluster::loopback(&dir, 1, 2)
    })
    .await
    .expect("start the cluster");
    let addr = cluster.grpc_addr;
    let file = format!("{}/../examples/hello.py", env!("CARGO_MANIFEST_DIR"));

    let deployed = taskforge(addr, &["deploy", &file], None).await;
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("deployed hello (python)"),
        "{}",
        stdout(&deployed)
    );
    let invoked = taskforge(
        addr,
        &["invoke", "hello", r#"{"name":"Ada"}"#, "--wait", "30s"],
        None,
    )
    .await;
    assert!(invoked.status.success(), "{}", stderr(&invoked));
    let text = stdout(&invoked);
    assert!(text.contains(r#"{"message":"Hello, Ada!"}"#), "{text}");
    assert!(text.contains("logs:\n  greeting Ada\n"), "{text}");
}

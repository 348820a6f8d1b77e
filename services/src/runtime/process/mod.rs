//! The `python` and `javascript` runtimes: each execution runs in a fresh
//! interpreter inside its own throwaway [`sandbox`](crate::sandbox), killed
//! after one use.
//!
//! Starting an interpreter in a sandbox costs tens of milliseconds, so a
//! [`WarmPool`] keeps a few started ahead: interpreter up, bootstrap loaded,
//! waiting for code and event on its stdin. An execution takes one, and a
//! replacement starts in the background.
//!
//! Preparing a function only checks its source is UTF-8 text: the source is
//! kept by the worker (once per function) and sent to each sandbox with the
//! event, since every sandbox starts empty.

mod interpreter;
mod pool;
mod protocol;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use taskforge_proto::common::Function;

use super::{BoxFuture, Call, Prepared, Ran, RunResult, Runtime, Stop};
use crate::sandbox::{Limits, RequestLimits, Spec};
pub use interpreter::{Interpreter, Language};
use pool::WarmPool;

/// How sandboxes are made and bounded; one for all the worker's runtimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    /// The program that runs `sandbox-exec`: this binary (tests pass the
    /// built `taskforge`).
    pub launcher: PathBuf,
    /// Memory one execution may use, in bytes (its address-space limit; a
    /// function may ask for less). JavaScript gets V8's fixed reservations
    /// on top (see [`Language::address_space_bytes`]).
    pub memory_bytes: u64,
    /// Size of each sandbox's writable `/tmp`, in bytes.
    pub tmp_bytes: u64,
    /// Processes and threads one sandbox may run at once.
    pub processes: u64,
    pub open_files: u64,
    /// Sandboxes kept started ahead, per runtime.
    pub warm: usize,
    /// Largest output; a larger one fails the execution.
    pub max_output_bytes: usize,
    /// Namespaces and an unprivileged user (true), or only limits and a
    /// process group (`--allow-unsandboxed`).
    pub isolate: bool,
    /// More host paths functions may read (data, libraries), bound
    /// read-only at the same place (`--sandbox-read-only`).
    pub extra_read_only: Vec<PathBuf>,
}

impl ProcessConfig {
    pub fn new(launcher: PathBuf) -> ProcessConfig {
        ProcessConfig {
            launcher,
            memory_bytes: 512 << 20,
            tmp_bytes: 64 << 20,
            processes: 64,
            open_files: 256,
            warm: 2,
            max_output_bytes: 1 << 20,
            isolate: true,
            extra_read_only: Vec::new(),
        }
    }
}

/// One interpreted language's runtime.
#[derive(Debug)]
pub struct ProcessRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    interpreter: Interpreter,
    config: ProcessConfig,
    /// Sandboxes for functions at the worker's memory limit.
    pool: Arc<WarmPool>,
}

impl ProcessRuntime {
    /// Checks that a sandbox for `interpreter` starts and runs a function
    /// here (the error says why not), then starts filling its warm pool.
    pub async fn start(
        interpreter: Interpreter,
        config: ProcessConfig,
    ) -> Result<ProcessRuntime, String> {
        let spec = spec(&interpreter, &config, config.memory_bytes);
        spec.validate()?;
        let pool = Arc::new(WarmPool::new(config.launcher.clone(), spec, config.warm));
        let runtime = ProcessRuntime {
            shared: Arc::new(Shared {
                interpreter,
                config,
                pool,
            }),
        };
        runtime.probe().await?;
        runtime.shared.pool.fill();
        Ok(runtime)
    }

    /// Runs the language's echo once, the way every execution runs.
    async fn probe(&self) -> Result<(), String> {
        let language = self.shared.interpreter.language;
        let prepared = PreparedScript {
            shared: self.shared.clone(),
            code: Arc::from(language.echo_source().as_bytes()),
            memory_bytes: self.shared.config.memory_bytes,
        };
        let ran = prepared
            .call(Call {
                payload: Bytes::from_static(b"[\"probe\"]"),
                stop: Stop::new(),
                timeout: Duration::from_secs(30),
            })
            .await;
        match ran.result {
            Ok(output) if output.as_ref() == b"[\"probe\"]" => Ok(()),
            Ok(output) => Err(format!(
                "the {language} sandbox answered {:?} to a probe",
                String::from_utf8_lossy(&output)
            )),
            Err(error) => Err(format!(
                "the {language} sandbox does not work here: {error}"
            )),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &str {
        self.shared.interpreter.language.name()
    }

    fn prepare(&self, function: &Function) -> BoxFuture<Result<Arc<dyn Prepared>, String>> {
        let prepared = match std::str::from_utf8(&function.code) {
            Ok(_) => {
                let limit = self.shared.config.memory_bytes;
                let memory_bytes = match function.max_memory_bytes {
                    0 => limit,
                    wanted => wanted.min(limit),
                };
                Ok(Arc::new(PreparedScript {
                    shared: self.shared.clone(),
                    code: Arc::from(function.code.as_ref()),
                    memory_bytes,
                }) as Arc<dyn Prepared>)
            }
            Err(error) => Err(format!("the function's source is not UTF-8 text: {error}")),
        };
        Box::pin(std::future::ready(prepared))
    }
}

/// A function's source, kept for every execution of it.
#[derive(Debug)]
struct PreparedScript {
    shared: Arc<Shared>,
    code: Arc<[u8]>,
    memory_bytes: u64,
}

impl Prepared for PreparedScript {
    fn run(&self, payload: Bytes, stop: Stop) -> BoxFuture<RunResult> {
        let call = self.call(Call {
            payload,
            stop,
            timeout: Duration::from_secs(3600),
        });
        Box::pin(async move { call.await.result })
    }

    fn call(&self, call: Call) -> BoxFuture<Ran> {
        let shared = self.shared.clone();
        let code = self.code.clone();
        let memory_bytes = self.memory_bytes;
        Box::pin(async move {
            let language = shared.interpreter.language;
            let config = &shared.config;
            // However this call ends (even aborted by a timeout), the pool
            // starts a replacement once it is over.
            let _refill = pool::Refill(shared.pool.clone());
            // JavaScript's heap size is fixed when node starts: a function
            // with its own memory limit gets a sandbox started for it.
            let warm = if memory_bytes == config.memory_bytes || language == Language::Python {
                shared.pool.take().await
            } else {
                let spec = spec(&shared.interpreter, config, memory_bytes);
                pool::start(&config.launcher, &spec).await
            };
            let mut warm = match warm {
                Ok(warm) => warm,
                Err(error) => {
                    return Ran {
                        result: Err(error),
                        logs: String::new(),
                    };
                }
            };
            let limits = RequestLimits {
                // Just above the timeout: the worker's timer stops it first.
                cpu_seconds: Some(call.timeout.as_secs() + 2),
                address_space_bytes: Some(language.address_space_bytes(memory_bytes)),
            };
            let request = protocol::request(&limits, &code, &call.payload);
            let ran = tokio::select! {
                ran = protocol::exchange(&mut warm, request, config.max_output_bytes) => ran,
                () = call.stop.stopped() => {
                    // Wait until nothing of it runs any more.
                    let _ = warm.sandbox.kill().await;
                    Ran { result: Err("stopped".to_string()), logs: String::new() }
                }
            };
            ran
        })
    }
}

/// The sandbox for `interpreter` with `memory_bytes` of memory.
fn spec(interpreter: &Interpreter, config: &ProcessConfig, memory_bytes: u64) -> Spec {
    Spec {
        program: interpreter.program.clone(),
        args: interpreter.language.args(memory_bytes),
        read_only: interpreter
            .read_only_paths()
            .into_iter()
            .chain(config.extra_read_only.iter().cloned())
            .collect(),
        tmp_bytes: config.tmp_bytes,
        limits: Limits {
            // Applied once the interpreter is up (see `sandbox::launcher`),
            // lowered by each request as it needs.
            address_space_bytes: Some(interpreter.language.address_space_bytes(memory_bytes)),
            cpu_seconds: None,
            open_files: Some(config.open_files),
            processes: Some(config.processes),
            file_size_bytes: Some(config.tmp_bytes),
        },
        isolate: config.isolate,
    }
}

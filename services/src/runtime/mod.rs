//! Runtimes: how a worker runs a function's code.
//!
//! A function's `language` names its runtime (`builtin`, `wasm`, ...). Each
//! runtime has three lifetimes, named in the types as in wasmtime and Spin:
//! - a [`Runtime`] lives as long as the worker (an engine, shared caches);
//! - a [`Prepared`] function lives as long as the worker keeps its definition
//!   (a resolved handler, a compiled module): made once, run many times;
//! - an execution is one call of [`Prepared::run`]: payload in, output or
//!   error out, stopping promptly when its [`Stop`] fires (cancel, timeout).
//!
//! Preparing and running return futures that the worker spawns as tasks, so
//! a slow compile or a long execution never holds up the worker's stream or
//! heartbeats; CPU-bound work moves itself to a blocking thread.

pub mod builtin;
pub mod process;
pub mod wasm;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use taskforge_proto::common::Function;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What one execution produced: its output, or the error it failed with.
pub type RunResult = Result<Bytes, String>;

/// A way of running functions of one language.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// The language functions name to be run here.
    fn name(&self) -> &str;

    /// Makes `function` ready to run: the error says why it cannot be.
    fn prepare(&self, function: &Function) -> BoxFuture<Result<Arc<dyn Prepared>, String>>;
}

/// A function made ready by its runtime.
pub trait Prepared: Send + Sync + fmt::Debug + 'static {
    /// Runs one execution on `payload`. Each run is isolated from every
    /// other; it ends soon after `stop` fires.
    fn run(&self, payload: Bytes, stop: Stop) -> BoxFuture<RunResult>;

    /// Runs one execution as the worker does: with its timeout known (a
    /// runtime may bound CPU time by it) and keeping what the function
    /// printed. By default, [`run`](Prepared::run) with no logs.
    fn call(&self, call: Call) -> BoxFuture<Ran> {
        let run = self.run(call.payload, call.stop);
        Box::pin(async move {
            Ran {
                result: run.await,
                logs: String::new(),
            }
        })
    }
}

/// One execution's inputs.
#[derive(Clone, Debug)]
pub struct Call {
    pub payload: Bytes,
    pub stop: Stop,
    /// The worker stops the execution after this long.
    pub timeout: Duration,
}

/// What one execution produced, and the tail of what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub result: RunResult,
    pub logs: String,
}

/// Tells a running execution to stop (it was cancelled, or ran out of time).
/// Cheap to clone; the runtime polls [`Stop::is_stopped`] from blocking code
/// or awaits [`Stop::stopped`] from async code.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once [`stop`](Stop::stop) was called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// The runtimes a worker has, by language name.
#[derive(Clone, Debug)]
pub struct Runtimes {
    by_name: Arc<BTreeMap<String, Arc<dyn Runtime>>>,
}

impl Runtimes {
    pub fn new(runtimes: impl IntoIterator<Item = Arc<dyn Runtime>>) -> Runtimes {
        let by_name = runtimes
            .into_iter()
            .map(|runtime| (runtime.name().to_ascii_lowercase(), runtime))
            .collect();
        Runtimes {
            by_name: Arc::new(by_name),
        }
    }

    /// Only the built-in handlers.
    pub fn builtin() -> Runtimes {
        Runtimes::new([Arc::new(builtin::BuiltinRuntime::new()) as Arc<dyn Runtime>])
    }

    /// The built-in handlers and WebAssembly (`wasm`) with `config`.
    pub fn builtin_and_wasm(config: wasm::WasmConfig) -> Result<Runtimes, String> {
        let wasm = wasm::WasmRuntime::new(config)?;
        Ok(Runtimes::new([
            Arc::new(builtin::BuiltinRuntime::new()) as Arc<dyn Runtime>,
            Arc::new(wasm),
        ]))
    }

    /// The languages these runtimes run, in order (announced in the hello).
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// The runtime for `language` (ASCII case and surrounding space ignored).
    pub fn get(&self, language: &str) -> Result<&Arc<dyn Runtime>, String> {
        let wanted = language.trim().to_ascii_lowercase();
        self.by_name.get(&wanted).ok_or_else(|| {
            format!(
                "this worker does not run {:?}; it runs: {}",
                language.chars().take(64).collect::<String>(),
                self.names().join(", ")
            )
        })
    }
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes::builtin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_wakes_a_waiter_and_stays_stopped() {
        let stop = Stop::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!stop.is_stopped());
        stop.stop();
        waiter.await.unwrap();
        assert!(stop.is_stopped());
        stop.stopped().await;
    }

    #[test]
    fn runtimes_are_found_by_language() {
        let runtimes = Runtimes::builtin();
        assert_eq!(runtimes.names(), ["builtin"]);
        assert!(runtimes.get(" BuiltIn ").is_ok());
        let error = runtimes.get("python").unwrap_err();
        assert!(error.contains("it runs: builtin"), "{error}");
    }

    #[test]
    fn wasm_can_join_the_builtin_handlers() {
        let runtimes = Runtimes::builtin_and_wasm(wasm::WasmConfig::default()).unwrap();
        assert_eq!(runtimes.names(), ["builtin", "wasm"]);
        assert_eq!(runtimes.get("WASM").unwrap().name(), "wasm");
    }
}

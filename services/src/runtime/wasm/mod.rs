//! The `wasm` runtime: WASI preview 1 command modules on wasmtime.
//!
//! The convention: the payload is the module's stdin, its output is what it
//! writes to stdout, and it succeeds when `_start` returns or it exits with
//! code 0. A non-zero exit fails the execution with "exit code N" and the
//! tail of stderr; a trap fails it with the trap's message; a limit hit
//! fails it naming the limit.
//!
//! The three lifetimes of the runtime seam map onto wasmtime's:
//! - [`WasmRuntime`] (per worker): one [`Engine`] with the pooling allocator
//!   and copy-on-write memory images, its epoch ticker, the WASI [`Linker`],
//!   and a bounded cache of compiled modules (so a function defined again
//!   after a reconnect is not compiled again);
//! - [`WasmFunction`] (per function): the compiled module, pre-linked
//!   ([`InstancePre`]);
//! - an execution: a fresh [`Store`] and instance, so nothing one execution
//!   leaves in memory or globals is seen by another. It runs on a blocking
//!   thread (CPU-bound code never holds up the worker's stream, heartbeats
//!   or other slots) and stops within a tick of the epoch ticker after its
//!   [`Stop`] fires.
//!
//! The module sees only the [`wasi`] shim: no files, environment or
//! network. Memory, tables and output are capped per execution ([`limits`]).

mod cache;
mod engine;
mod limits;
mod wasi;

#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime::{
    Engine, Extern, ExternType, InstancePre, Linker, Module, ModuleExport, Store, Trap,
    UpdateDeadline,
};

use super::{BoxFuture, Prepared, RunResult, Runtime, Stop};
use cache::ModuleCache;
use limits::Limits;
use wasi::{Ended, WasiCtx, WasiView};

/// What a runtime allows each execution, and how much it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmConfig {
    /// Linear memory per instance, in bytes: growth past it is refused.
    pub max_memory_bytes: usize,
    /// Bytes an execution may write to stdout, and separately to stderr:
    /// writing more fails the execution.
    pub max_output_bytes: usize,
    /// Elements per table (function pointers, for indirect calls).
    pub max_table_elements: usize,
    /// Executions that may run at once (instance slots in the pool); one
    /// more fails to start saying so. Keep it above the worker's slots.
    pub max_instances: u32,
    /// Compiled modules kept for functions defined again.
    pub cached_modules: usize,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            max_memory_bytes: 64 << 20,
            // The platform's payload limit.
            max_output_bytes: 1 << 20,
            max_table_elements: 20_000,
            max_instances: 128,
            cached_modules: 64,
        }
    }
}

/// The error of an execution stopped by its [`Stop`].
const STOPPED: &str = "the execution was stopped (cancelled, or out of time)";

/// How much of stderr a failure quotes (its end, where the reason usually is).
const STDERR_TAIL_BYTES: usize = 2048;

/// Runs WebAssembly functions. Cheap to clone: clones share the engine and
/// the cache.
#[derive(Clone)]
pub struct WasmRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    config: WasmConfig,
    engine: Engine,
    linker: Linker<Execution>,
    cache: Mutex<ModuleCache<Compiled>>,
    /// Seeds each execution's random generator: keyed from the OS at
    /// start, so the sequence differs between executions and processes.
    seeds: RandomState,
    executions: AtomicU64,
}

impl fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// A runtime with its own engine and epoch ticker. Fails if the engine
    /// cannot be made (for example, the pool cannot reserve its memory).
    pub fn new(config: WasmConfig) -> Result<WasmRuntime, String> {
        let engine = engine::engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)
            .map_err(|error| format!("cannot link the WASI functions: {error:#}"))?;
        engine::start_ticker(&engine)?;
        let cache = Mutex::new(ModuleCache::new(config.cached_modules));
        let shared = Shared {
            config,
            engine,
            linker,
            cache,
            seeds: RandomState::new(),
            executions: AtomicU64::new(0),
        };
        Ok(WasmRuntime {
            shared: Arc::new(shared),
        })
    }

    /// The memory limit for a function that asks for `asked` bytes (0: the
    /// worker's): at most the worker's own limit.
    pub fn memory_for(&self, asked: u64) -> Result<usize, String> {
        let most = self.shared.config.max_memory_bytes;
        match usize::try_from(asked) {
            Ok(0) => Ok(most),
            Ok(asked) if asked <= most => Ok(asked),
            _ => Err(format!(
                "the function asks for {asked} bytes of memory; this worker allows at most {most} \
                 (--wasm-max-memory-bytes)"
            )),
        }
    }

    pub fn config(&self) -> &WasmConfig {
        &self.shared.config
    }

    /// Compiles `code` (a binary module) and links it, or finds it compiled
    /// already. CPU-bound: call it from a blocking thread.
    pub fn compile(&self, code: &Bytes) -> Result<WasmFunction, String> {
        if let Some(function) = self.cached(code) {
            return Ok(function);
        }
        let compiled = self.shared.compile(code)?;
        self.shared
            .lock_cache()
            .insert(code.clone(), compiled.clone());
        Ok(self.function(compiled))
    }

    fn cached(&self, code: &[u8]) -> Option<WasmFunction> {
        let compiled = self.shared.lock_cache().get(code)?;
        Some(self.function(compiled))
    }

    fn function(&self, compiled: Compiled) -> WasmFunction {
        WasmFunction {
            shared: self.shared.clone(),
            max_memory_bytes: self.shared.config.max_memory_bytes,
            compiled,
        }
    }

    #[cfg(test)]
    fn cached_modules(&self) -> usize {
        self.shared.lock_cache().len()
    }
}

impl Shared {
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ModuleCache<Compiled>> {
        // The cache is consistent after every call, so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn compile(&self, code: &[u8]) -> Result<Compiled, String> {
        if !code.starts_with(b"\0asm") {
            return Err(
                "the code is not a binary WebAssembly module (it does not start \
                 with \\0asm); register WAT text or a .wasm module with language \"wasm\""
                    .to_string(),
            );
        }
        let initial_memory = limits::initial_memory(code);
        limits::check_memory_start(initial_memory, self.config.max_memory_bytes)?;
        let module = Module::new(&self.engine, code)
            .map_err(|error| format!("the module does not compile: {error:#}"))?;
        let start = start_export(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|error| format!("the module cannot be linked: {error:#}"))?;
        Ok(Compiled {
            pre,
            start,
            initial_memory,
        })
    }
}

/// The module's `_start`, checked to take and return nothing.
fn start_export(module: &Module) -> Result<ModuleExport, String> {
    let runnable = match module.get_export("_start") {
        Some(ExternType::Func(ty)) => ty.params().len() == 0 && ty.results().len() == 0,
        _ => false,
    };
    if !runnable {
        return Err(
            "the module exports no `_start` function taking and returning nothing: \
             it must be a WASI command (payload on stdin, output on stdout)"
                .to_string(),
        );
    }
    module
        .get_export_index("_start")
        .ok_or_else(|| "the module's `_start` export cannot be found".to_string())
}

/// A compiled, pre-linked module.
#[derive(Clone)]
struct Compiled {
    pre: InstancePre<Execution>,
    start: ModuleExport,
    /// Bytes of memory the module starts with.
    initial_memory: u64,
}

/// A function ready to run: its module compiled and linked.
#[derive(Clone)]
pub struct WasmFunction {
    shared: Arc<Shared>,
    /// Linear memory each execution may use (the function's own limit, at
    /// most the runtime's).
    max_memory_bytes: usize,
    compiled: Compiled,
}

impl fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmFunction").finish_non_exhaustive()
    }
}

/// One execution's store data.
#[derive(Debug)]
struct Execution {
    wasi: WasiCtx,
    limits: Limits,
}

impl WasiView for Execution {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
}

/// Why an execution did not get to run, or how it stopped.
enum Failure {
    Start(wasmtime::Error),
    Run(wasmtime::Error),
}

impl WasmFunction {
    /// The same function with executions limited to `max_memory_bytes` of
    /// linear memory; refused if the module starts with more than that.
    pub fn with_memory_limit(mut self, max_memory_bytes: usize) -> Result<WasmFunction, String> {
        limits::check_memory_start(self.compiled.initial_memory, max_memory_bytes)?;
        self.max_memory_bytes = max_memory_bytes;
        Ok(self)
    }

    /// Runs one execution on `payload` in a fresh instance, on this thread,
    /// until it ends or soon after `stop` fires.
    pub fn execute(&self, payload: Bytes, stop: &Stop) -> RunResult {
        if stop.is_stopped() {
            return Err(STOPPED.to_string());
        }
        let shared = &self.shared;
        let config = &shared.config;
        let seed = shared
            .seeds
            .hash_one(shared.executions.fetch_add(1, Ordering::Relaxed));
        let execution = Execution {
            wasi: WasiCtx::new(payload, config.max_output_bytes, seed),
            limits: Limits::new(self.max_memory_bytes, config.max_table_elements),
        };
        let mut store = Store::new(&shared.engine, execution);
        store.limiter(|execution| &mut execution.limits);
        // Every tick, check whether the execution should stop.
        store.set_epoch_deadline(1);
        let watched = stop.clone();
        store.epoch_deadline_callback(move |_| {
            Ok(if watched.is_stopped() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        let ran = self.start(&mut store);
        outcome(ran, store.into_data())
    }

    fn start(&self, store: &mut Store<Execution>) -> Result<(), Failure> {
        let instance = self
            .compiled
            .pre
            .instantiate(&mut *store)
            .map_err(Failure::Start)?;
        let start = instance
            .get_module_export(&mut *store, &self.compiled.start)
            .and_then(Extern::into_func)
            .ok_or_else(|| Failure::Start(wasmtime::Error::msg("`_start` is not a function")))?;
        let start = start.typed::<(), ()>(&*store).map_err(Failure::Start)?;
        start.call(&mut *store, ()).map_err(Failure::Run)
    }
}

/// The execution's result: its stdout, or why it failed.
fn outcome(ran: Result<(), Failure>, execution: Execution) -> RunResult {
    let reason = match ran {
        Ok(()) => return Ok(Bytes::from(execution.wasi.stdout.into_vec())),
        Err(Failure::Run(error)) => match error.downcast_ref::<Ended>() {
            Some(Ended::Exit(0)) => return Ok(Bytes::from(execution.wasi.stdout.into_vec())),
            Some(ended) => ended.to_string(),
            None => match error.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => STOPPED.to_string(),
                Some(trap) => trap.to_string(),
                None => format!("the module failed: {error:#}"),
            },
        },
        Err(Failure::Start(error)) => format!("the module could not start: {error:#}"),
    };
    let mut message = match execution.limits.refused() {
        Some(refused) => format!("{}; then {reason}", refused.describe()),
        None => reason,
    };
    if let Some(tail) = stderr_tail(execution.wasi.stderr.as_slice()) {
        message.push_str("; stderr: ");
        message.push_str(&tail);
    }
    Err(message)
}

/// The end of what the module wrote to stderr, as text, if it wrote any.
fn stderr_tail(stderr: &[u8]) -> Option<String> {
    let cut = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    // Start on a character boundary: skip UTF-8 continuation bytes.
    let start = stderr[cut..]
        .iter()
        .position(|&byte| byte & 0b1100_0000 != 0b1000_0000)
        .map_or(stderr.len(), |skip| cut + skip);
    let text = String::from_utf8_lossy(&stderr[start..]);
    let text = text.trim();
    match (text.is_empty(), cut > 0) {
        (true, _) => None,
        (false, true) => Some(format!("...{text}")),
        (false, false) => Some(text.to_string()),
    }
}

impl Runtime for WasmRuntime {
    fn name(&self) -> &str {
        "wasm"
    }

    fn prepare(
        &self,
        function: &taskforge_proto::common::Function,
    ) -> BoxFuture<Result<Arc<dyn Prepared>, String>> {
        let runtime = self.clone();
        let code = function.code.clone();
        let asked = function.max_memory_bytes;
        Box::pin(async move {
            let memory = runtime.memory_for(asked)?;
            let function = match runtime.cached(&code) {
                Some(function) => function,
                None => tokio::task::spawn_blocking(move || runtime.compile(&code))
                    .await
                    .map_err(|error| format!("compiling the module failed: {error}"))??,
            };
            Ok(Arc::new(function.with_memory_limit(memory)?) as Arc<dyn Prepared>)
        })
    }
}

impl Prepared for WasmFunction {
    fn run(&self, payload: Bytes, stop: Stop) -> BoxFuture<RunResult> {
        let function = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || function.execute(payload, &stop))
                .await
                .unwrap_or_else(|error| Err(format!("the execution's thread failed: {error}")))
        })
    }
}

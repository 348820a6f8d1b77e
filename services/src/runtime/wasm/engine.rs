//! The wasmtime engine a runtime shares between its functions, and the
//! ticker that gives it a sense of time.
//!
//! Tuned for many short executions ("Tuning Wasmtime for Fast
//! Instantiation"): the pooling allocator keeps instance slots ready, and
//! copy-on-write memory images make a fresh memory a mapping rather than a
//! copy. Compiled code checks the engine's epoch at loop headers and
//! function entries; the ticker advances it every millisecond, so a store's
//! epoch-deadline callback runs that often and can stop the execution.

use std::thread;
use std::time::Duration;

use wasmtime::{
    Config, Engine, EngineWeak, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use super::WasmConfig;

/// How often the epoch advances: how soon a stopped execution notices.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// An engine for `config`'s limits.
pub(super) fn engine(config: &WasmConfig) -> Result<Engine, String> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(config.max_memory_bytes)
        .table_elements(config.max_table_elements);
    let mut wasmtime = Config::new();
    wasmtime
        .epoch_interruption(true)
        .memory_init_cow(true)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasmtime).map_err(|error| format!("cannot start the wasm engine: {error:#}"))
}

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`].
/// It holds the engine weakly and ends once the engine is gone: the runtime,
/// every module compiled with it and every running store hold it, so an
/// execution still running keeps its ticker.
pub(super) fn start_ticker(engine: &Engine) -> Result<thread::JoinHandle<()>, String> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || tick(&weak))
        .map_err(|error| format!("cannot start the wasm epoch ticker thread: {error}"))
}

fn tick(engine: &EngineWeak) {
    loop {
        thread::sleep(EPOCH_TICK);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_ends_with_its_engine() {
        let engine = engine(&WasmConfig::default()).unwrap();
        let ticker = start_ticker(&engine).unwrap();
        drop(engine);
        // Joins once the ticker saw the engine gone (its next tick).
        ticker.join().unwrap();
    }
}

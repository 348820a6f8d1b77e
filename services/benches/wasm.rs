//! Latency of the `wasm` runtime: a warm execution (a fresh instance of a
//! compiled module, then `_start` on a small payload) and a cold one (a
//! module never seen before: compile, link, instantiate, run).
//!
//! Run with `cargo bench -p taskforge-services --bench wasm`. Targets: a warm
//! execution p50 <= 50 µs, a cold one <= 50 ms. The warm figures are taken
//! twice: calling the runtime directly (instantiate + run), and through the
//! runtime seam the worker uses (which adds the hop to a blocking thread).

use std::time::{Duration, Instant};

use bytes::Bytes;
use taskforge_proto::common::Function;
use taskforge_services::runtime::wasm::{WasmConfig, WasmRuntime};
use taskforge_services::runtime::{Runtime, Stop};

const ECHO: &str = include_str!("../../examples/echo.wat");
const WARMUP: usize = 1_000;
const WARM_RUNS: usize = 20_000;
const SEAM_RUNS: usize = 5_000;
const COLD_RUNS: usize = 20;

fn main() {
    let runtime = WasmRuntime::new(WasmConfig::default()).expect("the engine starts");
    let echo = Bytes::from(wat::parse_str(ECHO).expect("echo.wat parses"));
    let payload = Bytes::from_static(br#"{"name":"Ada","a":2,"b":3}"#);

    let function = runtime.compile(&echo).expect("echo compiles");
    let stop = Stop::new();
    let mut warm = Vec::with_capacity(WARM_RUNS);
    for run in 0..WARMUP + WARM_RUNS {
        let started = Instant::now();
        let output = function.execute(payload.clone(), &stop);
        let elapsed = started.elapsed();
        assert_eq!(output.as_ref(), Ok(&payload), "echo echoes");
        if run >= WARMUP {
            warm.push(elapsed);
        }
    }
    report("warm execution (instantiate + run)", &mut warm);

    let seam = seam(&runtime, &echo, &payload);
    report(
        "warm execution via the seam (+ blocking-thread hop)",
        &mut seam.clone(),
    );

    let mut cold = Vec::with_capacity(COLD_RUNS);
    for run in 0..COLD_RUNS {
        // A module never compiled before: the echo with a unique data segment.
        let wat = ECHO.replacen(
            "(memory (export \"memory\") 2)",
            &format!("(memory (export \"memory\") 2) (data (i32.const 70000) \"cold-{run}\")"),
            1,
        );
        let code = Bytes::from(wat::parse_str(&wat).expect("the variant parses"));
        let started = Instant::now();
        let output = runtime
            .compile(&code)
            .and_then(|function| function.execute(payload.clone(), &stop));
        cold.push(started.elapsed());
        assert_eq!(output.as_ref(), Ok(&payload), "the cold echo echoes");
    }
    report("cold first execution (compile + link + run)", &mut cold);
}

/// Warm executions through [`Runtime::prepare`] and `Prepared::run`, as the
/// worker makes them.
fn seam(runtime: &WasmRuntime, echo: &Bytes, payload: &Bytes) -> Vec<Duration> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a tokio runtime");
    tokio.block_on(async {
        let function = Function {
            language: "wasm".into(),
            code: echo.clone(),
            ..Default::default()
        };
        let prepared = runtime.prepare(&function).await.expect("echo prepares");
        let mut times = Vec::with_capacity(SEAM_RUNS);
        for run in 0..WARMUP + SEAM_RUNS {
            let started = Instant::now();
            let output = prepared.run(payload.clone(), Stop::new()).await;
            let elapsed = started.elapsed();
            assert_eq!(output.as_ref(), Ok(payload), "echo echoes");
            if run >= WARMUP {
                times.push(elapsed);
            }
        }
        times
    })
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let at = |quantile: f64| {
        let index = ((times.len() as f64 - 1.0) * quantile).round() as usize;
        times[index]
    };
    println!(
        "{what}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  ({} runs)",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        times.len()
    );
}

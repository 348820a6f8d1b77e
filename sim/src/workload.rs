//! What the clients ask for: which function, with which payload, when — and
//! what the right answer to each request is.
//!
//! A workload is a list of [`Request`]s drawn from the seed: a mix of the
//! built-in functions that stay on the runtime (`echo`, `sleep`, `fail`,
//! `sum_and_greet`; never `spin`, whose thread would escape the simulation),
//! payloads that carry the request's number (so an output delivered to the
//! wrong execution cannot pass for the right one), arrival times spread over a
//! window with a few bursts (so pools fill up and executions queue), a
//! per-request attempt budget, and the runtime each request's function was
//! registered in (so it needs a worker that runs it).
//!
//! [`Expected`] is the oracle's model of each function, written here from the
//! functions' documentation rather than by calling their code: a wrong output
//! must not be checked against itself.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};

use crate::cluster::{BUILTIN, RuntimeName};
use crate::seed::Seed;

/// The built-in functions a simulation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    Echo,
    Sleep,
    Fail,
    SumAndGreet,
}

impl Function {
    pub const ALL: [Function; 4] = [
        Function::Echo,
        Function::Sleep,
        Function::Fail,
        Function::SumAndGreet,
    ];

    /// The handler's name, as a builtin function's `code`.
    pub fn code(self) -> &'static str {
        match self {
            Function::Echo => "echo",
            Function::Sleep => "sleep",
            Function::Fail => "fail",
            Function::SumAndGreet => "sum_and_greet",
        }
    }
}

/// Numbers requests within a run.
pub type RequestId = u32;

/// One execution a client will trigger.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: RequestId,
    /// Index of the client that sends it.
    pub client: usize,
    /// When the client sends it, from the start of the run.
    pub at: Duration,
    pub function: Function,
    pub payload: Bytes,
    /// How long the function runs (a `sleep`'s duration; zero otherwise).
    pub runs_for: Duration,
    pub max_attempts: u32,
    /// Start-to-close limit of each attempt; above any `sleep` here, so a
    /// worker's own timeout is always a bug.
    pub timeout: Duration,
    /// The runtime the function is registered in: only a worker that runs
    /// it may get the execution.
    pub runtime: RuntimeName,
    /// How long the execution may wait for its first start; `None` leaves it
    /// to the platform's default.
    pub schedule_to_start: Option<Duration>,
}

/// How a workload is drawn.
#[derive(Clone, Debug)]
pub struct Shape {
    pub requests: usize,
    pub clients: usize,
    /// Arrivals fall in this window.
    pub window: Range<Duration>,
    /// Of the requests, the share that arrives in bursts (all at once).
    pub burst_share: f64,
    /// How long a `sleep` request sleeps, in milliseconds: most of them in
    /// the first range, a quarter in the second (long enough to still run
    /// when a held result of an earlier attempt arrives).
    pub sleep_ms: [Range<u64>; 2],
    /// Relative weights of echo, sleep, fail, sum_and_greet.
    pub mix: [u32; 4],
    /// The client that sends its requests over HTTP, whose payloads must be
    /// JSON (an HTTP body is the JSON payload).
    pub http_client: Option<usize>,
    /// Each request's attempt budget is drawn from these, evenly.
    pub max_attempts: &'static [u32],
    /// The start-to-close limit of every attempt.
    pub timeout: Duration,
    /// Each request's runtime is drawn from these, evenly.
    pub runtimes: &'static [RuntimeName],
    /// Requests in these runtimes carry this schedule-to-start limit; the
    /// others leave it to the platform's default.
    pub start_limits: &'static [(RuntimeName, Duration)],
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            requests: 60,
            clients: 2,
            window: Duration::from_millis(300)..Duration::from_secs(5),
            burst_share: 0.4,
            sleep_ms: [20..400, 400..1_500],
            mix: [3, 5, 1, 2],
            http_client: None,
            max_attempts: &[1, 2, 3, 3, 3, 4],
            timeout: REQUEST_TIMEOUT,
            runtimes: &[BUILTIN],
            start_limits: &[],
        }
    }
}

/// The attempt-timeout requests carry unless the shape says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Draws the workload of a run.
pub fn generate(seed: Seed, shape: &Shape) -> Vec<Request> {
    let mut rng = seed.rng("workload");
    let window = shape.window.clone();
    let span = (window.end - window.start).as_micros() as u64;
    let mut times: Vec<Duration> = Vec::with_capacity(shape.requests);
    while times.len() < shape.requests {
        let at = window.start + Duration::from_micros(rng.random_range(0..span.max(1)));
        if rng.random_bool(shape.burst_share) {
            let size = rng.random_range(4..16).min(shape.requests - times.len());
            times.extend(std::iter::repeat_n(at, size));
        } else {
            times.push(at);
        }
    }
    times.sort();
    let total: u32 = shape.mix.iter().sum();
    times
        .into_iter()
        .enumerate()
        .map(|(index, at)| {
            let id = index as RequestId;
            let mut pick = rng.random_range(0..total);
            let function = Function::ALL
                .into_iter()
                .zip(shape.mix)
                .find(|&(_, weight)| {
                    let found = pick < weight;
                    pick = pick.saturating_sub(weight);
                    found
                })
                .map_or(Function::Echo, |(function, _)| function);
            let client = rng.random_range(0..shape.clients);
            let json_only = shape.http_client == Some(client);
            let payload = payload(&mut rng, function, id, &shape.sleep_ms, json_only);
            let runs_for = match function {
                Function::Sleep => serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .and_then(|value| value["ms"].as_u64())
                    .map_or(Duration::ZERO, Duration::from_millis),
                _ => Duration::ZERO,
            };
            let max_attempts = shape.max_attempts[rng.random_range(0..shape.max_attempts.len())];
            // Drawn only when there is a choice, so that the workloads of
            // single-runtime scenarios stay what they were.
            let runtime = match shape.runtimes {
                [only] => *only,
                many => many[rng.random_range(0..many.len())],
            };
            let schedule_to_start = shape
                .start_limits
                .iter()
                .find(|(name, _)| *name == runtime)
                .map(|&(_, limit)| limit);
            Request {
                id,
                client,
                at,
                function,
                payload,
                runs_for,
                max_attempts,
                timeout: shape.timeout,
                runtime,
                schedule_to_start,
            }
        })
        .collect()
}

fn payload(
    rng: &mut SmallRng,
    function: Function,
    id: RequestId,
    sleep_ms: &[Range<u64>; 2],
    json_only: bool,
) -> Bytes {
    let bytes = match function {
        Function::Echo if json_only => {
            let blob: String = (0..rng.random_range(0..24))
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            json!({"request": id, "blob": blob})
                .to_string()
                .into_bytes()
        }
        // Any bytes at all: the gRPC path carries them untouched.
        Function::Echo => {
            let mut bytes = id.to_be_bytes().to_vec();
            let extra = rng.random_range(0..24);
            bytes.extend((0..extra).map(|_| rng.random::<u8>()));
            bytes
        }
        Function::Sleep => {
            let range = sleep_ms[usize::from(rng.random_bool(0.25))].clone();
            json!({"ms": rng.random_range(range), "request": id})
                .to_string()
                .into_bytes()
        }
        Function::Fail => json!(format!("request {id} fails on purpose"))
            .to_string()
            .into_bytes(),
        Function::SumAndGreet => json!({
            "name": format!("request-{id}"),
            "a": rng.random_range(-1_000_000i64..1_000_000),
            "b": rng.random_range(-1_000_000i64..1_000_000),
        })
        .to_string()
        .into_bytes(),
    };
    Bytes::from(bytes)
}

/// The right answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// COMPLETED with exactly these bytes.
    Output(Bytes),
    /// COMPLETED with this JSON value (the encoding may differ).
    Json(Value),
    /// FAILED with this error.
    Error(String),
}

impl Expected {
    /// The outcome of a function that ran to the end, per its documentation.
    pub fn of(function: Function, payload: &[u8]) -> Expected {
        match function {
            Function::Echo | Function::Sleep => Expected::Output(Bytes::copy_from_slice(payload)),
            Function::Fail => match serde_json::from_slice::<Value>(payload) {
                Ok(Value::String(message)) if !message.is_empty() => Expected::Error(message),
                _ => Expected::Error("requested failure".to_string()),
            },
            Function::SumAndGreet => {
                let input: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                let name = input["name"].as_str().unwrap_or_default();
                let sum = input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0);
                Expected::Json(json!({"message": format!("Hello {name}"), "sum": sum}))
            }
        }
    }

    /// Whether a terminal state is this outcome.
    pub fn matches(&self, status: &str, output: &[u8], error: &str) -> bool {
        match self {
            // Exactly these bytes; through the gateway, JSON comes back as the
            // same value, not necessarily the same bytes.
            Expected::Output(bytes) => {
                status == "COMPLETED" && (output == &bytes[..] || same_json(output, bytes))
            }
            Expected::Json(value) => {
                status == "COMPLETED"
                    && serde_json::from_slice::<Value>(output).is_ok_and(|got| &got == value)
            }
            Expected::Error(message) => status == "FAILED" && error == message,
        }
    }
}

fn same_json(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Output(bytes) => {
                write!(f, "COMPLETED output={:?}", String::from_utf8_lossy(bytes))
            }
            Expected::Json(value) => write!(f, "COMPLETED output={value}"),
            Expected::Error(error) => write!(f, "FAILED error={error:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_workload() {
        let shape = Shape::default();
        let a = generate(Seed(3), &shape);
        let b = generate(Seed(3), &shape);
        assert_eq!(a.len(), shape.requests);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.payload == y.payload && x.at == y.at)
        );
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn expected_outcomes_follow_the_documentation() {
        let sum = Expected::of(Function::SumAndGreet, br#"{"name":"Ada","a":2,"b":3}"#);
        assert!(sum.matches("COMPLETED", br#"{"message":"Hello Ada","sum":5}"#, ""));
        assert!(!sum.matches("COMPLETED", br#"{"message":"Hello Ada","sum":6}"#, ""));
        let fail = Expected::of(Function::Fail, br#""boom""#);
        assert!(fail.matches("FAILED", b"", "boom"));
        let echo = Expected::of(Function::Echo, b"\x00\x01");
        assert!(echo.matches("COMPLETED", b"\x00\x01", ""));
        assert!(!echo.matches("FAILED", b"\x00\x01", ""));
    }
}

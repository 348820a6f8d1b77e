//! The functions a worker can run: built-in handlers, named by a function's code.
//!
//! A function registered with `language: "builtin"` has `code` naming one of
//! the handlers below; the scheduler checks that with [`Builtin::from_code`] at
//! registration (so a function no worker can run is refused up front, with the
//! handlers in the error), and the worker's `builtin` runtime resolves it once
//! per definition (`crate::runtime::builtin`).
//!
//! | handler | payload | output |
//! |---|---|---|
//! | `echo` | anything | the payload |
//! | `sleep` | milliseconds: `10` or `{"ms":10}` | the payload, after that long |
//! | `spin` | milliseconds, as for `sleep` | the payload, after burning CPU that long |
//! | `fail` | optional JSON string | always fails, with that string (or "requested failure") |
//! | `sum_and_greet` | `{"name":"Ada","a":2,"b":3}` | `{"message":"Hello Ada","sum":5}` |
//!
//! `sleep` waits on the clock its runtime is given ([`SleepClock`]): the
//! operating system's timers on a real worker, accurate to tens of
//! microseconds; tokio's timer under the simulation, so that it follows
//! simulated time. `spin` burns a blocking thread (`spawn_blocking`), which
//! escapes the simulation's control of time: it is for load tests only.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Number, Value};

/// The longest a `sleep` or `spin` may take.
pub const MAX_BUILTIN_DURATION: Duration = Duration::from_secs(3600);

/// A function definition the workers cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error(
        "unknown builtin handler {handler:?}: the code of a builtin function names one of: {}",
        Builtin::NAMES.join(", ")
    )]
    UnknownHandler { handler: String },
}

/// What a `sleep` waits on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SleepClock {
    /// A timer of the operating system's (async-io's, on a timerfd): fires
    /// within tens of microseconds of the deadline. tokio's own timer has
    /// a 1 ms tick and rounds every deadline up to the next one: a 10 ms
    /// sleep took 11.15 ms on average, and a load test of `sleep:10ms`
    /// measured the timer more than the platform.
    #[default]
    Precise,
    /// tokio's timer: it follows the simulation's (paused, driven) time.
    Tokio,
}

impl SleepClock {
    /// Waits `duration` on this clock.
    pub async fn sleep(self, duration: Duration) {
        match self {
            SleepClock::Precise => {
                async_io::Timer::after(duration).await;
            }
            SleepClock::Tokio => tokio::time::sleep(duration).await,
        }
    }
}

/// A built-in handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Returns the payload.
    Echo,
    /// Waits the given milliseconds (on the runtime's [`SleepClock`]), then
    /// returns the payload.
    Sleep,
    /// Burns CPU on a blocking thread for the given milliseconds, then returns the payload.
    Spin,
    /// Always fails.
    Fail,
    /// The seed's example: greets `name` and adds `a` and `b`.
    SumAndGreet,
}

impl Builtin {
    pub const ALL: [Builtin; 5] = [
        Builtin::Echo,
        Builtin::Sleep,
        Builtin::Spin,
        Builtin::Fail,
        Builtin::SumAndGreet,
    ];

    /// The handler names, as written in a function's `code`.
    pub const NAMES: &[&str] = &["echo", "sleep", "spin", "fail", "sum_and_greet"];

    /// The handler a builtin function's code names (surrounding whitespace,
    /// such as a trailing newline from a file, ignored).
    pub fn from_code(code: &[u8]) -> Result<Builtin, FunctionError> {
        let name = String::from_utf8_lossy(code);
        let trimmed = name.trim();
        Builtin::ALL
            .into_iter()
            .find(|builtin| builtin.name() == trimmed)
            .ok_or_else(|| FunctionError::UnknownHandler {
                handler: shorten(trimmed),
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::Sleep => "sleep",
            Builtin::Spin => "spin",
            Builtin::Fail => "fail",
            Builtin::SumAndGreet => "sum_and_greet",
        }
    }

    /// Runs the handler on `payload` (a `sleep` waiting on `clock`): its
    /// output, or the error the execution fails with.
    pub async fn run(&self, payload: Bytes, clock: SleepClock) -> Result<Bytes, String> {
        match self {
            Builtin::Echo => Ok(payload),
            Builtin::Sleep => {
                let duration = parse_duration("sleep", &payload)?;
                clock.sleep(duration).await;
                Ok(payload)
            }
            Builtin::Spin => {
                let duration = parse_duration("spin", &payload)?;
                spin(duration).await?;
                Ok(payload)
            }
            Builtin::Fail => Err(fail_message(&payload)),
            Builtin::SumAndGreet => sum_and_greet(&payload),
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// At most 64 characters of `text`, for error messages.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// What kind of JSON value this is, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The milliseconds a `sleep` or `spin` payload asks for: `10`, `2.5` or `{"ms":10}`.
fn parse_duration(handler: &str, payload: &[u8]) -> Result<Duration, String> {
    let expected = "expected a number of milliseconds, e.g. 10 or {\"ms\":10}";
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("{handler}: payload is not valid JSON ({e}); {expected}"))?;
    let ms = match &value {
        Value::Number(n) => n,
        Value::Object(fields) => match fields.get("ms") {
            Some(Value::Number(n)) => n,
            Some(other) => {
                return Err(format!(
                    "{handler}: field \"ms\" must be a number, got {}",
                    json_kind(other)
                ));
            }
            None => return Err(format!("{handler}: missing field \"ms\"; {expected}")),
        },
        other => return Err(format!("{handler}: got {}; {expected}", json_kind(other))),
    };
    let ms = ms.as_f64().unwrap_or(f64::NAN);
    if !ms.is_finite() || ms < 0.0 {
        return Err(format!(
            "{handler}: milliseconds must be zero or more, got {ms}"
        ));
    }
    let limit_ms = MAX_BUILTIN_DURATION.as_millis() as f64;
    if ms > limit_ms {
        return Err(format!(
            "{handler}: {ms} ms is longer than the limit of {limit_ms} ms (1 hour)"
        ));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// Burns CPU on a blocking thread for `duration`. Dropping the future (the task
/// was aborted: cancelled or timed out) stops the thread too.
async fn spin(duration: Duration) -> Result<(), String> {
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(Arc::clone(&stop));
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut state: u64 = 1;
        while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                state = std::hint::black_box(
                    state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407),
                );
            }
        }
        state
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("spin: the spinning thread failed: {e}"))
}

/// `fail`'s error: the payload if it is a non-empty JSON string.
fn fail_message(payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::String(message)) if !message.is_empty() => message,
        _ => "requested failure".to_string(),
    }
}

#[derive(serde::Serialize)]
struct Greeting {
    message: String,
    sum: Number,
}

/// `{"name":"Ada","a":2,"b":3}` → `{"message":"Hello Ada","sum":5}`.
fn sum_and_greet(payload: &[u8]) -> Result<Bytes, String> {
    let expected = "expected {\"name\": string, \"a\": number, \"b\": number}";
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("sum_and_greet: payload is not valid JSON ({e}); {expected}"))?;
    let Value::Object(fields) = &value else {
        return Err(format!(
            "sum_and_greet: payload is {}; {expected}",
            json_kind(&value)
        ));
    };
    let name = match fields.get("name") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(format!(
                "sum_and_greet: field \"name\" must be a string, got {}",
                json_kind(other)
            ));
        }
        None => return Err(format!("sum_and_greet: missing field \"name\"; {expected}")),
    };
    let number = |field: &str| match fields.get(field) {
        Some(Value::Number(n)) => Ok(n),
        Some(other) => Err(format!(
            "sum_and_greet: field \"{field}\" must be a number, got {}",
            json_kind(other)
        )),
        None => Err(format!(
            "sum_and_greet: missing field \"{field}\"; {expected}"
        )),
    };
    let sum = add(number("a")?, number("b")?)?;
    let greeting = Greeting {
        message: format!("Hello {name}"),
        sum,
    };
    serde_json::to_vec(&greeting)
        .map(Bytes::from)
        .map_err(|e| format!("sum_and_greet: cannot encode the result: {e}"))
}

/// `a + b`, integral when both are integers and the sum fits in 64 bits.
fn add(a: &Number, b: &Number) -> Result<Number, String> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        let sum = x + y;
        if let Ok(sum) = i64::try_from(sum) {
            return Ok(sum.into());
        }
        if let Ok(sum) = u64::try_from(sum) {
            return Ok(sum.into());
        }
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Err("sum_and_greet: \"a\" and \"b\" must be finite numbers".to_string());
    };
    Number::from_f64(x + y).ok_or_else(|| format!("sum_and_greet: {a} + {b} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(builtin: Builtin, payload: &str) -> Result<String, String> {
        builtin
            .run(
                Bytes::copy_from_slice(payload.as_bytes()),
                SleepClock::Precise,
            )
            .await
            .map(|out| String::from_utf8(out.to_vec()).expect("utf-8 output"))
    }

    #[test]
    fn from_code_finds_every_handler() {
        for builtin in Builtin::ALL {
            assert_eq!(Builtin::from_code(builtin.name().as_bytes()), Ok(builtin));
        }
        assert_eq!(Builtin::NAMES.len(), Builtin::ALL.len());
        assert_eq!(
            Builtin::from_code(b" sum_and_greet\n"),
            Ok(Builtin::SumAndGreet)
        );
    }

    #[test]
    fn from_code_refuses_unknown_handler_listing_handlers() {
        let err = Builtin::from_code(b"rm -rf /").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"rm -rf /\""), "{message}");
        for name in Builtin::NAMES {
            assert!(message.contains(name), "{message}");
        }
        // Not valid UTF-8, and very long: still a clear, bounded error.
        let err = Builtin::from_code(&[0xff; 1000]).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
        assert!(Builtin::from_code(b"").is_err());
        assert!(Builtin::from_code(b"Echo").is_err());
    }

    #[tokio::test]
    async fn echo_returns_the_payload() {
        assert_eq!(run(Builtin::Echo, "{\"x\":1}").await.unwrap(), "{\"x\":1}");
        assert_eq!(run(Builtin::Echo, "").await.unwrap(), "");
        let binary = Bytes::from_static(&[0, 159, 146, 150]);
        assert_eq!(
            Builtin::Echo.run(binary.clone(), SleepClock::Precise).await,
            Ok(binary)
        );
    }

    #[tokio::test]
    async fn sleep_waits_the_given_milliseconds() {
        // A lower bound only (how close it comes is for the load reports):
        // the precise timer never fires early.
        for payload in ["20", "{\"ms\":20}", "20.0", "0.5"] {
            let start = std::time::Instant::now();
            assert_eq!(run(Builtin::Sleep, payload).await.unwrap(), payload);
            let asked = parse_duration("sleep", payload.as_bytes()).unwrap();
            assert!(start.elapsed() >= asked, "{payload}");
        }
        run(Builtin::Sleep, "0").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_on_tokio_time_follows_the_runtime_clock() {
        // Paused time moves only when every task waits: the sleep takes
        // exactly what it asked of tokio's clock, as the simulation needs.
        let start = tokio::time::Instant::now();
        let out = Builtin::Sleep
            .run(Bytes::from_static(b"250"), SleepClock::Tokio)
            .await;
        assert_eq!(out, Ok(Bytes::from_static(b"250")));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn sleep_and_spin_read_milliseconds() {
        let ms = |payload: &str| parse_duration("sleep", payload.as_bytes());
        assert_eq!(ms("250"), Ok(Duration::from_millis(250)));
        assert_eq!(ms("{\"ms\":250}"), Ok(Duration::from_millis(250)));
        assert_eq!(
            ms("{\"ms\":2.5,\"other\":1}"),
            Ok(Duration::from_micros(2500))
        );
        assert_eq!(ms("0"), Ok(Duration::ZERO));
        assert_eq!(ms("3600000"), Ok(MAX_BUILTIN_DURATION));
    }

    #[tokio::test]
    async fn sleep_refuses_bad_payloads() {
        let cases = [
            ("", "not valid JSON"),
            ("ten", "not valid JSON"),
            ("\"10\"", "got a string"),
            ("{\"ms\":\"10\"}", "\"ms\" must be a number"),
            ("{\"millis\":10}", "missing field \"ms\""),
            ("-5", "zero or more"),
            ("3600001", "longer than the limit"),
            ("1e300", "longer than the limit"),
        ];
        for (payload, expected) in cases {
            let err = run(Builtin::Sleep, payload).await.unwrap_err();
            assert!(err.starts_with("sleep: "), "{payload}: {err}");
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[tokio::test]
    async fn spin_burns_then_returns_the_payload() {
        let start = std::time::Instant::now();
        assert_eq!(
            run(Builtin::Spin, "{\"ms\":5}").await.unwrap(),
            "{\"ms\":5}"
        );
        assert!(start.elapsed() >= Duration::from_millis(5));
        let err = run(Builtin::Spin, "7200000").await.unwrap_err();
        assert!(err.starts_with("spin: ") && err.contains("limit"), "{err}");
        assert!(run(Builtin::Spin, "[]").await.is_err());
    }

    #[tokio::test]
    async fn spin_stops_when_its_task_is_aborted() {
        // An hour of spinning, aborted at once: the blocking thread must stop,
        // or the runtime could not shut down at the end of this test.
        let task = tokio::spawn(async {
            Builtin::Spin
                .run(Bytes::from_static(b"3600000"), SleepClock::Precise)
                .await
        });
        tokio::task::yield_now().await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn fail_fails_with_the_given_message() {
        assert_eq!(
            run(Builtin::Fail, "\"disk on fire\"").await.unwrap_err(),
            "disk on fire"
        );
        for payload in ["", "{}", "42", "\"\"", "not json"] {
            assert_eq!(
                run(Builtin::Fail, payload).await.unwrap_err(),
                "requested failure"
            );
        }
    }

    #[tokio::test]
    async fn sum_and_greet_matches_the_seed_example() {
        assert_eq!(
            run(Builtin::SumAndGreet, r#"{"name":"Ada","a":2,"b":3}"#)
                .await
                .unwrap(),
            r#"{"message":"Hello Ada","sum":5}"#
        );
    }

    #[tokio::test]
    async fn sum_and_greet_keeps_integers_integral() {
        let cases = [
            (r#"{"name":"x","a":-2,"b":3}"#, "1"),
            (r#"{"name":"x","a":1.5,"b":2}"#, "3.5"),
            (r#"{"name":"x","a":2.5,"b":2.5}"#, "5.0"),
            (
                r#"{"name":"x","a":9223372036854775807,"b":1}"#,
                "9223372036854775808",
            ),
            (
                r#"{"name":"x","a":-9223372036854775808,"b":-1}"#,
                "-9.223372036854776e+18",
            ),
        ];
        for (payload, sum) in cases {
            let out = run(Builtin::SumAndGreet, payload).await.unwrap();
            assert_eq!(
                out,
                format!(r#"{{"message":"Hello x","sum":{sum}}}"#),
                "{payload}"
            );
        }
    }

    #[tokio::test]
    async fn sum_and_greet_names_the_problem_with_a_bad_payload() {
        let cases = [
            ("", "not valid JSON"),
            ("[1,2]", "payload is an array"),
            (r#"{"a":1,"b":2}"#, "missing field \"name\""),
            (
                r#"{"name":7,"a":1,"b":2}"#,
                "\"name\" must be a string, got a number",
            ),
            (r#"{"name":"x","b":2}"#, "missing field \"a\""),
            (r#"{"name":"x","a":1}"#, "missing field \"b\""),
            (
                r#"{"name":"x","a":"1","b":2}"#,
                "\"a\" must be a number, got a string",
            ),
            (
                r#"{"name":"x","a":1,"b":null}"#,
                "\"b\" must be a number, got null",
            ),
            (r#"{"name":"x","a":1e308,"b":1e308}"#, "out of range"),
        ];
        for (payload, expected) in cases {
            let err = run(Builtin::SumAndGreet, payload).await.unwrap_err();
            assert!(err.starts_with("sum_and_greet: "), "{payload}: {err}");
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }
}

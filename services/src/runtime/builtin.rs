//! The `builtin` runtime: the handlers in [`crate::functions`], named by a
//! function's code. Preparing resolves the name; running calls the handler
//! in the execution's task (the worker aborts the task to stop it).

use std::sync::Arc;

use bytes::Bytes;

use taskforge_proto::common::Function;

use super::{BoxFuture, Prepared, RunResult, Runtime, Stop};
use crate::functions::{Builtin, SleepClock};

#[derive(Debug)]
pub struct BuiltinRuntime {
    name: String,
    clock: SleepClock,
}

impl BuiltinRuntime {
    pub fn new() -> BuiltinRuntime {
        BuiltinRuntime::named("builtin")
    }

    /// The same handlers under another language name (the simulation runs
    /// workers with different runtime sets this way).
    pub fn named(name: impl Into<String>) -> BuiltinRuntime {
        BuiltinRuntime {
            name: name.into(),
            clock: SleepClock::default(),
        }
    }

    /// The same, with `sleep` waiting on `clock` (the simulation's workers
    /// sleep on tokio's clock, which it drives).
    pub fn sleeping_on(self, clock: SleepClock) -> BuiltinRuntime {
        BuiltinRuntime { clock, ..self }
    }
}

impl Default for BuiltinRuntime {
    fn default() -> Self {
        BuiltinRuntime::new()
    }
}

impl Runtime for BuiltinRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare(&self, function: &Function) -> BoxFuture<Result<Arc<dyn Prepared>, String>> {
        let clock = self.clock;
        let prepared = Builtin::from_code(&function.code)
            .map(|builtin| Arc::new(PreparedBuiltin(builtin, clock)) as Arc<dyn Prepared>)
            .map_err(|error| error.to_string());
        Box::pin(std::future::ready(prepared))
    }
}

#[derive(Clone, Copy, Debug)]
struct PreparedBuiltin(Builtin, SleepClock);

impl Prepared for PreparedBuiltin {
    fn run(&self, payload: Bytes, _stop: Stop) -> BoxFuture<RunResult> {
        let PreparedBuiltin(builtin, clock) = *self;
        Box::pin(async move { builtin.run(payload, clock).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(code: &str) -> Function {
        Function {
            language: "builtin".into(),
            code: Bytes::copy_from_slice(code.as_bytes()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn prepares_once_and_runs_the_handler() {
        let runtime = BuiltinRuntime::new();
        let echo = runtime.prepare(&function("echo\n")).await.unwrap();
        let out = echo.run(Bytes::from_static(b"hi"), Stop::new()).await;
        assert_eq!(out, Ok(Bytes::from_static(b"hi")));
        let error = runtime.prepare(&function("nope")).await.unwrap_err();
        assert!(
            error.contains("unknown builtin handler \"nope\""),
            "{error}"
        );
    }
}

//! The function definitions the scheduler sent on this stream.
//!
//! A worker that says `caches_functions` in its hello gets each function's
//! definition once per stream (`SchedulerMessage.define`), before the first
//! execution of it; executions then carry only the function's id. Each
//! definition is prepared by its runtime once, on the first execution that
//! needs it (inside that execution's task, so a slow compile never holds up
//! the stream); later executions reuse what was prepared. A definition the
//! worker cannot run fails each of its executions saying why.
//!
//! The cache lives and dies with the stream: after a reconnect the scheduler
//! knows nothing was sent on the new stream and defines again. Function ids
//! are never reused for other code, so an id names one exact version.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use taskforge_proto::common::{ExecutionRequest, Function};

use super::wire::shorten;
use crate::runtime::{Prepared, Runtime, Runtimes};

/// One function as this worker knows it: its definition, and once the first
/// execution asked, what its runtime prepared from it.
#[derive(Debug)]
pub(super) struct Definition {
    function: Function,
    runtime: Result<Arc<dyn Runtime>, String>,
    prepared: OnceCell<Result<Arc<dyn Prepared>, String>>,
}

impl Definition {
    fn new(function: Function, runtimes: &Runtimes) -> Definition {
        let runtime = runtimes.get(&function.language).cloned();
        Definition {
            function,
            runtime,
            prepared: OnceCell::new(),
        }
    }

    /// The language it is written in, for logs.
    pub(super) fn language(&self) -> &str {
        &self.function.language
    }

    /// What its runtime made of it, prepared on first use; concurrent
    /// executions wait for the one preparation.
    pub(super) async fn prepared(&self) -> Result<Arc<dyn Prepared>, String> {
        let prepared = self
            .prepared
            .get_or_init(|| async {
                let runtime = self.runtime.as_ref().map_err(Clone::clone)?;
                runtime.prepare(&self.function).await
            })
            .await;
        prepared.clone().map_err(|error| {
            format!(
                "cannot run function {:?}: {error}",
                shorten(&self.function.function_id)
            )
        })
    }
}

#[derive(Debug)]
pub(super) struct Definitions {
    runtimes: Runtimes,
    by_id: BTreeMap<String, Arc<Definition>>,
}

impl Definitions {
    pub(super) fn new(runtimes: Runtimes) -> Definitions {
        Definitions {
            runtimes,
            by_id: BTreeMap::new(),
        }
    }

    pub(super) fn define(&mut self, function: Function) {
        let id = function.function_id.clone();
        let definition = Definition::new(function, &self.runtimes);
        self.by_id.insert(id, Arc::new(definition));
    }

    pub(super) fn forget(&mut self, function_id: &str) {
        self.by_id.remove(function_id);
    }

    /// What `request` runs: the definition it carries (a scheduler that does
    /// not cache definitions: prepared for this execution alone), else the
    /// one defined earlier on this stream.
    pub(super) fn resolve(
        &self,
        request: &mut ExecutionRequest,
    ) -> Result<Arc<Definition>, String> {
        if let Some(function) = request.function.take() {
            return Ok(Arc::new(Definition::new(function, &self.runtimes)));
        }
        self.by_id
            .get(&request.function_id)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "function {:?} was not defined on this stream before its execution \
                 (neither SchedulerMessage.define nor ExecutionRequest.function carried it)",
                    shorten(&request.function_id)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::runtime::Stop;

    fn function(id: &str, code: &str) -> Function {
        Function {
            function_id: id.into(),
            language: "builtin".into(),
            code: code.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn request(function_id: &str) -> ExecutionRequest {
        ExecutionRequest {
            function_id: function_id.into(),
            ..Default::default()
        }
    }

    async fn run(definition: &Definition, payload: &'static [u8]) -> Result<Bytes, String> {
        let prepared = definition.prepared().await?;
        prepared.run(Bytes::from_static(payload), Stop::new()).await
    }

    #[tokio::test]
    async fn defined_functions_resolve_by_id_until_forgotten() {
        let mut defs = Definitions::new(Runtimes::builtin());
        let missing = defs.resolve(&mut request("f1")).unwrap_err();
        assert!(missing.contains("not defined"), "{missing}");
        defs.define(function("f1", "echo"));
        let echo = defs.resolve(&mut request("f1")).unwrap();
        assert_eq!(run(&echo, b"hi").await, Ok(Bytes::from_static(b"hi")));
        defs.forget("f1");
        assert!(defs.resolve(&mut request("f1")).is_err());
    }

    #[tokio::test]
    async fn a_definition_that_cannot_run_fails_each_execution_with_its_reason() {
        let mut defs = Definitions::new(Runtimes::builtin());
        defs.define(function("f2", "no_such_handler"));
        let definition = defs.resolve(&mut request("f2")).unwrap();
        let error = run(&definition, b"1").await.unwrap_err();
        assert!(error.contains("cannot run function \"f2\""), "{error}");
        assert!(error.contains("unknown builtin handler"), "{error}");

        let mut python = function("f3", "handler");
        python.language = "python".into();
        defs.define(python);
        let definition = defs.resolve(&mut request("f3")).unwrap();
        let error = run(&definition, b"1").await.unwrap_err();
        assert!(error.contains("does not run \"python\""), "{error}");
    }

    #[tokio::test]
    async fn a_definition_carried_by_the_request_wins() {
        let defs = Definitions::new(Runtimes::builtin());
        let mut req = request("f3");
        req.function = Some(function("f3", "echo"));
        let definition = defs.resolve(&mut req).unwrap();
        assert_eq!(definition.language(), "builtin");
        assert_eq!(run(&definition, b"x").await, Ok(Bytes::from_static(b"x")));
    }
}

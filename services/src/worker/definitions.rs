//! The function definitions the scheduler sent on this stream.
//!
//! A worker that says `caches_functions` in its hello gets each function's
//! definition once per stream (`SchedulerMessage.define`), before the first
//! execution of it; executions then carry only the function's id. Each
//! definition is prepared once, when it arrives (for built-ins: the handler is
//! resolved), so an execution costs a lookup. A definition the worker cannot
//! run is kept as its error, so every execution of it fails saying why.
//!
//! The cache lives and dies with the stream: after a reconnect the scheduler
//! knows nothing was sent on the new stream and defines again. Function ids
//! are never reused for other code, so an id names one exact version.

use std::collections::BTreeMap;

use taskforge_proto::common::{ExecutionRequest, Function};

use super::wire::shorten;
use crate::functions::Builtin;

#[derive(Debug, Default)]
pub(super) struct Definitions {
    prepared: BTreeMap<String, Result<Builtin, String>>,
}

impl Definitions {
    pub(super) fn define(&mut self, function: &Function) {
        let prepared = prepare(function);
        self.prepared.insert(function.function_id.clone(), prepared);
    }

    pub(super) fn forget(&mut self, function_id: &str) {
        self.prepared.remove(function_id);
    }

    /// What `request` runs: the definition it carries (a scheduler that does
    /// not cache), else the one defined earlier on this stream.
    pub(super) fn resolve(&self, request: &ExecutionRequest) -> Result<Builtin, String> {
        if let Some(function) = &request.function {
            return prepare(function);
        }
        match self.prepared.get(&request.function_id) {
            Some(prepared) => prepared.clone(),
            None => Err(format!(
                "function {:?} was not defined on this stream before its execution \
                 (neither SchedulerMessage.define nor ExecutionRequest.function carried it)",
                shorten(&request.function_id)
            )),
        }
    }
}

fn prepare(function: &Function) -> Result<Builtin, String> {
    Builtin::resolve(&function.language, &function.code).map_err(|error| {
        format!(
            "cannot run function {:?}: {error}",
            shorten(&function.function_id)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn defined_functions_resolve_by_id_until_forgotten() {
        let mut defs = Definitions::default();
        assert!(
            defs.resolve(&request("f1"))
                .unwrap_err()
                .contains("not defined")
        );
        defs.define(&function("f1", "echo"));
        assert_eq!(defs.resolve(&request("f1")), Ok(Builtin::Echo));
        defs.forget("f1");
        assert!(defs.resolve(&request("f1")).is_err());
    }

    #[test]
    fn a_definition_that_cannot_run_fails_each_execution_with_its_reason() {
        let mut defs = Definitions::default();
        defs.define(&function("f2", "no_such_handler"));
        let error = defs.resolve(&request("f2")).unwrap_err();
        assert!(error.contains("cannot run function \"f2\""), "{error}");
    }

    #[test]
    fn a_definition_carried_by_the_request_wins() {
        let defs = Definitions::default();
        let mut req = request("f3");
        req.function = Some(function("f3", "echo"));
        assert_eq!(defs.resolve(&req), Ok(Builtin::Echo));
    }
}

//! Idempotency keys: a retried trigger finds the execution it already made.
//!
//! A client that lost the answer to a trigger (a timeout, a dropped
//! connection, an UNAVAILABLE after a failed sync) cannot know whether the
//! execution was accepted. With a key, it retries safely: the same key and
//! the same request return the same execution for as long as the scheduler
//! remembers that execution (its retention); the same key with another
//! function or payload is refused, as it is almost certainly a client bug.
//!
//! Keys are persisted with the execution's acceptance record, so they
//! survive a restart. The request digest is FNV-1a: stable across builds and
//! versions (it is stored on disk), and collisions only matter for a client
//! that reuses a key for different requests anyway.

use std::hash::Hasher;

use fnv::FnvHasher;
use rustc_hash::FxHashMap;
use tonic::Status;

use taskforge_core::ExecutionId;

/// Longest key accepted, in bytes.
pub(crate) const MAX_KEY: usize = 128;

#[derive(Debug, Default)]
pub(crate) struct IdempotencyKeys {
    by_key: FxHashMap<String, Claim>,
}

#[derive(Clone, Copy, Debug)]
struct Claim {
    execution: ExecutionId,
    digest: u64,
}

/// The digest a key is claimed with: what the request asks for.
pub(crate) fn digest(function_id: &str, payload: &[u8]) -> u64 {
    let mut hasher = FnvHasher::default();
    hasher.write(function_id.as_bytes());
    // A separator no id contains, so ("ab", "c") and ("a", "bc") differ.
    hasher.write_u8(0xff);
    hasher.write(payload);
    hasher.finish()
}

pub(crate) fn check_key(key: &str) -> Result<(), Status> {
    if key.len() > MAX_KEY {
        return Err(Status::invalid_argument(format!(
            "idempotency_key is {} bytes; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "idempotency_key must not contain control characters",
        ));
    }
    Ok(())
}

impl IdempotencyKeys {
    /// The execution `key` already stands for, if the request matches;
    /// ALREADY_EXISTS if the key was used for a different request.
    pub(crate) fn find(&self, key: &str, digest: u64) -> Result<Option<ExecutionId>, Status> {
        match self.by_key.get(key) {
            None => Ok(None),
            Some(claim) if claim.digest == digest => Ok(Some(claim.execution)),
            Some(claim) => Err(Status::already_exists(format!(
                "idempotency key {key:?} was already used for execution {} with a different \
                 function or payload; use a new key for a new request",
                claim.execution
            ))),
        }
    }

    /// `key` now stands for `execution` (a later claim wins, as on restore
    /// where records come in log order).
    pub(crate) fn claim(&mut self, key: String, execution: ExecutionId, digest: u64) {
        self.by_key.insert(key, Claim { execution, digest });
    }

    /// Forgets `key` if it still stands for `execution` (the execution was
    /// evicted, or never durably accepted).
    pub(crate) fn release(&mut self, key: &str, execution: ExecutionId) {
        if self
            .by_key
            .get(key)
            .is_some_and(|claim| claim.execution == execution)
        {
            self.by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_finds_its_execution_and_a_reuse_is_refused() {
        let mut keys = IdempotencyKeys::default();
        let d = digest("f1", b"{\"a\":1}");
        assert_eq!(keys.find("k", d).unwrap(), None);
        keys.claim("k".into(), ExecutionId(7), d);
        assert_eq!(keys.find("k", d).unwrap(), Some(ExecutionId(7)));
        let other = keys.find("k", digest("f1", b"{\"a\":2}")).unwrap_err();
        assert_eq!(other.code(), tonic::Code::AlreadyExists);
        assert!(keys.find("k", digest("f2", b"{\"a\":1}")).is_err());
        // Releasing for another execution changes nothing.
        keys.release("k", ExecutionId(8));
        assert_eq!(keys.find("k", d).unwrap(), Some(ExecutionId(7)));
        keys.release("k", ExecutionId(7));
        assert_eq!(keys.find("k", d).unwrap(), None);
    }

    #[test]
    fn the_digest_is_stable_and_separates_its_parts() {
        // Stored on disk: it must never change between builds.
        assert_eq!(digest("", b""), 0xaf64_724c_8602_eb6e);
        assert_ne!(digest("ab", b"c"), digest("a", b"bc"));
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("order-42").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY + 1)).is_err());
        assert!(check_key("line\nbreak").is_err());
    }
}

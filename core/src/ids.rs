//! Identifiers, as newtypes so one kind cannot be passed where another is meant.
//!
//! The core never invents an id: the caller hands them in (from a counter, a seeded
//! random source, or a record on disk), which keeps every run reproducible.

use std::fmt;
use std::sync::Arc;

/// One execution of a function. Rendered as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutionId(pub u64);

impl ExecutionId {
    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(text: &str) -> Option<ExecutionId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ExecutionId)
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exec:{self}")
    }
}

/// One connection of a worker to the scheduler.
///
/// A worker that reconnects under the same [`WorkerId`] gets a new session, so
/// messages still in flight from its old connection can be told apart and fenced.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session:{}", self.0)
    }
}

/// The name a worker gives itself in its hello.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    pub fn new(id: impl Into<Arc<str>>) -> WorkerId {
        WorkerId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker:{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_id_round_trips_through_text() {
        for raw in [0, 1, 0xdead_beef, u64::MAX] {
            let id = ExecutionId(raw);
            assert_eq!(ExecutionId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(ExecutionId::parse("xyz"), None);
        assert_eq!(ExecutionId::parse("00000000000000001"), None);
        assert_eq!(ExecutionId::parse("+000000000000001"), None);
    }
}

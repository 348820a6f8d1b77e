//! What one execution may use: memory and tables (a [`ResourceLimiter`] that
//! remembers what it refused, so the error can name the limit), and capped
//! output buffers for stdout and stderr.
//!
//! A refused `memory.grow` returns -1 to the module, as WebAssembly
//! specifies, so a module may handle it; most cannot (Rust's allocator aborts
//! with a trap), and then the failure names the limit rather than just the
//! trap it led to.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Growth the limiter refused, the first time it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Linear memory: `desired` bytes asked for, `limit` allowed.
    Memory { desired: usize, limit: usize },
    /// A table: `desired` elements asked for, `limit` allowed.
    Table { desired: usize, limit: usize },
}

impl Refused {
    /// Says which limit was hit, for the execution's error.
    pub(super) fn describe(self) -> String {
        match self {
            Refused::Memory { desired, limit } => format!(
                "memory limit reached: the module asked for {} of linear memory; \
                 an execution may use at most {}",
                bytes(desired),
                bytes(limit)
            ),
            Refused::Table { desired, limit } => format!(
                "table limit reached: the module asked for a table of {desired} elements; \
                 an execution may use at most {limit}"
            ),
        }
    }
}

/// Bytes, in MiB when that is exact enough to read.
pub(super) fn bytes(count: usize) -> String {
    const MIB: usize = 1 << 20;
    if count >= MIB && count % (MIB / 16) == 0 {
        format!("{} MiB ({count} bytes)", count as f64 / MIB as f64)
    } else {
        format!("{count} bytes")
    }
}

/// Refuses a module whose memory starts larger than an execution may use,
/// in words a user can act on (the pooling allocator would refuse it too,
/// in its own). A malformed module passes: the compiler says what is wrong.
#[cfg(test)]
fn check_initial_memory(code: &[u8], limit: usize) -> Result<(), String> {
    check_memory_start(initial_memory(code), limit)
}

/// The largest initial size of the module's memories, in bytes.
pub(super) fn initial_memory(code: &[u8]) -> u64 {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(code) {
        match payload {
            Ok(wasmparser::Payload::MemorySection(memories)) => {
                for memory in memories.into_iter().flatten() {
                    let initial = memory.initial.saturating_mul(u64::from(memory.page_size()));
                    largest = largest.max(initial);
                }
            }
            // Memories are declared before the code: nothing more to see.
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    largest
}

/// Refuses a module whose memory starts above `limit`: it could never run.
pub(super) fn check_memory_start(initial: u64, limit: usize) -> Result<(), String> {
    if initial > limit as u64 {
        return Err(format!(
            "memory limit: the module's memory starts at {}; \
             an execution may use at most {}",
            bytes(usize::try_from(initial).unwrap_or(usize::MAX)),
            bytes(limit)
        ));
    }
    Ok(())
}

/// The store's limiter: wasmtime's [`StoreLimits`] for the decisions, plus a
/// record of the first refusal.
#[derive(Debug)]
pub(super) struct Limits {
    inner: StoreLimits,
    max_memory_bytes: usize,
    max_table_elements: usize,
    refused: Option<Refused>,
}

impl Limits {
    pub(super) fn new(max_memory_bytes: usize, max_table_elements: usize) -> Limits {
        let inner = StoreLimitsBuilder::new()
            .memory_size(max_memory_bytes)
            .table_elements(max_table_elements)
            // A command module is one instance with (at most) one memory and
            // one table; nothing a function needs creates more.
            .instances(1)
            .memories(1)
            .tables(1)
            .build();
        Limits {
            inner,
            max_memory_bytes,
            max_table_elements,
            refused: None,
        }
    }

    /// The first growth refused, if any.
    pub(super) fn refused(&self) -> Option<Refused> {
        self.refused
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed && desired > self.max_memory_bytes {
            self.refused.get_or_insert(Refused::Memory {
                desired,
                limit: self.max_memory_bytes,
            });
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum)?;
        if !allowed && desired > self.max_table_elements {
            self.refused.get_or_insert(Refused::Table {
                desired,
                limit: self.max_table_elements,
            });
        }
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// One of the module's output streams, in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(super) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// An output stream's bytes, never more than `limit`: a write that would
/// pass it is refused whole (and the execution fails saying so).
#[derive(Debug)]
pub(super) struct Output {
    bytes: Vec<u8>,
    limit: usize,
}

impl Output {
    pub(super) fn new(limit: usize) -> Output {
        Output {
            bytes: Vec::new(),
            limit,
        }
    }

    /// Room left before the limit.
    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes.len())
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// Appends `data` if it fits; otherwise appends nothing.
    pub(super) fn append(&mut self, data: &[u8]) -> Result<(), ()> {
        if data.len() > self.room() {
            return Err(());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn into_vec(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_growth_past_the_maximum_and_remember_it() {
        let mut limits = Limits::new(2 << 16, 10);
        assert!(limits.memory_growing(0, 1 << 16, None).unwrap());
        assert!(limits.memory_growing(1 << 16, 2 << 16, None).unwrap());
        assert_eq!(limits.refused(), None);
        assert!(!limits.memory_growing(2 << 16, 3 << 16, None).unwrap());
        assert!(!limits.memory_growing(2 << 16, 9 << 16, None).unwrap());
        // The first refusal is the one reported.
        assert_eq!(
            limits.refused(),
            Some(Refused::Memory {
                desired: 3 << 16,
                limit: 2 << 16
            })
        );
        assert!(!limits.table_growing(0, 11, None).unwrap());
        assert_eq!(limits.instances(), 1);
    }

    #[test]
    fn a_module_maximum_is_not_our_limit() {
        // The module's own declared maximum refuses growth, but that is the
        // module's doing: no limit of ours was hit.
        let mut limits = Limits::new(64 << 20, 10);
        assert!(
            !limits
                .memory_growing(1 << 16, 2 << 16, Some(1 << 16))
                .unwrap()
        );
        assert_eq!(limits.refused(), None);
    }

    #[test]
    fn output_refuses_writes_past_its_limit_whole() {
        let mut out = Output::new(5);
        out.append(b"abc").unwrap();
        assert!(out.append(b"def").is_err());
        assert_eq!(out.as_slice(), b"abc");
        out.append(b"de").unwrap();
        assert_eq!(out.room(), 0);
        assert_eq!(out.into_vec(), b"abcde");
    }

    #[test]
    fn a_memory_declared_over_the_limit_is_refused_up_front() {
        let module = |pages: u32| {
            wat::parse_str(format!(
                "(module (memory {pages}) (func (export \"_start\")))"
            ))
            .unwrap()
        };
        assert_eq!(check_initial_memory(&module(16), 1 << 20), Ok(()));
        let error = check_initial_memory(&module(17), 1 << 20).unwrap_err();
        assert_eq!(
            error,
            "memory limit: the module's memory starts at 1.0625 MiB (1114112 bytes); \
             an execution may use at most 1 MiB (1048576 bytes)"
        );
        assert_eq!(check_initial_memory(b"\0asm junk", 1), Ok(()));
    }

    #[test]
    fn sizes_read_in_mib_when_round() {
        assert_eq!(bytes(64 << 20), "64 MiB (67108864 bytes)");
        assert_eq!(bytes(1000), "1000 bytes");
    }
}

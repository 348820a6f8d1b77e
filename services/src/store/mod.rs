//! Durable records: what the scheduler must remember across a restart.
//!
//! The scheduler describes every change worth surviving a crash as a [`Record`]
//! (a function registered; an execution accepted, started, finished or evicted)
//! and hands it to a [`Store`]. Appending only buffers; [`Store::sync`] is the
//! durability point, so the caller batches many appends into one sync (group
//! commit) and acknowledges a client only after the sync that covers its record.
//! On start, [`Store::load`] returns everything durable from earlier runs as
//! [`Recovered`] state, ready to restore into the core.
//!
//! Finished executions go to the **history**: once an execution ends, all
//! there is to know about it (except its payload) is one record at a
//! [`Location`] that never changes until retention forgets it. The scheduler
//! keeps only a small summary of each in memory ([`Filed`]) and reads the
//! rest back through a [`HistoryReader`] when a client asks, so its memory
//! follows the work in flight, not the length of the history.
//!
//! Two implementations:
//! - [`JsonlStore`]: JSON Lines files in a data directory, append-only with
//!   snapshot compaction, doing all its I/O through the [`FileSystem`] trait so
//!   the simulation can run it on a simulated disk;
//! - [`MemoryStore`]: no files, for fast tests; clones share what was synced, so
//!   a test can restart a scheduler on the same store.
//!
//! Both fold records into the same live state (see `live.rs`), so they agree on
//! what a sequence of records means.

mod codec;
mod fs;
mod history;
mod jsonl;
mod lines;
mod live;
mod memory;
mod postgres;

#[cfg(test)]
pub(crate) mod crash_fs;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use taskforge_core::{ExecutionId, Policy, Status, Terminal};

pub use fs::{AppendFile, FileSystem, StdFileSystem};
pub use history::SEGMENT_BYTES;
pub use jsonl::{COMPACTION_MIN_SLACK, COMPACTION_MIN_SLACK_BYTES, COMPACTION_RATIO, JsonlStore};
pub use memory::MemoryStore;
pub use postgres::{Fence, LeaseAnswer, LeaseDb, PostgresStore, migrate as migrate_postgres};

/// A registered function. Ids are chosen by the caller; a later record with the
/// same id replaces the earlier one (keeping its place in registration order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRecord {
    pub function_id: String,
    pub name: String,
    pub language: String,
    pub code: Bytes,
    /// Start-to-close limit per attempt in milliseconds; 0 means the default.
    pub timeout_ms: u64,
    /// Starts allowed per execution; 0 means the default.
    pub max_attempts: u32,
    /// Memory one execution may use, for runtimes that bound it; 0 means the
    /// worker's limit.
    pub max_memory_bytes: u64,
    pub created_at_us: u64,
}

/// An execution as it was accepted: what to run, on what, under which policy.
///
/// The policy's durations are stored in whole milliseconds; anything finer is
/// truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub function_id: String,
    pub payload: Bytes,
    pub policy: Policy,
    pub created_at_us: u64,
    /// The client's idempotency key, if it gave one: a retried trigger with
    /// the same key finds this execution again, after a restart too.
    pub idempotency: Option<IdempotencyKey>,
}

/// A client's idempotency key and the digest of the request it came with, so
/// a reuse of the key for another request can be told apart from a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// FNV-1a of the function id and payload (see `scheduler::idempotency`).
    pub digest: u64,
}

/// How an execution ended, and the attempt that ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRecord {
    pub terminal: Terminal,
    pub attempt: u32,
    /// Empty when no worker was involved (cancelled while pending, timed out
    /// waiting to start).
    pub worker_id: String,
    pub started_at_us: u64,
    pub finished_at_us: u64,
    /// The tail of what the attempt printed (runtimes that capture it).
    pub logs: String,
}

/// One durable change.
///
/// Records that change nothing are dropped when appended and skipped (with a
/// warning) when loaded: a `Started`, `Finished` or `Evicted` for an unknown
/// execution (e.g. after its eviction), an `Accepted` for an id already held, a
/// second `Finished` (a terminal state never changes), and a `Started` that is
/// not newer than the last one or comes after `Finished`.
///
/// Once an execution is filed in the history, the store keeps no index of it
/// in memory: an `Accepted` reusing its id is taken as a new execution, so the
/// caller reuses an id only after retention forgot it (the scheduler draws
/// ids at random and skips every id it still holds). Its acceptance time tells
/// the two apart at the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Function(FunctionRecord),
    /// The function is forgotten; the next compaction drops it.
    FunctionDeleted {
        function_id: String,
    },
    Accepted(ExecutionRecord),
    Started {
        id: ExecutionId,
        /// 1 for the first start; each retry counts one more.
        attempt: u32,
        worker_id: String,
        started_at_us: u64,
    },
    Finished {
        id: ExecutionId,
        finished: FinishedRecord,
    },
    /// The finished execution is forgotten (retention). `filed` is where
    /// its record was in the history, if it got there: the history frees
    /// that room.
    Evicted {
        id: ExecutionId,
        filed: Option<Location>,
    },
}

impl Record {
    /// The execution the record is about, if it is about one.
    pub fn execution_id(&self) -> Option<ExecutionId> {
        match self {
            Record::Accepted(record) => Some(record.id),
            Record::Started { id, .. }
            | Record::Finished { id, .. }
            | Record::Evicted { id, .. } => Some(*id),
            Record::Function(_) | Record::FunctionDeleted { .. } => None,
        }
    }
}

/// Where a finished execution's record lies in the history: a segment and
/// a byte range in it. It never changes, so it can be read from anywhere
/// without asking the store; once retention forgets the execution, the
/// range may be gone (a read then finds nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// Everything the history holds about a finished execution: how it was
/// accepted (its payload dropped: nothing runs or shows it after the end)
/// and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedExecution {
    pub record: ExecutionRecord,
    pub finished: FinishedRecord,
}

/// What a start keeps in memory of a finished execution: enough to list,
/// filter, retain and deduplicate it, and where the rest is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filed {
    pub id: ExecutionId,
    /// Shared between every execution of the function.
    pub function_id: Arc<str>,
    pub status: Status,
    pub attempt: u32,
    pub finished_at_us: u64,
    pub idempotency: Option<IdempotencyKey>,
    pub location: Location,
}

/// Reads finished executions back from the history. Shared by whoever
/// answers clients, so reads never wait behind the store's writes.
pub trait HistoryReader: Send + Sync + fmt::Debug + 'static {
    /// The record of `id` at `location`, or `None` if it is gone (forgotten
    /// by retention since the location was handed out).
    fn read(
        &self,
        id: ExecutionId,
        location: Location,
    ) -> Result<Option<FinishedExecution>, StoreError>;

    /// The store's own search of its history, if it has one (see
    /// [`HistorySearch`]).
    fn search(&self) -> Option<&dyn HistorySearch> {
        None
    }
}

/// A history the store answers for by itself (PostgreSQL: SQL on indexes),
/// so the scheduler keeps none of it in memory: a finished execution is
/// forgotten once its end is durable, found again by its id
/// ([`HistoryReader::read`], any [`Location`]), listed and counted here, and
/// retention runs in the store (executions it forgets that have an
/// idempotency key are reported by [`Store::take_pruned`]). Such a store's
/// [`Recovered::history`] holds only the executions with an idempotency
/// key, so that retries of them are still recognised.
pub trait HistorySearch {
    /// Finished executions matching `query`, in id order.
    fn list(&self, query: &HistoryQuery) -> Result<Vec<FinishedExecution>, StoreError>;

    /// How many finished executions the history holds, by status.
    fn counts(&self) -> Result<StatusCounts, StoreError>;
}

/// A page of the history: finished executions with ids after `after`, of
/// `function_id` and in `status` when given, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub after: Option<ExecutionId>,
    pub status: Option<Status>,
    pub function_id: Option<String>,
    pub limit: usize,
}

/// Finished executions by terminal status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    pub fn add(&mut self, status: Status, n: u64) {
        match status {
            Status::Completed => self.completed += n,
            Status::Failed => self.failed += n,
            Status::TimedOut => self.timed_out += n,
            Status::Cancelled => self.cancelled += n,
            Status::Pending | Status::Running => {}
        }
    }
}

/// An unfinished execution read back at start (finished ones are in
/// [`Recovered::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredExecution {
    pub record: ExecutionRecord,
    /// The highest attempt recorded as started; 0 if it never started. Its
    /// attempts were lost with the restart.
    pub attempts_started: u32,
}

/// Everything durable from earlier runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// In registration order.
    pub functions: Vec<FunctionRecord>,
    /// Unfinished executions, in acceptance order.
    pub executions: Vec<RecoveredExecution>,
    /// Finished executions, in the order they were filed (about the order
    /// they finished in); their records are read through
    /// [`Store::history`].
    pub history: Vec<Filed>,
    /// What was skipped and why (a torn last line, a record for an unknown
    /// execution); worth logging, never fatal.
    pub warnings: Vec<String>,
}

/// Durable storage of [`Record`]s.
///
/// Synchronous on purpose: production runs it on a thread of its own, the
/// simulation inline. Implementations are used by one owner at a time.
pub trait Store: Send + 'static {
    /// Everything durable from earlier runs. Called once, before anything else.
    fn load(&mut self) -> Result<Recovered, StoreError>;

    /// Buffers a record; it is not durable yet.
    fn append(&mut self, record: &Record) -> Result<(), StoreError>;

    /// Writes what is buffered and makes it durable: after `Ok`, every record
    /// appended before the call survives a crash. After `Err`, those records
    /// may or may not survive; a later successful `sync` makes them durable.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Where the executions whose `Finished` records the last successful
    /// syncs made durable were filed in the history; each is handed out
    /// once.
    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)>;

    /// Executions with an idempotency key that the store's own retention
    /// removed since the last call (only a store with a [`HistorySearch`]
    /// runs retention itself); each is handed out once.
    fn take_pruned(&mut self) -> Vec<ExecutionId> {
        Vec::new()
    }

    /// A reader of the history, for use from any thread.
    fn history(&self) -> Arc<dyn HistoryReader>;

    /// Whether the log has grown enough past the live records that
    /// [`compact`](Store::compact) is worth its cost.
    fn wants_compaction(&self) -> bool;

    /// Rewrites the log as a snapshot of the live records (functions and
    /// unfinished executions), dropping superseded records and the records
    /// of executions filed in the history since, and frees the history's
    /// room that retention emptied. Also makes everything appended so far
    /// durable, as `sync` does.
    fn compact(&mut self) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        (**self).load()
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        (**self).append(record)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }

    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        (**self).take_filed()
    }

    fn take_pruned(&mut self) -> Vec<ExecutionId> {
        (**self).take_pruned()
    }

    fn history(&self) -> Arc<dyn HistoryReader> {
        (**self).history()
    }

    fn wants_compaction(&self) -> bool {
        (**self).wants_compaction()
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        (**self).compact()
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line that is followed by more data cannot be read. Only the last line of
    /// a log may be damaged by a crash, so this one held data that was
    /// acknowledged: the store refuses to start rather than drop it.
    #[error(
        "{}:{line}: {problem}; only the last line of a log can be torn by a crash, \
         so this file was damaged otherwise and needs a look before the store can start",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        /// 1-based.
        line: usize,
        problem: String,
    },
    /// A record could not be turned into a line.
    #[error("cannot encode a record for {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `append`, `sync` or `compact` before `load`.
    #[error("the store must be loaded before it is written to")]
    NotLoaded,
    /// `load` a second time.
    #[error("the store was already loaded")]
    AlreadyLoaded,
    /// The database refused or failed an operation.
    #[error("cannot {op} the database: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: ::postgres::Error,
    },
    /// Another scheduler took the lease over: this one's writes are refused.
    #[error("the scheduler lease moved on from epoch {epoch}: another scheduler leads now")]
    Fenced { epoch: u64 },
    /// The database holds a row this version cannot read.
    #[error("the database holds a row this version cannot read: {0}")]
    BadRow(String),
    /// The database's schema could not be brought up to date.
    #[error("cannot migrate the database's schema: {0}")]
    Migration(String),
    /// A history record read back is not the one its location promised.
    #[error("{}: the history record at byte {offset} is not execution {id}: {problem}", path.display())]
    Misplaced {
        path: PathBuf,
        offset: u32,
        id: ExecutionId,
        problem: String,
    },
}

impl StoreError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

//! The embedded store: JSON Lines files in a data directory.
//!
//! Two append-only logs, `functions.jsonl` and `executions.jsonl`, one record
//! per line (the line format is in `codec.rs`). Appends go to an in-memory
//! buffer per log; [`Store::sync`] writes each buffer with one `write` and one
//! `fdatasync`, which is what makes group commit cheap. Beside the logs the
//! store keeps the live state in memory (functions, and executions with their
//! latest state until evicted), so that [`Store::compact`] can replace a log
//! by a snapshot without reading it back: write `<log>.tmp` (in pieces, not
//! all in memory at once), fsync it, rename it over the log, fsync the
//! directory. A crash at any point of that leaves either the old log or the
//! new one.
//!
//! What a crash can leave behind, and what loading does about it:
//! - a torn last line (no newline, or unreadable at the very end of the file):
//!   the tail of a write that never completed, so never acknowledged. It is
//!   skipped and reported in [`Recovered::warnings`], and the log is rewritten
//!   without it before anything is appended, so the next record does not glue
//!   onto the fragment;
//! - an unreadable line with more data after it cannot come from a crash: it
//!   held acknowledged data, so loading fails naming file and line, rather than
//!   drop it silently;
//! - a stray `<log>.tmp` from a compaction cut short: ignored (the next
//!   compaction overwrites it).
//!
//! A write or fsync that fails leaves the log in an unknown state: part of the
//! batch may be on disk, and after a failed fsync the kernel may have dropped
//! the dirty pages and will not report it again. So the store never appends to
//! that file again; the next `sync` rewrites the log from the live state, the
//! way compaction does, and only then reports success.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec;
use super::fs::{AppendFile, FileSystem};
use super::live::LiveState;
use super::{Record, Recovered, Store, StoreError};

/// [`JsonlStore::wants_compaction`] says yes once the logs hold more than
/// `COMPACTION_RATIO × live + COMPACTION_MIN_SLACK` records, `live` being the
/// records a snapshot would hold. The ratio bounds the disk space (and load
/// time) spent on superseded records to about that factor; the slack keeps a
/// small store from compacting over and over. At steady state (as many
/// executions evicted as accepted) with `live` records held, a compaction
/// comes after about `live + COMPACTION_MIN_SLACK` appended records (an
/// execution appends about four) and writes `live` records: each record is
/// written about twice in all.
pub const COMPACTION_RATIO: u64 = 2;
/// See [`COMPACTION_RATIO`].
pub const COMPACTION_MIN_SLACK: u64 = 10_000;

const FUNCTIONS_FILE: &str = "functions.jsonl";
const EXECUTIONS_FILE: &str = "executions.jsonl";

/// A [`Store`] on JSON Lines files; see the module documentation.
pub struct JsonlStore {
    disk: Disk,
    live: LiveState,
    functions: Log,
    executions: Log,
    loaded: bool,
}

/// The filesystem and the data directory, with what is owed to the directory.
struct Disk {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// A name in `dir` was created or replaced since `dir` was last synced.
    dir_unsynced: bool,
}

/// One append-only log file.
struct Log {
    which: Which,
    path: PathBuf,
    tmp_path: PathBuf,
    /// `None` before `load`, and after a failed write or rename: the file must
    /// be rewritten from the live state before anything is appended to it.
    file: Option<Box<dyn AppendFile>>,
    /// Encoded records waiting for the next sync.
    buffer: Vec<u8>,
    /// Records in the file plus those buffered.
    records: u64,
}

/// What reading a log found.
struct Scan {
    records: u64,
    /// When the last line was torn: the length of the file before it.
    torn_at: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
enum Which {
    Functions,
    Executions,
}

impl JsonlStore {
    /// A store on the logs in `data_dir`, which is created if missing. Nothing
    /// is read until [`Store::load`].
    pub fn open(fs: Arc<dyn FileSystem>, data_dir: PathBuf) -> Result<JsonlStore, StoreError> {
        fs.create_dir_all(&data_dir)
            .map_err(|e| StoreError::io("create directory", &data_dir, e))?;
        Ok(JsonlStore {
            functions: Log::new(&data_dir, Which::Functions),
            executions: Log::new(&data_dir, Which::Executions),
            disk: Disk {
                fs,
                dir: data_dir,
                dir_unsynced: false,
            },
            live: LiveState::default(),
            loaded: false,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.disk.dir
    }

    fn ensure_loaded(&self) -> Result<(), StoreError> {
        match self.loaded {
            true => Ok(()),
            false => Err(StoreError::NotLoaded),
        }
    }
}

impl Log {
    fn new(dir: &Path, which: Which) -> Log {
        let name = match which {
            Which::Functions => FUNCTIONS_FILE,
            Which::Executions => EXECUTIONS_FILE,
        };
        Log {
            which,
            path: dir.join(name),
            tmp_path: dir.join(format!("{name}.tmp")),
            file: None,
            buffer: Vec::new(),
            records: 0,
        }
    }

    /// Makes the buffered records durable: appended and synced, or, if the file
    /// cannot be trusted, by rewriting it from the live state. A rewrite is
    /// durable only once the directory is synced.
    fn flush(&mut self, disk: &mut Disk, live: &LiveState) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return self.rewrite(disk, live);
        };
        if self.buffer.is_empty() {
            return Ok(());
        }
        match file.append(&self.buffer).and_then(|()| file.sync()) {
            Ok(()) => {
                self.buffer.clear();
                Ok(())
            }
            Err(source) => {
                // Part of the buffer may be on disk, or in pages a failed fsync
                // dropped: appending after it could glue a record onto a
                // fragment. The next flush rewrites the file instead.
                self.file = None;
                Err(StoreError::io("append to", &self.path, source))
            }
        }
    }

    /// Replaces the file by a snapshot of the live state, unless it holds just
    /// that already (then it is only flushed).
    fn compact(&mut self, disk: &mut Disk, live: &LiveState) -> Result<(), StoreError> {
        if self.file.is_some() && self.records == live_records(live, self.which) {
            return self.flush(disk, live);
        }
        self.rewrite(disk, live)
    }

    /// Replaces the file by a snapshot of the live state, which includes
    /// whatever was buffered.
    fn rewrite(&mut self, disk: &mut Disk, live: &LiveState) -> Result<(), StoreError> {
        let which = self.which;
        disk.replace(self, live_records(live, which), |out| match which {
            Which::Functions => live
                .functions()
                .try_for_each(|function| out.record(&Record::Function(function.clone()))),
            Which::Executions => live
                .execution_snapshot()
                .try_for_each(|record| out.record(&record)),
        })
    }
}

/// How many records a snapshot of `which` holds.
fn live_records(live: &LiveState, which: Which) -> u64 {
    match which {
        Which::Functions => live.functions().len() as u64,
        Which::Executions => live.execution_snapshot_len(),
    }
}

impl Disk {
    /// Replaces `log`'s file by what `write` writes (`records` records) so that
    /// a crash leaves either the old file or the new one, and reopens it for
    /// appending. Whatever `log` had buffered must be part of the new file.
    /// Durable once the directory is synced.
    fn replace(
        &mut self,
        log: &mut Log,
        records: u64,
        write: impl FnOnce(&mut Chunks<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fs = &*self.fs;
        let tmp = &log.tmp_path;
        let mut file = fs
            .create(tmp)
            .map_err(|e| StoreError::io("create", tmp, e))?;
        let mut chunks = Chunks {
            file: &mut *file,
            path: tmp,
            pending: Vec::new(),
        };
        write(&mut chunks)?;
        chunks.finish()?;
        drop(file);
        // The old handle must not outlive the rename: depending on the
        // filesystem it would then write to the replaced file or the new one.
        log.file = None;
        fs.rename(tmp, &log.path)
            .map_err(|e| StoreError::io("rename into place", tmp, e))?;
        self.dir_unsynced = true;
        log.buffer.clear();
        log.records = records;
        log.file = Some(
            fs.open_append(&log.path)
                .map_err(|e| StoreError::io("open", &log.path, e))?,
        );
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), StoreError> {
        if self.dir_unsynced {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| StoreError::io("sync directory", &self.dir, e))?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Makes the data directory's own name durable, as it may have just been
    /// created.
    fn sync_parent(&self) -> Result<(), StoreError> {
        let parent = match self.dir.parent() {
            None => return Ok(()), // the root
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
        };
        self.fs
            .sync_dir(parent)
            .map_err(|e| StoreError::io("sync directory", parent, e))
    }
}

/// Snapshots are written in pieces of about this size: a snapshot can be as
/// big as the live state, which is not worth holding in memory twice.
const WRITE_CHUNK: usize = 1 << 20;

/// Writes a new file in large pieces, then syncs it.
struct Chunks<'a> {
    file: &'a mut dyn AppendFile,
    path: &'a Path,
    pending: Vec<u8>,
}

impl Chunks<'_> {
    fn record(&mut self, record: &Record) -> Result<(), StoreError> {
        codec::encode(record, &mut self.pending).map_err(|source| StoreError::Encode {
            path: self.path.to_owned(),
            source,
        })?;
        if self.pending.len() >= WRITE_CHUNK {
            self.write_pending()?;
        }
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_pending()?;
        self.file
            .append(bytes)
            .map_err(|e| StoreError::io("write", self.path, e))
    }

    fn write_pending(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            self.file
                .append(&self.pending)
                .map_err(|e| StoreError::io("write", self.path, e))?;
            self.pending.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        self.file
            .sync()
            .map_err(|e| StoreError::io("sync", self.path, e))
    }
}

/// Reads a log into `live`. See the module documentation for what counts as
/// torn and what as corrupt.
fn scan(
    path: &Path,
    bytes: &[u8],
    live: &mut LiveState,
    warnings: &mut Vec<String>,
) -> Result<Scan, StoreError> {
    let mut records = 0;
    let mut start = 0;
    let mut number = 0;
    while start < bytes.len() {
        number += 1;
        let rest = &bytes[start..];
        let Some(length) = rest.iter().position(|&b| b == b'\n') else {
            warnings.push(format!(
                "{}:{number}: skipped a torn last line ({} bytes, no newline): \
                 a write cut short by a crash",
                path.display(),
                rest.len()
            ));
            return Ok(Scan {
                records,
                torn_at: Some(start),
            });
        };
        let line = &rest[..length];
        let end = start + length + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            start = end; // blank lines hold nothing (a hand-edited file)
            continue;
        }
        match codec::decode(line) {
            Ok(record) => {
                records += 1;
                if let Err(ignored) = live.apply(&record) {
                    warnings.push(format!("{}:{number}: {ignored}", path.display()));
                }
            }
            Err(problem) if end == bytes.len() => {
                warnings.push(format!(
                    "{}:{number}: skipped an unreadable last line ({problem}): \
                     a write cut short by a crash",
                    path.display()
                ));
                return Ok(Scan {
                    records,
                    torn_at: Some(start),
                });
            }
            Err(problem) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    problem,
                });
            }
        }
        start = end;
    }
    Ok(Scan {
        records,
        torn_at: None,
    })
}

impl Store for JsonlStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        if self.loaded {
            return Err(StoreError::AlreadyLoaded);
        }
        // Read both logs before touching either: a corrupt one stops the load
        // with nothing changed, and a failed load can simply be retried.
        let mut live = LiveState::default();
        let mut warnings = Vec::new();
        let mut found = Vec::with_capacity(2);
        for log in [&self.functions, &self.executions] {
            let bytes = self
                .disk
                .fs
                .read(&log.path)
                .map_err(|e| StoreError::io("read", &log.path, e))?;
            let scan = scan(
                &log.path,
                bytes.as_deref().unwrap_or_default(),
                &mut live,
                &mut warnings,
            )?;
            found.push((bytes, scan));
        }

        let mut created = false;
        for (log, (bytes, scan)) in [&mut self.functions, &mut self.executions]
            .into_iter()
            .zip(found)
        {
            match (bytes, scan.torn_at) {
                (Some(bytes), Some(clean)) => {
                    let clean = &bytes[..clean];
                    self.disk
                        .replace(log, scan.records, |out| out.bytes(clean))?;
                }
                (bytes, _) => {
                    created |= bytes.is_none();
                    log.records = scan.records;
                    log.file = Some(
                        self.disk
                            .fs
                            .open_append(&log.path)
                            .map_err(|e| StoreError::io("open", &log.path, e))?,
                    );
                }
            }
        }
        // The first record acknowledged must not be lost with the name of its
        // file, or of the directory.
        self.disk.dir_unsynced |= created;
        self.disk.sync_dir()?;
        if created {
            self.disk.sync_parent()?;
        }
        let recovered = Recovered {
            functions: live.functions().cloned().collect(),
            executions: live.recovered_executions(),
            warnings,
        };
        self.live = live;
        self.loaded = true;
        Ok(recovered)
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.ensure_loaded()?;
        let log = match record {
            Record::Function(_) | Record::FunctionDeleted { .. } => &mut self.functions,
            _ => &mut self.executions,
        };
        let mark = log.buffer.len();
        if let Err(source) = codec::encode(record, &mut log.buffer) {
            log.buffer.truncate(mark);
            return Err(StoreError::Encode {
                path: log.path.clone(),
                source,
            });
        }
        match self.live.apply(record) {
            Ok(()) => log.records += 1,
            Err(ignored) => {
                // It would be skipped on load anyway; keep it off the disk.
                log.buffer.truncate(mark);
                tracing::warn!("store: {ignored}");
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.ensure_loaded()?;
        // Functions first: an execution that made it to disk then finds the
        // function it was accepted for, if that was registered before it.
        self.functions.flush(&mut self.disk, &self.live)?;
        self.executions.flush(&mut self.disk, &self.live)?;
        self.disk.sync_dir()
    }

    fn wants_compaction(&self) -> bool {
        let logged = self.functions.records + self.executions.records;
        let live = live_records(&self.live, Which::Functions)
            + live_records(&self.live, Which::Executions);
        logged > COMPACTION_RATIO * live + COMPACTION_MIN_SLACK
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.ensure_loaded()?;
        self.functions.compact(&mut self.disk, &self.live)?;
        self.executions.compact(&mut self.disk, &self.live)?;
        // One directory sync makes both renames durable.
        self.disk.sync_dir()
    }
}

impl fmt::Debug for JsonlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlStore")
            .field("data_dir", &self.disk.dir)
            .field("loaded", &self.loaded)
            .field("function_records", &self.functions.records)
            .field("execution_records", &self.executions.records)
            .field(
                "buffered_bytes",
                &(self.functions.buffer.len() + self.executions.buffer.len()),
            )
            .finish_non_exhaustive()
    }
}

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
//! Loading reads each log as a stream, one line at a time, so a start needs
//! memory for the live state and the longest line, never for a whole log.
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
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec;
use super::fs::{AppendFile, FileSystem};
use super::live::{Footprint, LiveState};
use super::{Record, Recovered, Store, StoreError};

/// [`JsonlStore::wants_compaction`] says yes once the logs hold more than
/// `COMPACTION_RATIO × live + COMPACTION_MIN_SLACK` records, or more than
/// `COMPACTION_RATIO × live + COMPACTION_MIN_SLACK_BYTES` bytes, `live` being
/// what a snapshot would hold. The ratio bounds the disk space (and load
/// time) spent on superseded records to about that factor; the slack keeps a
/// small store from compacting over and over. At steady state (as many
/// executions evicted as accepted) with `live` records held, a compaction
/// comes after about `live + COMPACTION_MIN_SLACK` appended records (an
/// execution appends about four) and writes `live` records: each record is
/// written about twice in all.
///
/// Bytes count as well as records because records differ wildly in size: an
/// acceptance carries its payload (up to megabytes), which a snapshot drops
/// once the execution finished. By count alone, a few hundred large
/// executions would grow the log by hundreds of megabytes between
/// compactions.
pub const COMPACTION_RATIO: u64 = 2;
/// See [`COMPACTION_RATIO`].
pub const COMPACTION_MIN_SLACK: u64 = 10_000;
/// See [`COMPACTION_RATIO`]. A few times what [`COMPACTION_MIN_SLACK`]
/// records of small payloads take, so that such logs still compact by count
/// and only large payloads make compaction come sooner.
pub const COMPACTION_MIN_SLACK_BYTES: u64 = 8 << 20;

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
    /// What the file and the buffer hold.
    size: Footprint,
}

/// What reading a log found.
struct Scan {
    /// The records read, and the bytes before a torn last line (all of them
    /// when there is none).
    size: Footprint,
    /// The last line was torn: the file must be cut back to `size.bytes`.
    torn: bool,
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
            size: Footprint::default(),
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
        if self.file.is_some() && self.size == live_footprint(live, self.which) {
            return self.flush(disk, live);
        }
        self.rewrite(disk, live)
    }

    /// Replaces the file by a snapshot of the live state, which includes
    /// whatever was buffered.
    fn rewrite(&mut self, disk: &mut Disk, live: &LiveState) -> Result<(), StoreError> {
        let which = self.which;
        let records = live_footprint(live, which).records;
        disk.replace(self, records, |out| match which {
            Which::Functions => live
                .functions()
                .try_for_each(|function| out.record(&Record::Function(function.clone()))),
            Which::Executions => live
                .execution_snapshot()
                .try_for_each(|record| out.record(&record)),
        })
    }
}

/// What a snapshot of `which` takes.
fn live_footprint(live: &LiveState, which: Which) -> Footprint {
    match which {
        Which::Functions => live.function_snapshot_footprint(),
        Which::Executions => live.execution_snapshot_footprint(),
    }
}

/// Whether logs of `logged` size have grown enough past a snapshot of `live`
/// size to be worth compacting; see [`COMPACTION_RATIO`].
fn outgrown(logged: Footprint, live: Footprint) -> bool {
    let too_many = logged.records > COMPACTION_RATIO * live.records + COMPACTION_MIN_SLACK;
    let too_big = logged.bytes > COMPACTION_RATIO * live.bytes + COMPACTION_MIN_SLACK_BYTES;
    too_many || too_big
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
            written: 0,
        };
        write(&mut chunks)?;
        let bytes = chunks.finish()?;
        drop(file);
        // The old handle must not outlive the rename: depending on the
        // filesystem it would then write to the replaced file or the new one.
        log.file = None;
        fs.rename(tmp, &log.path)
            .map_err(|e| StoreError::io("rename into place", tmp, e))?;
        self.dir_unsynced = true;
        log.buffer.clear();
        log.size = Footprint { records, bytes };
        log.file = Some(
            fs.open_append(&log.path)
                .map_err(|e| StoreError::io("open", &log.path, e))?,
        );
        Ok(())
    }

    /// Replaces `log`'s file by its first `clean.bytes` bytes (dropping a torn
    /// last line), copied a piece at a time.
    fn cut_back(&mut self, log: &mut Log, clean: Footprint) -> Result<(), StoreError> {
        let path = log.path.clone();
        let mut source = self
            .fs
            .open_read(&path)
            .map_err(|e| StoreError::io("open", &path, e))?
            .ok_or_else(|| {
                let gone = io::Error::new(io::ErrorKind::NotFound, "the file vanished");
                StoreError::io("open", &path, gone)
            })?;
        self.replace(log, clean.records, |out| {
            out.copy(&mut *source, &path, clean.bytes)
        })
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

/// Logs are read in pieces of this size.
const READ_CHUNK: usize = 64 << 10;

/// Writes a new file in large pieces, then syncs it.
struct Chunks<'a> {
    file: &'a mut dyn AppendFile,
    path: &'a Path,
    pending: Vec<u8>,
    /// Bytes handed to the file so far.
    written: u64,
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

    /// Copies the first `len` bytes of `source` (read from `source_path`),
    /// a piece at a time.
    fn copy(
        &mut self,
        source: &mut dyn Read,
        source_path: &Path,
        len: u64,
    ) -> Result<(), StoreError> {
        self.write_pending()?;
        let mut source = source.take(len);
        let mut piece = vec![0; WRITE_CHUNK];
        let mut copied = 0;
        loop {
            let read = match source.read(&mut piece) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read", source_path, e)),
            };
            self.append(&piece[..read])?;
            copied += read as u64;
        }
        if copied < len {
            let shrank = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank to {copied} bytes while {len} were being copied"),
            );
            return Err(StoreError::io("read", source_path, shrank));
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            self.file
                .append(&self.pending)
                .map_err(|e| StoreError::io("write", self.path, e))?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes `bytes` at once; anything pending must have been written first.
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .append(bytes)
            .map_err(|e| StoreError::io("write", self.path, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Syncs the file; the bytes it holds.
    fn finish(mut self) -> Result<u64, StoreError> {
        self.write_pending()?;
        self.file
            .sync()
            .map_err(|e| StoreError::io("sync", self.path, e))?;
        Ok(self.written)
    }
}

/// Reads a log into `live`, a line at a time. See the module documentation
/// for what counts as torn and what as corrupt.
fn scan(
    path: &Path,
    file: Box<dyn Read>,
    live: &mut LiveState,
    warnings: &mut Vec<String>,
) -> Result<Scan, StoreError> {
    let mut reader = BufReader::with_capacity(READ_CHUNK, file);
    let read_error = |e| StoreError::io("read", path, e);
    // Reused from line to line; grows to the longest line, which a payload
    // limit bounds.
    let mut line = Vec::new();
    let mut size = Footprint::default();
    let mut number = 0;
    loop {
        line.clear();
        let length = reader.read_until(b'\n', &mut line).map_err(read_error)?;
        if length == 0 {
            return Ok(Scan { size, torn: false });
        }
        number += 1;
        let Some(content) = line.strip_suffix(b"\n") else {
            warnings.push(format!(
                "{}:{number}: skipped a torn last line ({length} bytes, no newline): \
                 a write cut short by a crash",
                path.display(),
            ));
            return Ok(Scan { size, torn: true });
        };
        if content.iter().all(u8::is_ascii_whitespace) {
            // Blank lines hold nothing (a hand-edited file).
            size.bytes += length as u64;
            continue;
        }
        match codec::decode(content) {
            Ok(record) => {
                size += Footprint::line(length as u64);
                if let Err(ignored) = live.apply_line(&record, length as u64) {
                    warnings.push(format!("{}:{number}: {ignored}", path.display()));
                }
            }
            Err(problem) if at_end(&mut reader).map_err(read_error)? => {
                warnings.push(format!(
                    "{}:{number}: skipped an unreadable last line ({problem}): \
                     a write cut short by a crash",
                    path.display()
                ));
                return Ok(Scan { size, torn: true });
            }
            Err(problem) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    problem,
                });
            }
        }
    }
}

/// Whether nothing follows what was read so far.
fn at_end(reader: &mut impl BufRead) -> io::Result<bool> {
    loop {
        match reader.fill_buf() {
            Ok(rest) => return Ok(rest.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
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
            let file = self
                .disk
                .fs
                .open_read(&log.path)
                .map_err(|e| StoreError::io("open", &log.path, e))?;
            let scan = match file {
                Some(file) => Some(scan(&log.path, file, &mut live, &mut warnings)?),
                None => None,
            };
            found.push(scan);
        }

        let mut created = false;
        for (log, scan) in [&mut self.functions, &mut self.executions]
            .into_iter()
            .zip(found)
        {
            match scan {
                Some(Scan { size, torn: true }) => self.disk.cut_back(log, size)?,
                scan => {
                    created |= scan.is_none();
                    log.size = scan.map_or_else(Footprint::default, |scan| scan.size);
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
        let length = (log.buffer.len() - mark) as u64;
        match self.live.apply_line(record, length) {
            Ok(()) => log.size += Footprint::line(length),
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
        let logged = self.functions.size + self.executions.size;
        let live = live_footprint(&self.live, Which::Functions)
            + live_footprint(&self.live, Which::Executions);
        outgrown(logged, live)
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
            .field("function_log", &self.functions.size)
            .field("execution_log", &self.executions.size)
            .field(
                "buffered_bytes",
                &(self.functions.buffer.len() + self.executions.buffer.len()),
            )
            .finish_non_exhaustive()
    }
}

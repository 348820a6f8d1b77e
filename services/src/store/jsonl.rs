//! The embedded store: JSON Lines files in a data directory.
//!
//! Two append-only logs, `functions.jsonl` and `executions.jsonl`, one record
//! per line (the line format is in `codec.rs`), and the history of finished
//! executions in `history/` (see `history.rs`): an execution's records stay
//! in the log while it is pending or running; its end goes to the history,
//! whole, and the next compaction drops its records from the log. Appends go to an in-memory
//! buffer per log; [`Store::sync`] writes each buffer with one `write` and one
//! `fdatasync`, which is what makes group commit cheap. Beside the logs the
//! store keeps the live state in memory (functions, and executions with their
//! latest state until evicted), so that [`Store::compact`] can replace a log
//! by a snapshot without reading it back: write `<log>.tmp` (in pieces, not
//! all in memory at once), fsync it, rename it over the log, fsync the
//! directory. A crash at any point of that leaves either the old log or the
//! new one.
//!
//! Loading reads each file as a stream, one line at a time, so a start needs
//! memory for the live state, a summary per finished execution and the
//! longest line, never for a whole file. The history is read first: a log
//! not compacted since may still hold the acceptances of executions filed
//! there, which the history's copy supersedes.
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
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use taskforge_core::ExecutionId;

use super::fs::{AppendFile, FileSystem};
use super::history::History;
use super::live::{Footprint, LiveState};
use super::{
    Filed, FinishedExecution, HistoryReader, Location, Record, Recovered, Store, StoreError, codec,
    lines,
};

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
    history: History,
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
    /// The execution log's lines in `buffer`, in order: whose they are and
    /// where they end, so that those of an execution filed in the history
    /// before they are written can be left out (see `Log::flush`).
    lines: Vec<BufferedLine>,
    /// What the file and the buffer hold.
    size: Footprint,
}

/// One line waiting in an execution log's buffer.
#[derive(Clone, Copy, Debug)]
struct BufferedLine {
    id: Option<ExecutionId>,
    end: usize,
    /// Its execution ended and is in the history's buffer: its end there
    /// says all this line says.
    filed: bool,
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
            history: History::new(Arc::clone(&fs), &data_dir),
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

    /// Closes history segments at `bytes` instead of [`SEGMENT_BYTES`]
    /// (tests use small segments to see them filled and deleted).
    ///
    /// [`SEGMENT_BYTES`]: super::SEGMENT_BYTES
    pub fn with_segment_bytes(mut self, bytes: u64) -> JsonlStore {
        self.history.set_segment_bytes(bytes);
        self
    }

    /// Files finished executions at once (during load), returning their
    /// summaries.
    fn file_now(&mut self, done: &[FinishedExecution]) -> Result<Vec<Filed>, StoreError> {
        for execution in done {
            self.history.append(execution)?;
        }
        self.history.sync()?;
        let mut names: FxHashMap<&str, Arc<str>> = FxHashMap::default();
        let by_id: FxHashMap<ExecutionId, &FinishedExecution> =
            done.iter().map(|e| (e.record.id, e)).collect();
        Ok(self
            .history
            .take_filed()
            .into_iter()
            .filter_map(|(id, location)| {
                let execution = by_id.get(&id)?;
                let function_id = names
                    .entry(execution.record.function_id.as_str())
                    .or_insert_with(|| Arc::from(execution.record.function_id.as_str()))
                    .clone();
                Some(Filed {
                    id,
                    function_id,
                    status: execution.finished.terminal.status(),
                    attempt: execution.finished.attempt,
                    finished_at_us: execution.finished.finished_at_us,
                    idempotency: execution.record.idempotency.clone(),
                    location,
                })
            })
            .collect())
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
            lines: Vec::new(),
            size: Footprint::default(),
        }
    }

    /// `id` ended, and its whole record is in the history's buffer: none of
    /// its lines still waiting here needs to be written.
    fn filed(&mut self, id: ExecutionId) {
        for line in self.lines.iter_mut().filter(|line| line.id == Some(id)) {
            line.filed = true;
        }
    }

    /// Takes the lines of filed executions out of the buffer. An execution
    /// accepted and finished in one group (a quick one, or one the commit
    /// delay waited for) then costs the history's write and fsync alone, not
    /// one in each file. Safe because the store syncs the history before the
    /// logs: once these lines would have reached the disk, its end is there,
    /// and on load the history supersedes whatever a log holds of it.
    fn leave_out_filed(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        if !lines.iter().any(|line| line.filed) {
            return;
        }
        let mut kept = Vec::with_capacity(self.buffer.len());
        let mut start = 0;
        for line in lines {
            match line.filed {
                true => self.size -= Footprint::line((line.end - start) as u64),
                false => kept.extend_from_slice(&self.buffer[start..line.end]),
            }
            start = line.end;
        }
        kept.extend_from_slice(&self.buffer[start..]);
        self.buffer = kept;
    }

    /// Makes the buffered records durable: appended and synced, or, if the file
    /// cannot be trusted, by rewriting it from the live state. A rewrite is
    /// durable only once the directory is synced.
    fn flush(&mut self, disk: &mut Disk, live: &LiveState) -> Result<(), StoreError> {
        self.leave_out_filed();
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
        log.lines.clear();
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

/// Reads a log, a line at a time, handing each record to `apply` with the
/// length of its line. See `lines.rs` for what counts as torn and what as
/// corrupt.
fn scan(
    path: &Path,
    file: Box<dyn Read>,
    warnings: &mut Vec<String>,
    mut apply: impl FnMut(&Record, u64) -> Result<(), String>,
) -> Result<Scan, StoreError> {
    let mut records = 0;
    let mut found = Vec::new();
    let read = lines::read_lines(path, file, READ_CHUNK, warnings, |content, place| {
        let record = codec::decode(content)?;
        records += 1;
        if let Err(ignored) = apply(&record, place.length) {
            found.push(format!("{}:{}: {ignored}", path.display(), place.number));
        }
        Ok(())
    })?;
    warnings.extend(found);
    Ok(Scan {
        size: Footprint {
            records,
            bytes: read.clean_bytes,
        },
        torn: read.torn,
    })
}

/// The history as a start finds it, before the logs are read.
#[derive(Default)]
struct FiledSoFar {
    /// Index into `entries`, with the time of acceptance, which tells the
    /// execution's own records in the log from those of a later execution
    /// that reused its id.
    by_id: FxHashMap<ExecutionId, (u64, usize)>,
    /// `None` once superseded.
    entries: Vec<Option<Filed>>,
    /// Function ids, shared between the entries.
    names: FxHashMap<String, Arc<str>>,
    /// Entries superseded: their segments hold one execution fewer.
    superseded: Vec<Location>,
    /// Executions whose records in the log the history supersedes.
    skipped: FxHashSet<ExecutionId>,
}

impl FiledSoFar {
    fn add(&mut self, summary: codec::DoneSummary<'_>, location: Location) {
        let function_id = match self.names.get(&*summary.function_id) {
            Some(name) => Arc::clone(name),
            None => {
                let name: Arc<str> = Arc::from(&*summary.function_id);
                self.names
                    .insert(summary.function_id.into_owned(), Arc::clone(&name));
                name
            }
        };
        let index = self.entries.len();
        self.entries.push(Some(Filed {
            id: summary.id,
            function_id,
            status: summary.status,
            attempt: summary.attempt,
            finished_at_us: summary.finished_at_us,
            idempotency: summary.idempotency,
            location,
        }));
        // A later copy (written again after a failed write) supersedes.
        if let Some((_, earlier)) = self
            .by_id
            .insert(summary.id, (summary.created_at_us, index))
        {
            self.supersede(earlier);
        }
    }

    fn supersede(&mut self, index: usize) {
        if let Some(entry) = self.entries[index].take() {
            self.superseded.push(entry.location);
        }
    }

    /// Whether `record`, from the executions log, is superseded by the
    /// history: the records of a filed execution (the log is compacted only
    /// after its end is filed), or of an older one under the same id. An
    /// acceptance newer than the filed execution reuses its id (retention
    /// forgot it) and supersedes it instead.
    fn supersedes(&mut self, record: &Record) -> bool {
        match record {
            Record::Accepted(accepted) => match self.by_id.get(&accepted.id) {
                Some(&(created_at_us, _)) if accepted.created_at_us <= created_at_us => {
                    self.skipped.insert(accepted.id);
                    true
                }
                Some(&(_, index)) => {
                    // What follows is the new execution's.
                    self.by_id.remove(&accepted.id);
                    self.skipped.remove(&accepted.id);
                    self.supersede(index);
                    false
                }
                None => false,
            },
            Record::Started { id, .. }
            | Record::Finished { id, .. }
            | Record::Evicted { id, .. } => self.skipped.contains(id),
            Record::Function(_) | Record::FunctionDeleted { .. } => false,
        }
    }
}

impl Store for JsonlStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        if self.loaded {
            return Err(StoreError::AlreadyLoaded);
        }
        let mut warnings = Vec::new();
        let mut filed = FiledSoFar::default();
        let history_created = self.history.load(&mut warnings, |entry| {
            filed.add(entry.summary, entry.location)
        })?;

        // Read both logs before touching either: a corrupt one stops the load
        // with nothing changed, and a failed load can simply be retried.
        let mut live = LiveState::default();
        let mut found = Vec::with_capacity(2);
        for log in [&self.functions, &self.executions] {
            let file = self
                .disk
                .fs
                .open_read(&log.path)
                .map_err(|e| StoreError::io("open", &log.path, e))?;
            let scan = match file {
                Some(file) => Some(scan(&log.path, file, &mut warnings, |record, length| {
                    if filed.supersedes(record) {
                        return Ok(());
                    }
                    live.apply_line(record, length)
                        .map_err(|ignored| ignored.to_string())
                })?),
                None => None,
            };
            found.push(scan);
        }
        for location in filed.superseded.drain(..) {
            self.history.forget_loaded(location);
        }

        let mut created = history_created;
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
        // A log from before the history holds finished executions: file them.
        let migrated = live.drain_finished();
        let mut history: Vec<Filed> = filed.entries.into_iter().flatten().collect();
        if !migrated.is_empty() {
            history.extend(self.file_now(&migrated)?);
        }
        let recovered = Recovered {
            functions: live.functions().cloned().collect(),
            executions: live.recovered_executions(),
            history,
            warnings,
        };
        self.live = live;
        self.loaded = true;
        Ok(recovered)
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.ensure_loaded()?;
        match record {
            Record::Finished { id, finished } => {
                match self.live.finish(*id, finished) {
                    Ok(done) => {
                        self.history.append(&done)?;
                        self.executions.filed(*id);
                    }
                    Err(ignored) => tracing::warn!("store: {ignored}"),
                }
                return Ok(());
            }
            Record::Evicted { id, filed } if !self.live.holds(*id) => {
                self.history.evict(*id, *filed);
                return Ok(());
            }
            _ => {}
        }
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
            Ok(()) => {
                log.size += Footprint::line(length);
                if let Which::Executions = log.which {
                    log.lines.push(BufferedLine {
                        id: record.execution_id(),
                        end: log.buffer.len(),
                        filed: false,
                    });
                }
            }
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
        // The history first: a log rewritten from the live state (after a
        // failed write) no longer holds the executions filed since, so their
        // ends must be durable before it replaces the old log. Then functions:
        // an execution that made it to disk then finds the function it was
        // accepted for, if that was registered before it.
        self.history.sync()?;
        self.functions.flush(&mut self.disk, &self.live)?;
        self.executions.flush(&mut self.disk, &self.live)?;
        self.disk.sync_dir()
    }

    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        self.history.take_filed()
    }

    fn history(&self) -> Arc<dyn HistoryReader> {
        self.history.reader()
    }

    fn wants_compaction(&self) -> bool {
        let logged = self.functions.size + self.executions.size;
        let live = live_footprint(&self.live, Which::Functions)
            + live_footprint(&self.live, Which::Executions);
        // A segment emptied by retention is disk to give back; compacting
        // costs only the live state, which is small.
        outgrown(logged, live) || self.history.has_emptied()
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.ensure_loaded()?;
        // As in `sync`: ends filed before the snapshot that drops their
        // executions.
        self.history.sync()?;
        self.functions.compact(&mut self.disk, &self.live)?;
        self.executions.compact(&mut self.disk, &self.live)?;
        // One directory sync makes both renames durable.
        self.disk.sync_dir()?;
        // The log holds no acceptance of a filed execution now: segments
        // retention emptied can go.
        self.history.remove_emptied()
    }
}

impl fmt::Debug for JsonlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlStore")
            .field("data_dir", &self.disk.dir)
            .field("loaded", &self.loaded)
            .field("function_log", &self.functions.size)
            .field("execution_log", &self.executions.size)
            .field("history_segments", self.history.segments())
            .field(
                "buffered_bytes",
                &(self.functions.buffer.len()
                    + self.executions.buffer.len()
                    + self.history.pending_bytes()),
            )
            .finish_non_exhaustive()
    }
}

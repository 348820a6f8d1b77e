//! The history: finished executions on disk, in segments that are written
//! once and deleted whole.
//!
//! When an execution finishes, the JSON Lines store writes it whole as one
//! `done` line (see `codec.rs`) to the current segment,
//! `history/00000001.jsonl`, `history/00000002.jsonl`, ..., and syncs it with
//! the logs. Its [`Location`] (segment, offset, length) is handed back to the
//! scheduler, which keeps that and a summary, and reads the line again only
//! when someone asks about the execution. A line is never rewritten: a
//! location stays valid until retention forgets the execution.
//!
//! Retention forgets executions roughly in the order they finished, which is
//! the order they were filed, so segments empty from the oldest on. Each
//! segment counts the executions in it that are still remembered; one that
//! counts none is deleted at the next compaction (not before: until the log
//! is compacted it may still hold the acceptance of an execution whose end is
//! in that segment, and without the end a restart would run it again).
//! Evictions are not written anywhere: a restart applies retention afresh to
//! what it finds, and forgets the same executions again.
//!
//! A new segment starts with every process (so a line torn by a crash is
//! only ever the last of its segment), when the current one reaches
//! [`SEGMENT_BYTES`], and after a failed write (the file may end in a
//! fragment; the lines still waiting are written again to the next one).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskforge_core::ExecutionId;

use super::fs::{AppendFile, FileSystem};
use super::{FinishedExecution, HistoryReader, Location, StoreError, codec, lines};

/// A segment is closed once it holds this many bytes (a single record may
/// take it past that). Small enough that retention frees disk space in
/// steps of this size; large enough that a million executions take a few
/// dozen files.
pub const SEGMENT_BYTES: u64 = 16 << 20;

pub(crate) const HISTORY_DIR: &str = "history";

/// Segments are read in pieces of this size when loading.
const READ_CHUNK: usize = 256 << 10;

pub(crate) struct History {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// See [`SEGMENT_BYTES`].
    segment_bytes: u64,
    /// Every segment on disk, with how many remembered executions it holds.
    segments: BTreeMap<u32, u64>,
    /// The segment being appended to; `None` until the first write of this
    /// process and after a failed one.
    current: Option<Current>,
    next_segment: u32,
    /// Lines waiting for the next sync.
    pending: Vec<u8>,
    pending_entries: Vec<PendingEntry>,
    /// Filed by a successful sync, not yet handed out.
    filed: Vec<(ExecutionId, Location)>,
    /// What the last two successful syncs filed. Retention may forget an
    /// execution before its location has reached the scheduler (which
    /// then names none): the eviction still finds it here.
    recent: [Vec<(ExecutionId, Location)>; 2],
    dir_unsynced: bool,
}

struct Current {
    number: u32,
    file: Box<dyn AppendFile>,
    len: u64,
}

struct PendingEntry {
    id: ExecutionId,
    /// Where its line starts in `pending`.
    start: usize,
    len: usize,
    /// Forgotten by retention before it was written: written all the same
    /// (it says the execution finished), but not counted as remembered.
    evicted: bool,
}

/// A line read back from a segment at start.
pub(crate) struct LoadedEntry<'a> {
    pub(crate) summary: codec::DoneSummary<'a>,
    pub(crate) location: Location,
}

impl History {
    pub(crate) fn new(fs: Arc<dyn FileSystem>, data_dir: &Path) -> History {
        History {
            fs,
            dir: data_dir.join(HISTORY_DIR),
            segment_bytes: SEGMENT_BYTES,
            segments: BTreeMap::new(),
            current: None,
            next_segment: 1,
            pending: Vec::new(),
            pending_entries: Vec::new(),
            filed: Vec::new(),
            recent: [Vec::new(), Vec::new()],
            dir_unsynced: false,
        }
    }

    pub(crate) fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes.max(1);
    }

    pub(crate) fn reader(&self) -> Arc<dyn HistoryReader> {
        Arc::new(SegmentReader {
            fs: Arc::clone(&self.fs),
            dir: self.dir.clone(),
        })
    }

    /// Reads every segment, in order. Returns each line's summary and
    /// location, and whether the history directory had to be created (its
    /// name is then durable only once the data directory is synced). Each
    /// segment's count starts at its number of lines; the caller takes back
    /// what it drops with [`forget_loaded`](Self::forget_loaded).
    pub(crate) fn load(
        &mut self,
        warnings: &mut Vec<String>,
        mut each: impl FnMut(LoadedEntry<'_>),
    ) -> Result<bool, StoreError> {
        let names = self
            .fs
            .list_dir(&self.dir)
            .map_err(|e| StoreError::io("list", &self.dir, e))?;
        let created = names.is_empty();
        if created {
            self.fs
                .create_dir_all(&self.dir)
                .map_err(|e| StoreError::io("create directory", &self.dir, e))?;
        }
        let mut numbers: Vec<u32> = names
            .iter()
            .filter_map(|name| segment_number(name))
            .collect();
        numbers.sort_unstable();
        for number in numbers {
            let path = segment_path(&self.dir, number);
            let Some(file) = self
                .fs
                .open_read(&path)
                .map_err(|e| StoreError::io("open", &path, e))?
            else {
                continue;
            };
            let (count, read) = read_segment(&path, number, file, warnings, &mut each)?;
            if read.torn {
                self.cut_back(number, read.clean_bytes)?;
            }
            self.segments.insert(number, count);
            self.next_segment = number + 1;
        }
        Ok(created)
    }

    /// Replaces segment `number` by its first `clean_bytes` bytes, dropping
    /// a torn last line, so that the next start finds it clean. The lines
    /// kept do not move, so their locations hold.
    fn cut_back(&mut self, number: u32, clean_bytes: u64) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, number);
        let tmp = self.dir.join(format!("{number:08}.jsonl.tmp"));
        let mut clean = Vec::new();
        if let Some(file) = self
            .fs
            .open_read(&path)
            .map_err(|e| StoreError::io("open", &path, e))?
        {
            io::Read::read_to_end(&mut io::Read::take(file, clean_bytes), &mut clean)
                .map_err(|e| StoreError::io("read", &path, e))?;
        }
        let mut file = self
            .fs
            .create(&tmp)
            .map_err(|e| StoreError::io("create", &tmp, e))?;
        file.append(&clean)
            .and_then(|()| file.sync())
            .map_err(|e| StoreError::io("write", &tmp, e))?;
        drop(file);
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| StoreError::io("rename into place", &tmp, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StoreError::io("sync directory", &self.dir, e))
    }

    /// Whether retention emptied a segment the next compaction would delete.
    pub(crate) fn has_emptied(&self) -> bool {
        let current = self.current.as_ref().map(|c| c.number);
        self.segments
            .iter()
            .any(|(&number, &count)| count == 0 && Some(number) != current)
    }

    /// A loaded entry will not be remembered after all (a later copy of it,
    /// or an execution that reused its id, supersedes it).
    pub(crate) fn forget_loaded(&mut self, location: Location) {
        if let Some(count) = self.segments.get_mut(&location.segment) {
            *count = count.saturating_sub(1);
        }
    }

    /// Queues a finished execution's line for the next sync.
    pub(crate) fn append(&mut self, done: &FinishedExecution) -> Result<(), StoreError> {
        let start = self.pending.len();
        if let Err(source) = codec::encode_done(done, &mut self.pending) {
            self.pending.truncate(start);
            return Err(StoreError::Encode {
                path: self.dir.clone(),
                source,
            });
        }
        self.pending_entries.push(PendingEntry {
            id: done.record.id,
            start,
            len: self.pending.len() - start,
            evicted: false,
        });
        Ok(())
    }

    /// Retention forgot `id`, which was filed at `filed` (or not yet).
    pub(crate) fn evict(&mut self, id: ExecutionId, filed: Option<Location>) {
        match filed {
            Some(location) => self.forget_loaded(location),
            None => {
                if let Some(entry) = self.pending_entries.iter_mut().rev().find(|e| e.id == id) {
                    entry.evicted = true;
                } else if let Some(&(_, location)) = self
                    .recent
                    .iter()
                    .flatten()
                    .find(|&&(filed, _)| filed == id)
                {
                    self.forget_loaded(location);
                }
            }
        }
    }

    /// Writes and syncs the lines waiting, then hands their locations out
    /// through [`take_filed`](Self::take_filed). After an error the lines
    /// stay waiting and go to a new segment next time.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rolls = self.current.as_ref().is_none_or(|current| {
            current.len > 0 && current.len + self.pending.len() as u64 > self.segment_bytes
        });
        if rolls {
            self.start_segment()?;
        }
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::NotLoaded);
        };
        let path = segment_path(&self.dir, current.number);
        let base = current.len;
        if base + self.pending.len() as u64 > u64::from(u32::MAX) {
            let error = io::Error::other("a history segment cannot pass 4 GiB");
            self.current = None;
            return Err(StoreError::io("append to", &path, error));
        }
        let written = current
            .file
            .append(&self.pending)
            .and_then(|()| current.file.sync());
        if let Err(source) = written {
            // It may end in a fragment now: never append to it again.
            self.current = None;
            return Err(StoreError::io("append to", &path, source));
        }
        let number = current.number;
        current.len += self.pending.len() as u64;
        if self.dir_unsynced {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| StoreError::io("sync directory", &self.dir, e))?;
            self.dir_unsynced = false;
        }
        let count = self.segments.entry(number).or_default();
        self.recent.swap(0, 1);
        let recent = &mut self.recent[1];
        recent.clear();
        for entry in self.pending_entries.drain(..) {
            if entry.evicted {
                continue;
            }
            *count += 1;
            let location = Location {
                segment: number,
                offset: (base + entry.start as u64) as u32,
                len: entry.len as u32,
            };
            self.filed.push((entry.id, location));
            recent.push((entry.id, location));
        }
        self.pending.clear();
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), StoreError> {
        self.current = None;
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.dir, number);
        let file = self
            .fs
            .create(&path)
            .map_err(|e| StoreError::io("create", &path, e))?;
        self.segments.entry(number).or_default();
        self.dir_unsynced = true;
        self.current = Some(Current {
            number,
            file,
            len: 0,
        });
        Ok(())
    }

    pub(crate) fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        std::mem::take(&mut self.filed)
    }

    /// Deletes the segments retention emptied, but never the current one.
    /// Only once the log no longer holds the acceptances of executions
    /// filed before now (see the module documentation).
    pub(crate) fn remove_emptied(&mut self) -> Result<(), StoreError> {
        let current = self.current.as_ref().map(|c| c.number);
        let emptied: Vec<u32> = self
            .segments
            .iter()
            .filter(|&(&number, &count)| count == 0 && Some(number) != current)
            .map(|(&number, _)| number)
            .collect();
        if emptied.is_empty() {
            return Ok(());
        }
        for number in emptied {
            let path = segment_path(&self.dir, number);
            self.fs
                .remove_file(&path)
                .map_err(|e| StoreError::io("remove", &path, e))?;
            self.segments.remove(&number);
        }
        // A removal that a crash undoes only brings back executions that
        // retention forgets again at the next start.
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StoreError::io("sync directory", &self.dir, e))
    }

    /// Segments on disk, with the executions each still holds (for tests
    /// and for the debug view).
    pub(crate) fn segments(&self) -> &BTreeMap<u32, u64> {
        &self.segments
    }

    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08}.jsonl"))
}

fn segment_number(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads one segment; returns how many entries it holds. A torn last line
/// is skipped with a warning: the execution's acceptance is still in the log
/// (the log is compacted only after a segment's lines are durable), so it
/// is not lost.
fn read_segment(
    path: &Path,
    number: u32,
    file: Box<dyn io::Read>,
    warnings: &mut Vec<String>,
    each: &mut impl FnMut(LoadedEntry<'_>),
) -> Result<(u64, lines::Lines), StoreError> {
    let mut count = 0;
    let read = lines::read_lines(path, file, READ_CHUNK, warnings, |content, place| {
        let summary = codec::decode_done_summary(content)?;
        let location = Location {
            segment: number,
            offset: u32::try_from(place.offset)
                .map_err(|_| "past 4 GiB into a segment".to_string())?,
            len: u32::try_from(place.length).map_err(|_| "a line over 4 GiB".to_string())?,
        };
        count += 1;
        each(LoadedEntry { summary, location });
        Ok(())
    })?;
    Ok((count, read))
}

/// Reads `done` lines at their locations.
struct SegmentReader {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl HistoryReader for SegmentReader {
    fn read(
        &self,
        id: ExecutionId,
        location: Location,
    ) -> Result<Option<FinishedExecution>, StoreError> {
        let path = segment_path(&self.dir, location.segment);
        let bytes = match self
            .fs
            .read_at(&path, u64::from(location.offset), location.len as usize)
        {
            Ok(Some(bytes)) => bytes,
            // Deleted since: retention forgot it.
            Ok(None) => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let misplaced = |problem: String| StoreError::Misplaced {
            path: path.clone(),
            offset: location.offset,
            id,
            problem,
        };
        let line = bytes
            .strip_suffix(b"\n")
            .ok_or_else(|| misplaced("the range does not end a line".into()))?;
        let done = codec::decode_done(line).map_err(misplaced)?;
        if done.record.id != id {
            return Err(misplaced(format!("it holds {}", done.record.id)));
        }
        Ok(Some(done))
    }
}

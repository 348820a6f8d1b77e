//! A filesystem in memory that forgets what a crash would forget, for tests.
//!
//! It keeps two views, as a disk with a page cache does: what the running
//! process sees, and what is durable. Appended bytes become durable on
//! [`AppendFile::sync`]; names created or renamed become durable on
//! [`FileSystem::sync_dir`] of their directory (a synced file whose name was
//! never synced is lost, as on POSIX and in turmoil's simulated disk).
//! [`CrashFs::crash`] throws the volatile view away, optionally keeping a prefix
//! of each file's unsynced appends to model a write torn by the crash, and
//! fails every handle opened before it. [`CrashFs::fail_next`] makes the next
//! operation of a kind fail, as a full disk or a dying device would.
//!
//! Directories are simplified: they exist, durably, from `create_dir_all` on.
//! A file no name reaches any more, in either view, is emptied, so that tests
//! pushing hundreds of megabytes through compactions do not keep them all
//! (unlike on a real disk, a reader still open on it then finds it empty; the
//! store never reads a file it replaced).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{AppendFile, FileSystem};

/// An operation [`CrashFs::fail_next`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// Writes the first half of the bytes, then fails (a disk that filled up).
    Append,
    /// `fsync` of a file fails, and nothing becomes durable.
    Sync,
    Create,
    Rename,
    SyncDir,
}

/// A handle on the shared disk; clones see the same disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct CrashFs {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    /// Indexed by inode number; never shrinks (orphans are harmless here).
    inodes: Vec<Inode>,
    /// Names as the running process sees them.
    names: BTreeMap<PathBuf, usize>,
    /// Names as they are on disk: what a crash goes back to.
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    /// Bumped by each crash; handles from an earlier life fail.
    life: u64,
    armed: BTreeSet<Fault>,
    /// The most bytes one read of a file handed out.
    largest_read: usize,
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

impl CrashFs {
    pub(crate) fn new() -> CrashFs {
        CrashFs::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    /// The next operation of this kind fails (once).
    pub(crate) fn fail_next(&self, fault: Fault) {
        self.disk().armed.insert(fault);
    }

    /// The machine dies: unsynced data and names are lost, except that up to
    /// `keep_unsynced` bytes of each file's unsynced appends survive, as the
    /// start of a write torn by the crash. Armed faults are disarmed.
    pub(crate) fn crash(&self, keep_unsynced: usize) {
        let mut disk = self.disk();
        for inode in &mut disk.inodes {
            let mut survivor = std::mem::take(&mut inode.durable);
            if let Some(unsynced) = inode.current.strip_prefix(survivor.as_slice()) {
                let kept = unsynced.len().min(keep_unsynced);
                survivor.extend_from_slice(&unsynced[..kept]);
            }
            inode.current.clone_from(&survivor);
            inode.durable = survivor;
        }
        disk.names = disk.durable_names.clone();
        disk.life += 1;
        disk.armed.clear();
    }

    /// Names in the directory as the running process sees them.
    pub(crate) fn list(&self, dir: &Path) -> Vec<PathBuf> {
        let disk = self.disk();
        disk.names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect()
    }

    /// The whole file as the running process sees it, or `None` (for checking
    /// what a test wrote).
    pub(crate) fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let disk = self.disk();
        Ok(disk
            .names
            .get(path)
            .map(|&inode| disk.inodes[inode].current.clone()))
    }

    /// The most bytes a single read through [`FileSystem::open_read`] handed
    /// out so far.
    pub(crate) fn largest_read(&self) -> usize {
        self.disk().largest_read
    }

    /// Appends bytes durably behind the store's back, creating the file (for
    /// planting damage in a log).
    pub(crate) fn append_durably(&self, path: &Path, bytes: &[u8]) {
        let mut disk = self.disk();
        let inode = disk.inode_for(path);
        let file = &mut disk.inodes[inode];
        file.current.extend_from_slice(bytes);
        file.durable.clone_from(&file.current);
        disk.durable_names.insert(path.to_owned(), inode);
    }
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    fn trip(&mut self, fault: Fault) -> io::Result<()> {
        match self.armed.remove(&fault) {
            true => Err(io::Error::other(format!("injected fault: {fault:?}"))),
            false => Ok(()),
        }
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !self.dirs.contains(parent) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", parent.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Empties the files no name reaches in either view: nothing can read
    /// them again (a crash goes back to durable names), only handles still
    /// open can write to them.
    fn drop_orphans(&mut self) {
        let reachable: BTreeSet<usize> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        for (number, inode) in self.inodes.iter_mut().enumerate() {
            if !reachable.contains(&number) {
                *inode = Inode::default();
            }
        }
    }

    /// The inode named `path`, created empty (with a volatile name) if missing.
    fn inode_for(&mut self, path: &Path) -> usize {
        if let Some(&inode) = self.names.get(path) {
            return inode;
        }
        self.inodes.push(Inode::default());
        let inode = self.inodes.len() - 1;
        self.names.insert(path.to_owned(), inode);
        inode
    }
}

impl FileSystem for CrashFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.dirs.extend(path.ancestors().map(Path::to_owned));
        Ok(())
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read>>> {
        let disk = self.disk();
        Ok(disk.names.get(path).map(|&inode| {
            Box::new(CrashReader {
                disk: Arc::clone(&self.disk),
                inode,
                life: disk.life,
                offset: 0,
            }) as Box<dyn Read>
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut disk = self.disk();
        disk.check_parent(path)?;
        let inode = disk.inode_for(path);
        Ok(Box::new(CrashFile {
            disk: Arc::clone(&self.disk),
            inode,
            life: disk.life,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut disk = self.disk();
        disk.trip(Fault::Create)?;
        disk.check_parent(path)?;
        let inode = disk.inode_for(path);
        // Truncation is not durable before a sync either.
        disk.inodes[inode].current.clear();
        Ok(Box::new(CrashFile {
            disk: Arc::clone(&self.disk),
            inode,
            life: disk.life,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.trip(Fault::Rename)?;
        disk.check_parent(to)?;
        let inode = disk.names.remove(from).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", from.display()),
            )
        })?;
        disk.names.insert(to.to_owned(), inode);
        disk.drop_orphans();
        Ok(())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let disk = self.disk();
        let Some(&inode) = disk.names.get(path) else {
            return Ok(None);
        };
        let current = &disk.inodes[inode].current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match current.get(start..start.saturating_add(len)) {
            Some(bytes) => Ok(Some(bytes.to_vec())),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than the range asked for", path.display()),
            )),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.names.remove(path);
        disk.drop_orphans();
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .list(path)
            .iter()
            .filter_map(|name| name.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.trip(Fault::SyncDir)?;
        if !disk.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            ));
        }
        let in_dir = |name: &PathBuf| name.parent() == Some(path);
        let Disk {
            names,
            durable_names,
            ..
        } = &mut *disk;
        durable_names.retain(|name, _| !in_dir(name) || names.contains_key(name));
        for (name, &inode) in names.iter().filter(|(name, _)| in_dir(name)) {
            durable_names.insert(name.clone(), inode);
        }
        disk.drop_orphans();
        Ok(())
    }
}

#[derive(Debug)]
struct CrashFile {
    disk: Arc<Mutex<Disk>>,
    inode: usize,
    life: u64,
}

impl CrashFile {
    fn disk(&self) -> io::Result<MutexGuard<'_, Disk>> {
        lock_alive(&self.disk, self.life)
    }
}

/// The disk, unless it crashed since a handle of `life` was opened.
fn lock_alive(disk: &Mutex<Disk>, life: u64) -> io::Result<MutexGuard<'_, Disk>> {
    let disk = lock(disk);
    match disk.life == life {
        true => Ok(disk),
        false => Err(io::Error::other("file handle from before a crash")),
    }
}

/// A file open for reading: each read sees the file as it is then, as with a
/// real file descriptor.
#[derive(Debug)]
struct CrashReader {
    disk: Arc<Mutex<Disk>>,
    inode: usize,
    life: u64,
    offset: usize,
}

impl Read for CrashReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut disk = lock_alive(&self.disk, self.life)?;
        let current = &disk.inodes[self.inode].current;
        let rest = current.get(self.offset..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.offset += n;
        disk.largest_read = disk.largest_read.max(n);
        Ok(n)
    }
}

impl AppendFile for CrashFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk()?;
        let fault = disk.trip(Fault::Append);
        let written = match fault {
            Ok(()) => bytes,
            Err(_) => &bytes[..bytes.len() / 2],
        };
        disk.inodes[self.inode].current.extend_from_slice(written);
        fault
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.disk()?;
        disk.trip(Fault::Sync)?;
        let file = &mut disk.inodes[self.inode];
        file.durable.clone_from(&file.current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_data_under_synced_names_only() -> io::Result<()> {
        let fs = CrashFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir)?;
        let (a, b) = (dir.join("a"), dir.join("b"));

        let mut file = fs.open_append(&a)?;
        file.append(b"synced\n")?;
        file.sync()?;
        fs.sync_dir(dir)?;
        file.append(b"unsynced\n")?;
        let mut other = fs.open_append(&b)?;
        other.append(b"data\n")?;
        other.sync()?; // data durable, but the name never was

        let mut reader = fs.open_read(&a)?.expect("a exists");
        let mut piece = [0; 4];
        assert_eq!(reader.read(&mut piece)?, 4, "reads go a piece at a time");
        assert_eq!(&piece, b"sync");
        assert!(fs.open_read(&dir.join("missing"))?.is_none());

        fs.crash(3);
        assert_eq!(fs.read(&a)?.as_deref(), Some(&b"synced\nuns"[..]));
        assert_eq!(fs.read(&b)?, None);
        assert!(file.append(b"x").is_err(), "handles die with the crash");
        assert!(reader.read(&mut piece).is_err(), "readers too");

        let mut tmp = fs.create(&dir.join("a.tmp"))?;
        tmp.append(b"new\n")?;
        tmp.sync()?;
        fs.rename(&dir.join("a.tmp"), &a)?;
        fs.crash(0); // the rename was never made durable
        assert_eq!(fs.read(&a)?.as_deref(), Some(&b"synced\nuns"[..]));
        Ok(())
    }
}

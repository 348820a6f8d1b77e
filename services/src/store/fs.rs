//! The filesystem seam under the JSON Lines store.
//!
//! [`JsonlStore`](super::JsonlStore) does every file operation through
//! [`FileSystem`], so one store implementation runs on three disks: the real one
//! ([`StdFileSystem`]), turmoil's simulated one (implemented in the sim crate, where
//! a host crash loses whatever was not synced), and fault-injecting ones in tests.
//! A trait object rather than a cargo feature: features unify across a workspace
//! build, and the real binary must never end up on a simulated disk.
//!
//! The trait is deliberately small: exactly the operations an append-only log with
//! snapshot compaction needs, with the durability points spelled out, because the
//! store's correctness rests on them:
//! - bytes appended to a file are durable once [`AppendFile::sync`] returns;
//! - a file created (by [`FileSystem::open_append`]) or renamed into a directory
//!   is durable once [`FileSystem::sync_dir`] on that directory returns. Until
//!   then a crash may forget the name even though the data was synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// The file operations the store needs; all paths are absolute or relative to
/// the process's working directory, as with `std::fs`.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates `path` and any missing parents; succeeds if it already exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Opens `path` for reading from its start, or `None` if it does not
    /// exist. A reader rather than the whole file: a log can be far larger
    /// than what it loads to, so the store reads it as a stream.
    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read>>>;

    /// Opens `path` for appending, creating it empty if it is missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;

    /// Creates `path`, or truncates it, and opens it for appending. The name is
    /// not durable until the directory is synced.
    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;

    /// Atomically replaces `to` with `from`. Durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Reads `len` bytes of `path` from `offset`, or `None` if the file does
    /// not exist. A file too short for the range is an error
    /// (`UnexpectedEof`). For the history's records, read one at a time from
    /// anywhere in a large file.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>>;

    /// Removes `path`; succeeds if it is already gone. Durable once the
    /// directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// The names of the files in the directory `path`, in no particular
    /// order; empty if the directory does not exist.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
}

/// A file open for appending.
pub trait AppendFile: Send {
    /// Writes all of `bytes` at the end of the file. On error, any prefix of them
    /// may have been written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// The real filesystem, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFileSystem;

impl FileSystem for StdFileSystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read>>> {
        match File::open(path) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(StdAppendFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(StdAppendFile(File::create(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    #[cfg(unix)]
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Unix a directory opened read-only can be fsynced, which is what
        // makes the names created or renamed in it survive a crash.
        File::open(path)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        // Other platforms offer no portable way to sync a directory (Windows
        // makes renames durable with the file's metadata instead).
        Ok(())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        use std::io::{Seek, SeekFrom};
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = vec![0; len];
        file.read_exact(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

#[derive(Debug)]
struct StdAppendFile(File);

impl AppendFile for StdAppendFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        // Data and the size needed to read it back; not the timestamps.
        self.0.sync_data()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temp dir, removed on drop.
    #[derive(Debug)]
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "taskforge-store-{label}-{}-{unique}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The whole file through [`FileSystem::open_read`], or `None`.
    fn read(fs: &dyn FileSystem, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let Some(mut file) = fs.open_read(path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    #[test]
    fn std_file_system_appends_replaces_and_reads_back() -> io::Result<()> {
        let dir = TempDir::new("fs");
        let fs = StdFileSystem;
        fs.create_dir_all(&dir.0)?;
        fs.create_dir_all(&dir.0)?; // idempotent
        let log = dir.0.join("log");
        assert_eq!(read(&fs, &log)?, None);

        let mut file = fs.open_append(&log)?;
        file.append(b"one\n")?;
        file.append(b"two\n")?;
        file.sync()?;
        drop(file);
        let mut file = fs.open_append(&log)?; // reopening appends, never truncates
        file.append(b"three\n")?;
        file.sync()?;
        fs.sync_dir(&dir.0)?;
        assert_eq!(read(&fs, &log)?.as_deref(), Some(&b"one\ntwo\nthree\n"[..]));

        let tmp = dir.0.join("log.tmp");
        fs.create(&tmp)?.append(b"stale")?;
        let mut file = fs.create(&tmp)?; // truncates
        file.append(b"snapshot\n")?;
        file.sync()?;
        drop(file);
        fs.rename(&tmp, &log)?;
        fs.sync_dir(&dir.0)?;
        assert_eq!(read(&fs, &log)?.as_deref(), Some(&b"snapshot\n"[..]));
        assert_eq!(read(&fs, &tmp)?, None);
        Ok(())
    }
}

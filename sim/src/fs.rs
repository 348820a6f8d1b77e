//! The store's filesystem seam, filled with turmoil's simulated disk, and a
//! power switch that cuts the disk off in the middle of an operation.
//!
//! The scheduler's real JSON Lines store does all of its file operations
//! through `taskforge_services::store::FileSystem`. [`SimFileSystem`] maps them
//! onto `turmoil::fs::shim`: a per-host disk on which written bytes are durable
//! only after a sync, and a created or renamed name only after its directory
//! is synced. When the simulation crashes the scheduler's host, whatever was
//! not synced is gone — or, with a block size configured, torn part way — so a
//! crash exercises the real group commit and the real recovery.
//!
//! A crash between two simulation steps finds the store between operations,
//! though: every batch is appended and synced within one step, so nothing is
//! ever pending at a step boundary. To reach the windows inside a batch —
//! bytes written but not synced, a sync that never completed — [`Power`] cuts
//! the disk at a chosen operation: an append writes half of its bytes, then
//! that operation and every later one fails. The rest of that step still runs
//! (with every disk operation failing), as a process does between a failed
//! fsync and the death of its machine; then the harness crashes the host, and
//! turmoil drops (or, with a block size, tears) whatever was not synced. That
//! short window is where an answer that should have waited for durability —
//! an ACCEPTED, a terminal state — escapes before its record is safe.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use turmoil::fs::shim::std::fs as sim_fs;

use taskforge_services::store::{AppendFile, FileSystem};

/// The power supply of one host's disk, shared between the harness (which arms
/// and restores it) and the host's filesystem (which trips it).
#[derive(Clone, Debug, Default)]
pub struct Power(Arc<Mutex<PowerState>>);

#[derive(Debug, Default)]
struct PowerState {
    /// Operations that still succeed before the cut; `None` when not armed.
    countdown: Option<u32>,
    /// The power is out: every operation fails until [`Power::restore`].
    cut: bool,
}

/// What the power lets an operation do.
enum Supply {
    On,
    /// This operation is the one the power goes out during.
    CutNow,
    Off,
}

impl Power {
    /// Cuts the power during the `after`-th mutating operation from now
    /// (0: the very next one).
    pub fn arm(&self, after: u32) {
        self.state().countdown = Some(after);
    }

    pub fn is_cut(&self) -> bool {
        self.state().cut
    }

    /// Back on, disarmed (before the host restarts).
    pub fn restore(&self) {
        *self.state() = PowerState::default();
    }

    fn state(&self) -> MutexGuard<'_, PowerState> {
        // Simulated hosts share one thread; a poisoned lock means a panic
        // already failed the run.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn supply(&self) -> Supply {
        let mut state = self.state();
        if state.cut {
            return Supply::Off;
        }
        match state.countdown {
            Some(0) => {
                state.cut = true;
                state.countdown = None;
                Supply::CutNow
            }
            Some(n) => {
                state.countdown = Some(n - 1);
                Supply::On
            }
            None => Supply::On,
        }
    }

    /// Fails unless the power is on; the operation that trips it fails too.
    fn check(&self) -> io::Result<()> {
        match self.supply() {
            Supply::On => Ok(()),
            Supply::CutNow | Supply::Off => Err(power_out()),
        }
    }
}

fn power_out() -> io::Error {
    io::Error::other("simulated power failure: the disk is gone")
}

/// `taskforge_services::store::FileSystem` on turmoil's simulated disk of the
/// current host. Must be used on a simulated host.
#[derive(Clone, Debug)]
pub struct SimFileSystem {
    power: Power,
}

impl SimFileSystem {
    pub fn new(power: Power) -> SimFileSystem {
        SimFileSystem { power }
    }
}

impl FileSystem for SimFileSystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.power.check()?;
        sim_fs::create_dir_all(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read>>> {
        if self.power.is_cut() {
            return Err(power_out());
        }
        match sim_fs::File::open(path) {
            Ok(file) => Ok(Some(Box::new(SimReadFile {
                file,
                power: self.power.clone(),
            }))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.power.check()?;
        let file = sim_fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Box::new(SimAppendFile {
            file,
            power: self.power.clone(),
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.power.check()?;
        let file = sim_fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(SimAppendFile {
            file,
            power: self.power.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.power.check()?;
        sim_fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.power.check()?;
        sim_fs::sync_dir(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt as _;
        if self.power.is_cut() {
            return Err(power_out());
        }
        let file = match sim_fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(Some(bytes))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.power.check()?;
        match sim_fs::remove_file(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        if self.power.is_cut() {
            return Err(power_out());
        }
        let entries = match sim_fs::read_dir(path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

/// A file open for reading. Reading changes nothing, so it does not count
/// towards the power cut; it only fails once the power is out.
struct SimReadFile {
    file: sim_fs::File,
    power: Power,
}

impl Read for SimReadFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.power.is_cut() {
            return Err(power_out());
        }
        self.file.read(buf)
    }
}

struct SimAppendFile {
    file: sim_fs::File,
    power: Power,
}

impl AppendFile for SimAppendFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.power.supply() {
            Supply::On => self.file.write_all(bytes),
            Supply::CutNow => {
                // Half of the write reached the page cache when the power went.
                let _ = self.file.write_all(&bytes[..bytes.len() / 2]);
                Err(power_out())
            }
            Supply::Off => Err(power_out()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.power.check()?;
        self.file.sync_data()
    }
}

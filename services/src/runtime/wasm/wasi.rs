//! A minimal WASI preview 1, deny by default: what a function needs to read
//! its payload and write its output, and nothing that reaches the host.
//!
//! - fd 0 (stdin) reads the payload; fds 1 and 2 (stdout, stderr) append to
//!   capped in-memory buffers (writing past the cap ends the execution);
//! - no arguments, no environment, no preopened directories (so no path can
//!   ever be opened: every `path_*` call answers ENOTCAPABLE), no sockets;
//! - clocks answer from the real clock; `random_get` from a generator seeded
//!   per execution (not cryptographic);
//! - `proc_exit` ends the execution with its code.
//!
//! Every other function of [`WASI_PREVIEW1`] is linked too (a module may
//! import any of them) and answers an errno without doing anything. Guest
//! pointers are checked against the module's memory: out of range answers
//! EFAULT, never a panic. No call blocks or touches the host's files,
//! environment or network, whoever the worker runs as.
//!
//! [`WASI_PREVIEW1`]: crate::languages::WASI_PREVIEW1

use std::ops::Range;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use wasmtime::{Caller, Engine, Extern, FuncType, Linker, Val, ValType};

use super::limits::{Output, Stream, bytes};
use crate::languages::WASI_MODULE;

/// A WASI errno (the functions' `i32` result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Errno(pub(super) i32);

pub(super) const SUCCESS: Errno = Errno(0);
pub(super) const EBADF: Errno = Errno(8);
pub(super) const EFAULT: Errno = Errno(21);
pub(super) const EINVAL: Errno = Errno(28);
pub(super) const ENOSYS: Errno = Errno(52);
pub(super) const ENOTCAPABLE: Errno = Errno(76);

/// The most buffers one read or write may name (Linux's `IOV_MAX`), so a
/// call's work is bounded whatever the module passes.
const MAX_IOVECS: u32 = 1024;

/// `filetype::character_device`.
const CHARACTER_DEVICE: u8 = 2;
/// `rights::fd_read` and `rights::fd_write`.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// How an execution ended early: these travel as the error of a host call,
/// which stops the module at once.
#[derive(Debug, thiserror::Error)]
pub(super) enum Ended {
    #[error("exit code {0}")]
    Exit(u32),
    #[error(
        "the module wrote more than {} to {}, the most an execution may write there",
        bytes(*limit),
        stream.name()
    )]
    OutputLimit { stream: Stream, limit: usize },
    #[error("the module called WASI's {0} but exports no memory named \"memory\" to pass data in")]
    NoMemory(&'static str),
}

/// One execution's WASI state.
#[derive(Debug)]
pub(super) struct WasiCtx {
    stdin: Bytes,
    read: usize,
    pub(super) stdout: Output,
    pub(super) stderr: Output,
    rng: SmallRng,
    started: Instant,
}

impl WasiCtx {
    /// `stdin` is the payload; each output stream holds at most
    /// `max_output_bytes`.
    pub(super) fn new(stdin: Bytes, max_output_bytes: usize, seed: u64) -> WasiCtx {
        WasiCtx {
            stdin,
            read: 0,
            stdout: Output::new(max_output_bytes),
            stderr: Output::new(max_output_bytes),
            rng: SmallRng::seed_from_u64(seed),
            started: Instant::now(),
        }
    }
}

/// Store data that holds a [`WasiCtx`].
pub(super) trait WasiView: 'static {
    fn wasi(&mut self) -> &mut WasiCtx;
}

/// The module's linear memory, with checked access.
struct Guest<'a>(&'a mut [u8]);

impl Guest<'_> {
    fn range(&self, ptr: u32, len: u32) -> Result<Range<usize>, Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(EFAULT)?;
        if end > self.0.len() {
            return Err(EFAULT);
        }
        Ok(start..end)
    }

    fn bytes(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let range = self.range(ptr, len)?;
        Ok(&self.0[range])
    }

    fn bytes_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let range = self.range(ptr, len)?;
        Ok(&mut self.0[range])
    }

    #[cfg(test)]
    fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        let mut word = [0; 4];
        word.copy_from_slice(self.bytes(ptr, 4)?);
        Ok(u32::from_le_bytes(word))
    }

    fn write_u32(&mut self, ptr: u32, value: u32) -> Result<(), Errno> {
        self.bytes_mut(ptr, 4)?
            .copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn write_u64(&mut self, ptr: u32, value: u64) -> Result<(), Errno> {
        self.bytes_mut(ptr, 8)?
            .copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// The `(buf, buf_len)` pairs of an iovec array.
    fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
        if count > MAX_IOVECS {
            return Err(EINVAL);
        }
        let array = self.bytes(ptr, count * 8)?;
        Ok(array
            .chunks_exact(8)
            .map(|pair| {
                let (buf, len) = pair.split_at(4);
                (le_u32(buf), le_u32(len))
            })
            .collect())
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

/// Runs `call` on the caller's memory and WASI state.
fn with_guest<T: WasiView, R>(
    caller: &mut Caller<'_, T>,
    function: &'static str,
    call: impl FnOnce(&mut Guest<'_>, &mut WasiCtx) -> R,
) -> wasmtime::Result<R> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::new(Ended::NoMemory(function)));
    };
    let (data, state) = memory.data_and_store_mut(caller);
    Ok(call(&mut Guest(data), state.wasi()))
}

fn errno(result: Result<(), Errno>) -> i32 {
    match result {
        Ok(()) => SUCCESS.0,
        Err(errno) => errno.0,
    }
}

/// Guest `i32`s are unsigned pointers, sizes and descriptors.
fn u(value: i32) -> u32 {
    value as u32
}

/// Links every WASI preview 1 function into `linker`.
pub(super) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    link_arguments(linker)?;
    link_streams(linker)?;
    link_clocks_and_random(linker)?;
    link_denied(linker)?;
    Ok(())
}

/// No arguments and no environment: zero entries each.
fn link_arguments<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    for name in ["args_sizes_get", "environ_sizes_get"] {
        linker.func_wrap(
            WASI_MODULE,
            name,
            move |mut caller: Caller<'_, T>, count: i32, size: i32| {
                with_guest(&mut caller, name, |guest, _| {
                    errno(
                        guest
                            .write_u32(u(count), 0)
                            .and_then(|()| guest.write_u32(u(size), 0)),
                    )
                })
            },
        )?;
    }
    for name in ["args_get", "environ_get"] {
        // Zero entries: nothing to write.
        linker.func_wrap(WASI_MODULE, name, |_: i32, _: i32| SUCCESS.0)?;
    }
    Ok(())
}

/// stdin, stdout, stderr, and nothing else.
fn link_streams<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI_MODULE,
        "fd_read",
        |mut caller: Caller<'_, T>, fd: i32, iovs: i32, count: i32, nread: i32| {
            with_guest(&mut caller, "fd_read", |guest, wasi| {
                errno(fd_read(guest, wasi, u(fd), u(iovs), u(count), u(nread)))
            })
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "fd_write",
        |mut caller: Caller<'_, T>, fd: i32, iovs: i32, count: i32, nwritten: i32| {
            let written = with_guest(&mut caller, "fd_write", |guest, wasi| {
                fd_write(guest, wasi, u(fd), u(iovs), u(count), u(nwritten))
            })?;
            written.map(errno).map_err(wasmtime::Error::new)
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "fd_fdstat_get",
        |mut caller: Caller<'_, T>, fd: i32, stat: i32| {
            with_guest(&mut caller, "fd_fdstat_get", |guest, _| {
                errno(fd_fdstat_get(guest, u(fd), u(stat)))
            })
        },
    )?;
    // No preopened directories: EBADF ends the standard libraries' scan for
    // them (which starts at fd 3), so nothing is ever opened by path.
    linker.func_wrap(WASI_MODULE, "fd_prestat_get", |_: i32, _: i32| EBADF.0)?;
    linker.func_wrap(WASI_MODULE, "fd_close", |fd: i32| {
        if is_stdio(u(fd)) { SUCCESS.0 } else { EBADF.0 }
    })?;
    linker.func_wrap(
        WASI_MODULE,
        "proc_exit",
        |code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(Ended::Exit(u(code)))) },
    )?;
    linker.func_wrap(WASI_MODULE, "sched_yield", || SUCCESS.0)?;
    Ok(())
}

fn is_stdio(fd: u32) -> bool {
    fd <= 2
}

fn fd_read(
    guest: &mut Guest<'_>,
    wasi: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    count: u32,
    nread: u32,
) -> Result<(), Errno> {
    if fd != 0 {
        return Err(EBADF);
    }
    guest.range(nread, 4)?;
    let mut total = 0u32;
    for (buf, len) in guest.iovecs(iovs, count)? {
        let rest = &wasi.stdin[wasi.read..];
        let n = rest.len().min(len as usize);
        guest.bytes_mut(buf, len)?[..n].copy_from_slice(&rest[..n]);
        wasi.read += n;
        // n <= len, a u32; the sum is at most the payload's length.
        total = total.saturating_add(n as u32);
        if n < len as usize {
            break;
        }
    }
    guest.write_u32(nread, total)
}

/// An errno for the module, or the end of the execution (output past its
/// limit).
fn fd_write(
    guest: &mut Guest<'_>,
    wasi: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    count: u32,
    nwritten: u32,
) -> Result<Result<(), Errno>, Ended> {
    let (stream, output) = match fd {
        1 => (Stream::Stdout, &mut wasi.stdout),
        2 => (Stream::Stderr, &mut wasi.stderr),
        _ => return Ok(Err(EBADF)),
    };
    let iovecs = match guest.range(nwritten, 4).and(guest.iovecs(iovs, count)) {
        Ok(iovecs) => iovecs,
        Err(errno) => return Ok(Err(errno)),
    };
    let mut total = 0u32;
    for (buf, len) in iovecs {
        let data = match guest.bytes(buf, len) {
            Ok(data) => data,
            Err(errno) => return Ok(Err(errno)),
        };
        if output.append(data).is_err() {
            let limit = output.limit();
            return Err(Ended::OutputLimit { stream, limit });
        }
        // Bounded by the output limit, itself a usize well within u32 here
        // or saturating if configured larger.
        total = total.saturating_add(len);
    }
    Ok(guest.write_u32(nwritten, total))
}

fn fd_fdstat_get(guest: &mut Guest<'_>, fd: u32, stat: u32) -> Result<(), Errno> {
    let rights = match fd {
        0 => RIGHT_FD_READ,
        1 | 2 => RIGHT_FD_WRITE,
        _ => return Err(EBADF),
    };
    // struct fdstat { filetype: u8, flags: u16 @2, rights_base: u64 @8,
    // rights_inheriting: u64 @16 }: 24 bytes.
    let record = guest.bytes_mut(stat, 24)?;
    record.fill(0);
    record[0] = CHARACTER_DEVICE;
    record[8..16].copy_from_slice(&rights.to_le_bytes());
    Ok(())
}

fn link_clocks_and_random<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI_MODULE,
        "clock_res_get",
        |mut caller: Caller<'_, T>, id: i32, resolution: i32| {
            with_guest(&mut caller, "clock_res_get", |guest, _| {
                errno(clock_id(u(id)).and_then(|_| guest.write_u64(u(resolution), 1)))
            })
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "clock_time_get",
        |mut caller: Caller<'_, T>, id: i32, _precision: i64, time: i32| {
            with_guest(&mut caller, "clock_time_get", |guest, wasi| {
                let now = clock_id(u(id)).map(|clock| clock.now(wasi));
                errno(now.and_then(|now| guest.write_u64(u(time), now)))
            })
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "random_get",
        |mut caller: Caller<'_, T>, buf: i32, len: i32| {
            with_guest(&mut caller, "random_get", |guest, wasi| {
                errno(
                    guest
                        .bytes_mut(u(buf), u(len))
                        .map(|buf| wasi.rng.fill_bytes(buf)),
                )
            })
        },
    )?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Clock {
    Realtime,
    /// Monotonic, and the CPU-time clocks (approximated by the time since
    /// the execution started).
    SinceStart,
}

impl Clock {
    fn now(self, wasi: &WasiCtx) -> u64 {
        let nanos = match self {
            Clock::Realtime => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos()),
            Clock::SinceStart => wasi.started.elapsed().as_nanos(),
        };
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

fn clock_id(id: u32) -> Result<Clock, Errno> {
    match id {
        0 => Ok(Clock::Realtime),
        1..=3 => Ok(Clock::SinceStart),
        _ => Err(EINVAL),
    }
}

/// How a function that does nothing answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denial {
    /// Its first parameter is a descriptor: ENOSYS for stdin, stdout and
    /// stderr (which do not support it), EBADF for any other (none is open).
    Fd,
    /// EBADF whatever the descriptor (no preopened directory has a name).
    BadFd,
    /// ENOTCAPABLE: paths and sockets are never granted.
    NotCapable,
    /// ENOSYS: not supported at all.
    Unsupported,
}

impl Denial {
    fn errno(self, params: &[Val]) -> Errno {
        match self {
            Denial::Fd => match params.first().and_then(Val::i32) {
                Some(fd) if is_stdio(u(fd)) => ENOSYS,
                _ => EBADF,
            },
            Denial::BadFd => EBADF,
            Denial::NotCapable => ENOTCAPABLE,
            Denial::Unsupported => ENOSYS,
        }
    }
}

/// The functions that only answer an errno, with their parameters (`i`:
/// i32, `I`: i64, as the preview 1 ABI lowers them); each returns an i32.
const DENIED: &[(&str, &str, Denial)] = &[
    ("fd_advise", "iIIi", Denial::Fd),
    ("fd_allocate", "iII", Denial::Fd),
    ("fd_datasync", "i", Denial::Fd),
    ("fd_fdstat_set_flags", "ii", Denial::Fd),
    ("fd_fdstat_set_rights", "iII", Denial::Fd),
    ("fd_filestat_get", "ii", Denial::Fd),
    ("fd_filestat_set_size", "iI", Denial::Fd),
    ("fd_filestat_set_times", "iIIi", Denial::Fd),
    ("fd_pread", "iiiIi", Denial::Fd),
    ("fd_prestat_dir_name", "iii", Denial::BadFd),
    ("fd_pwrite", "iiiIi", Denial::Fd),
    ("fd_readdir", "iiiIi", Denial::Fd),
    ("fd_renumber", "ii", Denial::Fd),
    ("fd_seek", "iIii", Denial::Fd),
    ("fd_sync", "i", Denial::Fd),
    ("fd_tell", "ii", Denial::Fd),
    ("path_create_directory", "iii", Denial::NotCapable),
    ("path_filestat_get", "iiiii", Denial::NotCapable),
    ("path_filestat_set_times", "iiiiIIi", Denial::NotCapable),
    ("path_link", "iiiiiii", Denial::NotCapable),
    ("path_open", "iiiiiIIii", Denial::NotCapable),
    ("path_readlink", "iiiiii", Denial::NotCapable),
    ("path_remove_directory", "iii", Denial::NotCapable),
    ("path_rename", "iiiiii", Denial::NotCapable),
    ("path_symlink", "iiiii", Denial::NotCapable),
    ("path_unlink_file", "iii", Denial::NotCapable),
    ("poll_oneoff", "iiii", Denial::Unsupported),
    ("proc_raise", "i", Denial::Unsupported),
    ("sock_accept", "iii", Denial::NotCapable),
    ("sock_recv", "iiiiii", Denial::NotCapable),
    ("sock_send", "iiiii", Denial::NotCapable),
    ("sock_shutdown", "ii", Denial::NotCapable),
];

fn link_denied<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    for &(name, params, denial) in DENIED {
        let ty = signature(&engine, params);
        linker.func_new(WASI_MODULE, name, ty, move |_, params, results| {
            if let Some(result) = results.first_mut() {
                *result = Val::I32(denial.errno(params).0);
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn signature(engine: &Engine, params: &str) -> FuncType {
    let params = params.chars().map(|kind| match kind {
        'I' => ValType::I64,
        _ => ValType::I32,
    });
    FuncType::new(engine, params, [ValType::I32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_of(memory: &mut [u8]) -> Guest<'_> {
        Guest(memory)
    }

    #[test]
    fn out_of_range_pointers_are_efault() {
        let mut memory = vec![0u8; 16];
        let mut guest = guest_of(&mut memory);
        assert_eq!(guest.write_u32(12, 7), Ok(()));
        assert_eq!(guest.write_u32(13, 7), Err(EFAULT));
        assert_eq!(guest.write_u64(u32::MAX, 7), Err(EFAULT));
        assert_eq!(guest.bytes(16, 0).map(<[u8]>::len), Ok(0));
        assert_eq!(guest.bytes(17, 0), Err(EFAULT));
        assert_eq!(guest.read_u32(12), Ok(7));
        assert_eq!(guest.iovecs(0, 3).map(|v| v.len()), Err(EFAULT));
        assert_eq!(guest.iovecs(0, MAX_IOVECS + 1), Err(EINVAL));
        assert_eq!(guest.iovecs(0, u32::MAX), Err(EINVAL));
    }

    #[test]
    fn stdin_is_read_across_buffers_then_at_its_end() {
        let mut memory = vec![0u8; 64];
        let mut wasi = WasiCtx::new(Bytes::from_static(b"hello"), 10, 1);
        let mut guest = guest_of(&mut memory);
        // Two iovecs at 0: (32, 3) and (40, 8); nread at 60.
        guest.write_u32(0, 32).unwrap();
        guest.write_u32(4, 3).unwrap();
        guest.write_u32(8, 40).unwrap();
        guest.write_u32(12, 8).unwrap();
        assert_eq!(fd_read(&mut guest, &mut wasi, 0, 0, 2, 60), Ok(()));
        assert_eq!(guest.read_u32(60), Ok(5));
        assert_eq!(guest.bytes(32, 3), Ok(&b"hel"[..]));
        assert_eq!(guest.bytes(40, 2), Ok(&b"lo"[..]));
        assert_eq!(fd_read(&mut guest, &mut wasi, 0, 0, 2, 60), Ok(()));
        assert_eq!(guest.read_u32(60), Ok(0));
        assert_eq!(fd_read(&mut guest, &mut wasi, 1, 0, 2, 60), Err(EBADF));
        assert_eq!(fd_read(&mut guest, &mut wasi, 0, 0, 2, 62), Err(EFAULT));
    }

    #[test]
    fn writes_go_to_their_stream_until_its_limit() {
        let mut memory = vec![0u8; 64];
        memory[32..38].copy_from_slice(b"abcdef");
        let mut wasi = WasiCtx::new(Bytes::new(), 8, 1);
        let mut guest = guest_of(&mut memory);
        guest.write_u32(0, 32).unwrap();
        guest.write_u32(4, 6).unwrap();
        assert!(matches!(
            fd_write(&mut guest, &mut wasi, 1, 0, 1, 60),
            Ok(Ok(()))
        ));
        assert_eq!(guest.read_u32(60), Ok(6));
        assert!(matches!(
            fd_write(&mut guest, &mut wasi, 2, 0, 1, 60),
            Ok(Ok(()))
        ));
        assert!(matches!(
            fd_write(&mut guest, &mut wasi, 1, 0, 1, 60),
            Err(Ended::OutputLimit {
                stream: Stream::Stdout,
                limit: 8
            })
        ));
        assert_eq!(wasi.stdout.as_slice(), b"abcdef");
        assert_eq!(wasi.stderr.as_slice(), b"abcdef");
        assert!(matches!(
            fd_write(&mut guest, &mut wasi, 3, 0, 1, 60),
            Ok(Err(EBADF))
        ));
        guest.write_u32(4, 1000).unwrap();
        assert!(matches!(
            fd_write(&mut guest, &mut wasi, 2, 0, 1, 60),
            Ok(Err(EFAULT))
        ));
    }

    #[test]
    fn stdio_is_a_character_device_and_nothing_else_is_open() {
        let mut memory = vec![0xffu8; 32];
        let mut guest = guest_of(&mut memory);
        assert_eq!(fd_fdstat_get(&mut guest, 1, 0), Ok(()));
        assert_eq!(guest.bytes(0, 1), Ok(&[CHARACTER_DEVICE][..]));
        assert_eq!(guest.bytes(8, 8), Ok(&RIGHT_FD_WRITE.to_le_bytes()[..]));
        assert_eq!(fd_fdstat_get(&mut guest, 3, 0), Err(EBADF));
        assert_eq!(fd_fdstat_get(&mut guest, 0, 9), Err(EFAULT));
    }

    #[test]
    fn denied_calls_answer_by_kind() {
        assert_eq!(Denial::Fd.errno(&[Val::I32(1)]), ENOSYS);
        assert_eq!(Denial::Fd.errno(&[Val::I32(3)]), EBADF);
        assert_eq!(Denial::Fd.errno(&[Val::I32(-1)]), EBADF);
        assert_eq!(Denial::NotCapable.errno(&[]), ENOTCAPABLE);
    }
}

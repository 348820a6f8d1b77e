//! The launcher, `taskforge sandbox-exec SPEC`: the process the worker spawns
//! for one sandbox.
//!
//! 1. Blocks SIGTERM, SIGINT and SIGCHLD (it waits for them below).
//! 2. Creates the namespaces: as root, mount, PID, network, IPC and UTS (the
//!    init builds its filesystem with root's rights); otherwise all of those
//!    inside a user namespace that maps its user to root, so the init has
//!    the rights it needs there. Either way the init then drops them in a
//!    user namespace of its own (see [`super::init`]).
//! 3. Starts the init (`sandbox-init`), which becomes PID 1 of the new PID
//!    namespace, and hands its own stdout (the result pipe) to it alone. As
//!    root, it then becomes `nobody`, the user the interpreter runs as.
//! 4. One loop (a process that made a PID namespace may not start threads)
//!    waits on a signalfd and on its stdin. The worker's first line
//!    ([`RequestLimits`]) is applied to the interpreter, which is up by then
//!    (the worker only writes once the interpreter said it is ready), and the
//!    rest of the request is passed on to it.
//! 5. SIGTERM kills the init with SIGKILL, which makes the kernel kill
//!    everything in its PID namespace; the launcher exits once the init is
//!    reaped, which the kernel allows only after the whole namespace is
//!    gone. Its exit status is the init's (128 + signal if it was killed).

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Pid, Uid, getegid, geteuid, setgroups, setresgid, setresuid};
use rustix::process::{Resource, Rlimit, prlimit};

use super::{HOST_NOBODY, Limits, RequestLimits, Spec, init};

pub const SUBCOMMAND: &str = "sandbox-exec";

/// The status the launcher exits with when the sandbox could not be made.
pub const SETUP_FAILED: i32 = 125;

/// The longest first line the worker may send.
const MAX_HEADER: u64 = 4096;

/// Runs the launcher; returns the exit status.
pub fn main(spec_arg: &str) -> i32 {
    match run(spec_arg) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sandbox: {error}");
            SETUP_FAILED
        }
    }
}

fn run(spec_arg: &str) -> Result<i32, String> {
    let spec = Spec::from_arg(spec_arg)?;
    let mut waited = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        waited.add(signal);
    }
    waited
        .thread_block()
        .map_err(|error| format!("could not block signals: {error}"))?;
    // Asked before any user namespace, where everyone is root.
    let host_root = geteuid().is_root();
    if spec.isolate {
        enter_namespaces(host_root)?;
    }

    let program =
        std::env::current_exe().map_err(|error| format!("cannot find this program: {error}"))?;
    let mut command = Command::new(program);
    command
        .arg(init::SUBCOMMAND)
        .arg(spec_arg)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if !spec.isolate {
        // Unsandboxed: a process group of its own is what gets killed.
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|error| format!("could not start the sandbox's init: {error}"))?;
    let pid = Pid::from_raw(
        i32::try_from(child.id()).map_err(|_| "the init's process id is out of range")?,
    );
    if spec.isolate && host_root {
        become_nobody()?;
    }
    // Only the interpreter keeps the result pipe open: its end is EOF.
    let devnull = std::fs::File::open("/dev/null").map_err(|error| error.to_string())?;
    nix::unistd::dup2_stdout(devnull).map_err(|error| format!("cannot close stdout: {error}"))?;

    let signals = SignalFd::with_flags(&waited, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|error| format!("cannot wait for signals: {error}"))?;
    let mut request = Request::Header(Vec::new());
    let mut input = child.stdin.take();
    let stdin = std::io::stdin();
    // Why the init may die of SIGKILL: we killed it, or it reached its CPU
    // limit (as PID 1 of its namespace, it ignores the SIGXCPU before that).
    let mut killed = false;
    let mut cpu_limit = None;
    let mut cpu_used_ticks = 0;
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if !matches!(request, Request::Delivered) {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => return Err(format!("waiting failed: {error}")),
        }
        let readable = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
        let (signalled, requested) = (readable(&fds[0]), fds.get(1).is_some_and(readable));
        drop(fds);
        if signalled {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo == Signal::SIGCHLD as u32 {
                    cpu_used_ticks = info.ssi_utime.saturating_add(info.ssi_stime);
                } else {
                    killed = true;
                    stop(pid, spec.isolate);
                }
            }
            if let Some(code) = exited(&mut child)? {
                let out_of_cpu = cpu_limit.is_some_and(|limit: u64| {
                    cpu_used_ticks >= limit.saturating_mul(clock_ticks_per_second())
                });
                return Ok(match code {
                    KILLED if !killed && out_of_cpu => 128 + Signal::SIGXCPU as i32,
                    code => code,
                });
            }
        }
        if requested {
            match request.step(stdin.as_fd(), &mut input, pid, spec.limits) {
                Ok(Some(applied)) => cpu_limit = applied.cpu_seconds,
                Ok(None) => {}
                Err(error) => {
                    eprintln!("sandbox: {error}");
                    killed = true;
                    stop(pid, spec.isolate);
                    request = Request::Delivered;
                }
            }
        }
    }
}

/// Where the request stands.
enum Request {
    /// Reading the first line (the limits).
    Header(Vec<u8>),
    /// Passing the rest on to the interpreter.
    Body,
    /// All passed on (or given up): stdin is no longer watched.
    Delivered,
}

impl Request {
    /// Reads what stdin has and acts on it; returns the limits once it
    /// applied them. EOF before a first line means the worker let the
    /// sandbox go unused: an error, so it is killed.
    fn step(
        &mut self,
        stdin: BorrowedFd<'_>,
        input: &mut Option<ChildStdin>,
        pid: Pid,
        limits: Limits,
    ) -> Result<Option<Limits>, String> {
        let mut chunk = [0u8; 64 << 10];
        // Unbuffered: what poll says is readable is all there is.
        let n = nix::unistd::read(stdin, &mut chunk)
            .map_err(|error| format!("cannot read the request: {error}"))?;
        let data = &chunk[..n];
        if let Request::Header(header) = self {
            if n == 0 {
                return Err("no request came".into());
            }
            let Some(end) = data.iter().position(|&b| b == b'\n') else {
                header.extend_from_slice(data);
                if header.len() as u64 > MAX_HEADER {
                    return Err("the request's first line is too long".into());
                }
                return Ok(None);
            };
            header.extend_from_slice(&data[..end]);
            let wanted: RequestLimits = serde_json::from_slice(header)
                .map_err(|error| format!("bad request limits: {error}"))?;
            let applied = limits.with(wanted);
            apply(pid, &applied)?;
            *self = Request::Body;
            self.pass_on(&data[end + 1..], input)?;
            return Ok(Some(applied));
        }
        if n == 0 {
            // The whole request is in: the interpreter reads to its end.
            input.take();
            *self = Request::Delivered;
            return Ok(None);
        }
        self.pass_on(data, input)?;
        Ok(None)
    }

    fn pass_on(&self, data: &[u8], input: &mut Option<ChildStdin>) -> Result<(), String> {
        if let Some(pipe) = input {
            match pipe.write_all(data) {
                Ok(()) => {}
                // The interpreter is gone; its exit says why.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                    input.take();
                }
                Err(error) => return Err(format!("cannot pass the request on: {error}")),
            }
        }
        Ok(())
    }
}

/// Namespaces for the init. An unprivileged user can only make the others
/// inside a user namespace it owns; root makes them directly, so the init can
/// still read what root can while it builds the filesystem.
fn enter_namespaces(host_root: bool) -> Result<(), String> {
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if host_root {
        return unshare(namespaces).map_err(|error| format!("cannot create namespaces: {error}"));
    }
    let (uid, gid) = (geteuid(), getegid());
    unshare(namespaces | CloneFlags::CLONE_NEWUSER)
        .map_err(|error| format!("cannot create a user namespace: {error}"))?;
    map_ids(0, uid.as_raw(), gid.as_raw())
}

/// Maps `inside` in this process's new user namespace to `uid`/`gid`
/// outside it: one id, its own, the only mapping an unprivileged process
/// may write.
pub(super) fn map_ids(inside: u32, uid: u32, gid: u32) -> Result<(), String> {
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|error| format!("cannot write {file}: {error}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{inside} {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("{inside} {gid} 1\n"))
}

/// Root's work is done once the init runs. As the same user as the
/// interpreter, the launcher may still set its limits and kill it, which
/// root without CAP_SYS_RESOURCE (as in many containers) could not.
fn become_nobody() -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(HOST_NOBODY), Gid::from_raw(HOST_NOBODY));
    setgroups(&[]).map_err(|error| format!("cannot drop groups: {error}"))?;
    setresgid(gid, gid, gid).map_err(|error| format!("cannot become group nobody: {error}"))?;
    setresuid(uid, uid, uid).map_err(|error| format!("cannot become nobody: {error}"))
}

/// Kills everything in the sandbox.
fn stop(pid: Pid, isolate: bool) {
    // The init is PID 1 of its namespace: its death takes the rest with it.
    let _ = if isolate {
        kill(pid, Signal::SIGKILL)
    } else {
        killpg(pid, Signal::SIGKILL)
    };
}

/// The exit status of a process killed by SIGKILL, as `exited` reports it.
const KILLED: i32 = 128 + Signal::SIGKILL as i32;

/// CPU times in signal information are in these ticks.
fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .unwrap_or(100)
}

fn exited(child: &mut Child) -> Result<Option<i32>, String> {
    let status = child
        .try_wait()
        .map_err(|error| format!("cannot wait for the init: {error}"))?;
    Ok(status.map(|status| {
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }))
}

impl Limits {
    /// These limits, lowered where this execution asks for less.
    pub fn with(self, request: RequestLimits) -> Limits {
        let lower = |base: Option<u64>, wanted: Option<u64>| match (base, wanted) {
            (Some(base), Some(wanted)) => Some(base.min(wanted)),
            (base, wanted) => base.or(wanted),
        };
        Limits {
            cpu_seconds: lower(self.cpu_seconds, request.cpu_seconds),
            address_space_bytes: lower(self.address_space_bytes, request.address_space_bytes),
            ..self
        }
    }
}

/// Sets each limit on `pid` as its soft and hard limit.
fn apply(pid: Pid, limits: &Limits) -> Result<(), String> {
    let target = rustix::process::Pid::from_raw(pid.as_raw());
    let each = [
        (Resource::As, limits.address_space_bytes, "address space"),
        (Resource::Cpu, limits.cpu_seconds, "CPU time"),
        (Resource::Nofile, limits.open_files, "open files"),
        (Resource::Nproc, limits.processes, "processes"),
        (Resource::Fsize, limits.file_size_bytes, "file size"),
    ];
    for (resource, limit, name) in each {
        let Some(limit) = limit else { continue };
        // CPU time: SIGXCPU at the soft limit says why it ended; SIGKILL a
        // second later if the process ignores that.
        let hard = match resource {
            Resource::Cpu => limit.saturating_add(1),
            _ => limit,
        };
        prlimit(
            target,
            resource,
            Rlimit {
                current: Some(limit),
                maximum: Some(hard),
            },
        )
        .map_err(|error| format!("cannot limit {name} to {limit}: {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_can_only_lower_the_limits() {
        let base = Limits {
            cpu_seconds: Some(10),
            address_space_bytes: Some(512 << 20),
            processes: Some(64),
            ..Limits::default()
        };
        let lowered = base.with(RequestLimits {
            cpu_seconds: Some(2),
            address_space_bytes: Some(1 << 40),
        });
        assert_eq!(lowered.cpu_seconds, Some(2));
        assert_eq!(lowered.address_space_bytes, Some(512 << 20));
        assert_eq!(lowered.processes, Some(64));
        let unset = Limits::default().with(RequestLimits {
            cpu_seconds: Some(3),
            address_space_bytes: None,
        });
        assert_eq!(unset.cpu_seconds, Some(3));
        assert_eq!(unset.address_space_bytes, None);
    }
}

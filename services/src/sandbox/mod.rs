//! Throwaway sandboxes for users' interpreted code (Python, JavaScript).
//!
//! Each sandbox is two processes of our own binary, then the interpreter:
//! - the **launcher** (`taskforge sandbox-exec SPEC`, [`launcher`]) is what
//!   the worker spawns and talks to. It creates the namespaces, starts the
//!   init below as PID 1 of a new PID namespace, applies the resource limits
//!   to it, forwards the request, and reports its exit. A SIGTERM from the
//!   worker makes it SIGKILL the init and exit only once the kernel has torn
//!   the whole PID namespace down, so "stopped" means "nothing left running".
//! - the **init** (`taskforge sandbox-init SPEC`, [`init`]) builds the root
//!   filesystem (a tmpfs with read-only binds of what the interpreter needs, a
//!   size-capped `/tmp`, a fresh `/proc`), drops to an unprivileged user in a
//!   user namespace, and execs the interpreter.
//!
//! Both are small, single-threaded programs (no async runtime), so the
//! namespace calls that need a single-threaded caller are sound, and no
//! `unsafe` code is needed: processes are started with `std::process`.
//!
//! The interpreter's descriptors: 0 = the request (code and event, from the
//! launcher), 1 and 2 = the log pipe (what the function prints), 3 = the
//! result pipe (read by the worker).

pub mod init;
pub mod launcher;
mod mounts;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// The user and group the function runs as, on the host, when the worker is
/// root (`nobody`). An unprivileged worker's functions run as its own user.
pub const HOST_NOBODY: u32 = 65534;
/// The user and group the function sees itself as, inside its namespace.
pub const SANDBOX_ID: u32 = 1000;

/// Everything the launcher and the init need to know, passed on their
/// command line as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The interpreter, an absolute path.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Host paths the interpreter needs, bound read-only at the same place.
    /// Symlinks (`/bin -> usr/bin`) are recreated rather than bound.
    pub read_only: Vec<PathBuf>,
    /// Size of the writable `/tmp` (a tmpfs), in bytes.
    pub tmp_bytes: u64,
    pub limits: Limits,
    /// Namespaces and an unprivileged user (the default), or only resource
    /// limits and a process group (`--allow-unsandboxed`).
    pub isolate: bool,
}

/// Resource limits (`setrlimit`), as both soft and hard limit. `None` leaves
/// one as inherited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub address_space_bytes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub open_files: Option<u64>,
    /// Processes and threads of the sandbox's user.
    pub processes: Option<u64>,
    pub file_size_bytes: Option<u64>,
}

impl Spec {
    /// Checks what a malformed or hostile spec could misuse.
    pub fn validate(&self) -> Result<(), String> {
        if !self.program.is_absolute() {
            return Err(format!(
                "program {:?} is not an absolute path",
                self.program
            ));
        }
        for path in &self.read_only {
            if !path.is_absolute() || path == Path::new("/") {
                return Err(format!(
                    "read-only bind {path:?} is not an absolute path below /"
                ));
            }
        }
        if self.tmp_bytes == 0 {
            return Err("the sandbox's /tmp needs a size above 0".into());
        }
        Ok(())
    }

    pub fn to_arg(&self) -> String {
        serde_json::to_string(self).expect("a spec is plain data")
    }

    pub fn from_arg(arg: &str) -> Result<Spec, String> {
        let spec: Spec =
            serde_json::from_str(arg).map_err(|error| format!("bad sandbox spec: {error}"))?;
        spec.validate()?;
        Ok(spec)
    }
}

/// The first line the worker writes to a launcher: this execution's limits,
/// applied to the waiting interpreter before it sees any of the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimits {
    pub cpu_seconds: Option<u64>,
    pub address_space_bytes: Option<u64>,
}

/// A started sandbox, seen from the worker. Dropping it before it exited
/// asks the launcher to kill everything in it (SIGTERM to the launcher,
/// SIGKILL to the sandbox's PID namespace).
#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

impl Sandbox {
    /// Starts `launcher sandbox-exec SPEC`. `launcher` is this program (or,
    /// in tests, the `taskforge` binary).
    pub fn spawn(launcher: &Path, spec: &Spec) -> std::io::Result<Sandbox> {
        let mut child = Command::new(launcher)
            .arg(launcher::SUBCOMMAND)
            .arg(spec.to_arg())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Sandbox {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
        })
    }

    /// The launcher's process id (on the host).
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the launcher to exit: the sandbox's processes are all gone.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Kills the sandbox and waits until nothing of it runs.
    pub async fn kill(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.terminate();
        self.child.wait().await
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // tokio reaps the launcher in the background once it exits.
        self.terminate();
    }
}

/// Runs the sandbox's own processes when this program was started as one
/// (`PROGRAM sandbox-exec SPEC` or `PROGRAM sandbox-init SPEC`): call first
/// thing in `main`, before any thread or runtime starts, in every binary
/// that runs workers, and exit with the status it returns.
pub fn run_if_sandbox_process() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    let (Some(subcommand), Some(spec), None) = (args.next(), args.next(), args.next()) else {
        return None;
    };
    let spec = spec.to_str()?;
    match subcommand.to_str()? {
        launcher::SUBCOMMAND => Some(launcher::main(spec)),
        init::SUBCOMMAND => Some(init::main(spec)),
        _ => None,
    }
}

/// How a sandbox's launcher ended, in words.
pub fn exit_status_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 => signal_text(code - 128),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => signal_text(signal),
        (None, None) => "ended".to_string(),
    }
}

fn signal_text(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(nix::sys::signal::Signal::SIGXCPU) => "killed: CPU time limit reached".to_string(),
        Ok(nix::sys::signal::Signal::SIGXFSZ) => "killed: file size limit reached".to_string(),
        Ok(signal) => format!("killed by {signal}"),
        Err(_) => format!("killed by signal {signal}"),
    }
}

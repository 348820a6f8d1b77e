//! The init, `taskforge sandbox-init SPEC`: PID 1 of the sandbox's PID
//! namespace until it execs the interpreter.
//!
//! In order: build the root filesystem ([`super::mounts`]); become the
//! unprivileged sandbox user in a user namespace; forbid gaining privileges
//! (`no_new_privs`: setuid binaries and file capabilities do nothing); point
//! descriptor 3 at the result pipe and 1 at the log pipe; exec the
//! interpreter with an empty environment but for a fixed `PATH`.

use std::convert::Infallible;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid, geteuid, setgroups, setresgid, setresuid};

use super::{HOST_NOBODY, SANDBOX_ID, Spec, launcher, mounts};

pub const SUBCOMMAND: &str = "sandbox-init";

/// The descriptor the interpreter writes its result to.
pub const RESULT_FD: i32 = 3;

/// The only environment the interpreter gets.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs the init; returns only if it failed (the exit status).
pub fn main(spec_arg: &str) -> i32 {
    match run(spec_arg) {
        Ok(never) => match never {},
        Err(error) => {
            eprintln!("sandbox: {error}");
            launcher::SETUP_FAILED
        }
    }
}

fn run(spec_arg: &str) -> Result<Infallible, String> {
    let spec = Spec::from_arg(spec_arg)?;
    SigSet::all()
        .thread_unblock()
        .map_err(|error| format!("cannot unblock signals: {error}"))?;
    let workdir = if spec.isolate {
        mounts::build(&spec)?;
        become_sandbox_user()?;
        "/tmp"
    } else {
        "/"
    };
    prctl::set_no_new_privs().map_err(|error| format!("cannot set no_new_privs: {error}"))?;
    std::env::set_current_dir(workdir)
        .map_err(|error| format!("cannot enter {workdir}: {error}"))?;
    redirect_descriptors()?;
    // If the launcher dies, so does the sandbox. Set last: changing
    // credentials clears it.
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|error| format!("cannot set the parent-death signal: {error}"))?;
    let error = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .exec();
    Err(format!("cannot start {}: {error}", spec.program.display()))
}

/// Drops every privilege: makes a user namespace of its own in which the
/// only user is [`SANDBOX_ID`], mapped to `nobody` on the host when the
/// worker is root, else to the worker's own user (root of the launcher's
/// user namespace). The interpreter is started by that non-zero user id, so
/// it starts without capabilities, and holds none over any namespace but
/// that empty one.
fn become_sandbox_user() -> Result<(), String> {
    let outer = if host_root()? {
        let nobody = (Uid::from_raw(HOST_NOBODY), Gid::from_raw(HOST_NOBODY));
        setgroups(&[]).map_err(|error| format!("cannot drop groups: {error}"))?;
        setresgid(nobody.1, nobody.1, nobody.1)
            .map_err(|error| format!("cannot become group nobody: {error}"))?;
        setresuid(nobody.0, nobody.0, nobody.0)
            .map_err(|error| format!("cannot become nobody: {error}"))?;
        // A process that changed its user is not dumpable, which would make
        // its own /proc/self/uid_map unwritable.
        prctl::set_dumpable(true).map_err(|error| format!("cannot set dumpable: {error}"))?;
        HOST_NOBODY
    } else {
        0
    };
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|error| format!("cannot create a user namespace: {error}"))?;
    launcher::map_ids(SANDBOX_ID, outer, outer)?;
    let (uid, gid) = (Uid::from_raw(SANDBOX_ID), Gid::from_raw(SANDBOX_ID));
    setresgid(gid, gid, gid)
        .map_err(|error| format!("cannot become the sandbox group: {error}"))?;
    setresuid(uid, uid, uid).map_err(|error| format!("cannot become the sandbox user: {error}"))?;
    Ok(())
}

/// Whether this is the host's root (in the initial user namespace, whose
/// map is the identity over all ids) rather than root of the launcher's.
fn host_root() -> Result<bool, String> {
    if !geteuid().is_root() {
        return Err("the init does not run as root of its namespaces".into());
    }
    let map = std::fs::read_to_string("/proc/self/uid_map")
        .map_err(|error| format!("cannot read /proc/self/uid_map: {error}"))?;
    Ok(map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// Descriptor 3 = the result pipe (our stdout); 1 = the log pipe (stderr).
fn redirect_descriptors() -> Result<(), String> {
    let stdout = std::io::stdout();
    let duplicated = fcntl(stdout.as_fd(), FcntlArg::F_DUPFD(RESULT_FD))
        .map_err(|error| format!("cannot duplicate the result pipe: {error}"))?;
    if duplicated != RESULT_FD {
        return Err(format!(
            "descriptor {RESULT_FD} was already open (got {duplicated})"
        ));
    }
    nix::unistd::dup2_stdout(std::io::stderr())
        .map_err(|error| format!("cannot point stdout at the log: {error}"))
}

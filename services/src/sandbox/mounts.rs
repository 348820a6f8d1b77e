//! The sandbox's root filesystem, built by the init in its own mount
//! namespace: a small tmpfs holding
//! - read-only binds of the host paths the interpreter needs (`/usr`, the
//!   libraries, the interpreter's own prefix), at the same places;
//! - `/dev` with only `null`, `zero`, `full`, `random` and `urandom`;
//! - `/etc` with a `passwd` and `group` naming the sandbox user, and the
//!   dynamic loader's cache (bound read-only when the spec lists it);
//! - a writable, size-capped tmpfs on `/tmp` (the working directory);
//! - a fresh `/proc` that shows only the sandbox's own processes.
//!
//! Then `pivot_root` into it, detach the host's tree, and make `/` read-only.
//! Nothing else of the host (the worker's data, its sockets, home
//! directories) is reachable from inside.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{pivot_root, sethostname};

use super::{SANDBOX_ID, Spec};

/// Where the new root may be assembled: the first of these that exists and
/// holds nothing the sandbox binds (it is covered only inside the sandbox's
/// own mount namespace, and the host's tree is detached afterwards).
const STAGING: [&str; 5] = ["/mnt", "/media", "/srv", "/opt", "/tmp"];

const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
const OLD_ROOT: &str = ".old-root";

pub fn build(spec: &Spec) -> Result<(), String> {
    let root = staging(spec)?;
    // Nothing mounted here may leak back to the host's namespace.
    mount_at(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    mount_at(
        Some(Path::new("tmpfs")),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=4m,mode=0755"),
    )?;
    devices(root)?;
    etc(root)?;
    let tmp = root.join("tmp");
    create_dir(&tmp)?;
    mount_at(
        Some(Path::new("tmpfs")),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("size={},mode=1777", spec.tmp_bytes)),
    )?;
    // After /tmp's tmpfs, so a bind below /tmp is not covered by it.
    for path in &spec.read_only {
        bind_read_only(root, path)?;
    }
    let proc = root.join("proc");
    create_dir(&proc)?;
    mount_at(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    sethostname("sandbox").map_err(|error| format!("cannot set the host name: {error}"))?;

    let old = root.join(OLD_ROOT);
    create_dir(&old)?;
    pivot_root(root, &old).map_err(|error| format!("cannot pivot into the new root: {error}"))?;
    std::env::set_current_dir("/").map_err(|error| format!("cannot enter /: {error}"))?;
    let old = Path::new("/").join(OLD_ROOT);
    umount2(&old, MntFlags::MNT_DETACH)
        .map_err(|error| format!("cannot detach the host's tree: {error}"))?;
    std::fs::remove_dir(&old)
        .map_err(|error| format!("cannot remove {}: {error}", old.display()))?;
    mount_at(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None,
    )
}

/// Binds `path` read-only at the same place under `root`. A missing path is
/// skipped (not every system has `/lib64`); a symlink is recreated, so
/// `/bin -> usr/bin` resolves inside as it does outside.
fn bind_read_only(root: &Path, path: &Path) -> Result<(), String> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let target = inside(root, path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    if metadata.file_type().is_symlink() {
        let link = std::fs::read_link(path)
            .map_err(|error| format!("cannot read the link {}: {error}", path.display()))?;
        return std::os::unix::fs::symlink(&link, &target)
            .map_err(|error| format!("cannot link {}: {error}", target.display()));
    }
    if metadata.is_dir() {
        create_dir(&target)?;
    } else {
        create_file(&target)?;
    }
    mount_at(
        Some(path),
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // A bind mount ignores MS_RDONLY until remounted. Keep the flags the
    // host's mount has: in a user namespace they are locked, and dropping
    // one would be refused.
    let kept = statvfs(path)
        .map(|stat| locked_flags(stat.flags()))
        .map_err(|error| format!("cannot stat {}: {error}", path.display()))?;
    mount_at(
        None,
        &target,
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | kept,
        None,
    )
}

fn locked_flags(flags: FsFlags) -> MsFlags {
    let mut kept = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(fs) {
            kept |= ms;
        }
    }
    kept
}

fn devices(root: &Path) -> Result<(), String> {
    let dev = root.join("dev");
    create_dir(&dev)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        let target = dev.join(name);
        create_file(&target)?;
        mount_at(Some(&host), &target, None, MsFlags::MS_BIND, None)?;
    }
    for (name, link) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(link, dev.join(name))
            .map_err(|error| format!("cannot link /dev/{name}: {error}"))?;
    }
    Ok(())
}

fn etc(root: &Path) -> Result<(), String> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(|error| format!("cannot create /etc: {error}"))?;
    let id = SANDBOX_ID;
    for (name, text) in [
        (
            "passwd",
            format!("sandbox:x:{id}:{id}:sandbox:/tmp:/bin/false\n"),
        ),
        ("group", format!("sandbox:x:{id}:\n")),
        ("hostname", "sandbox\n".to_string()),
        ("hosts", "127.0.0.1 localhost sandbox\n".to_string()),
    ] {
        std::fs::write(etc.join(name), text)
            .map_err(|error| format!("cannot write /etc/{name}: {error}"))?;
    }
    Ok(())
}

fn staging(spec: &Spec) -> Result<&'static Path, String> {
    STAGING
        .iter()
        .map(Path::new)
        .find(|dir| dir.is_dir() && !spec.read_only.iter().any(|path| path.starts_with(dir)))
        .ok_or_else(|| {
            format!("no directory to build the root in: {STAGING:?} are all missing or bound")
        })
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn create_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))
}

fn create_file(path: &Path) -> Result<(), String> {
    std::fs::File::create(path)
        .map(drop)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))
}

fn mount_at(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|error| {
        let source = source.map_or_else(|| "-".to_string(), |s| s.display().to_string());
        format!("cannot mount {source} on {}: {error}", target.display())
    })
}

//! FUSE mounts inside a sandbox, performed by the node on the sandbox's
//! behalf (docs/fuse.md).
//!
//! The sandbox's seccomp filter sends `mount` and `umount2` to a listener
//! (`SECCOMP_RET_USER_NOTIF`) instead of refusing them; PID 1 hands that
//! listener out before it executes envd, and the driver serves it on one
//! thread per sandbox. A call is performed only if it is a FUSE mount (or
//! the unmount of one) asked for by a process whose effective uid is 0 (root,
//! or the setuid `fusermount3` acting for a user after its own checks), with
//! a `/dev/fuse` descriptor of the caller's; the new mount always gets
//! `nosuid` and `nodev`. Everything else gets `EPERM`, as before.
//!
//! The call is carried out on a short-lived thread that joins the sandbox's
//! mount namespace and takes the caller's root and working directory, so
//! paths resolve exactly as the caller sees them and never reach the host.
//! A mount target is opened once and mounted on through its descriptor; an
//! unmount target is looked up from its directory, held open, and its last
//! component is never followed. Calls are served one at a time, so no
//! mount changes between a call's checks and its action, and a path swapped
//! meanwhile changes nothing.

use super::mountinfo;
use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sched::{setns, unshare, CloneFlags},
    sys::stat::Mode,
};
use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// FUSE mounts one sandbox may hold.
const MAX_MOUNTS: usize = 32;
/// Longest path, file system type or option string read from a caller.
const MAX_STRING: usize = 4096;
/// `/dev/fuse` is character device 10:229.
const FUSE_DEV: (u64, u64) = (10, 229);
/// Mount flags a FUSE mount may carry; `MS_NOSUID | MS_NODEV` are added.
const ALLOWED_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_SYNCHRONOUS
    | libc::MS_DIRSYNC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_SILENT
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME
    | libc::MS_LAZYTIME;
/// `umount2` flags passed on: force, detach, no-follow.
const ALLOWED_UMOUNT: u64 = (libc::MNT_FORCE | libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) as u64;

/// Serves sandbox `id`'s seccomp listener on a thread of its own until the
/// sandbox's last process is gone. Without it (the thread could not start,
/// or the node restarted), `mount` in the sandbox answers `ENOSYS`.
pub(super) fn supervise(id: &str, listener: OwnedFd) {
    let spawned = std::thread::Builder::new().name(format!("fuse-{id}")).spawn(move || serve(&listener));
    if let Err(e) = spawned {
        tracing::error!(%id, "starting the FUSE supervisor: {e}");
    }
}

fn serve(listener: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("polling a seccomp listener: {e}");
                return;
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            // POLLHUP: no process uses the filter any more.
            if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return;
            }
            continue;
        }
        // SAFETY: seccomp_notif is plain old data; the kernel wants it zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV writes one seccomp_notif into `req`.
        if unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            match Errno::last() {
                // The caller was interrupted or died meanwhile.
                Errno::ENOENT | Errno::EINTR => continue,
                e => {
                    tracing::error!("receiving from a seccomp listener: {e}");
                    return;
                }
            }
        }
        // One call at a time: no mount or unmount of the sandbox's can
        // happen between a call's checks and its action (the sandbox has no
        // other way to mount). A call whose path crosses a hung FUSE file
        // system holds up the sandbox's later ones until that daemon ends.
        respond(listener, req.id, handle(listener, &req));
    }
}

fn respond(listener: &OwnedFd, id: u64, result: Result<(), Errno>) {
    let error = match result {
        Ok(()) => 0,
        Err(e) => -(e as i32),
    };
    let mut resp = libc::seccomp_notif_resp { id, val: 0, error, flags: 0 };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp. ENOENT (the caller is
    // gone) needs no answer.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
}

/// Whether notification `id` still waits: its caller has not died (so a
/// pid read before refers to it).
fn id_valid(listener: &OwnedFd, id: u64) -> Result<(), Errno> {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID reads one u64.
    if unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) } < 0 {
        return Err(Errno::ENOENT);
    }
    Ok(())
}

/// The process that made the call, held by descriptors opened while it
/// still waited for the answer.
struct Caller {
    pid: i32,
    pidfd: OwnedFd,
    root: File,
    cwd: File,
    mnt_ns: File,
    ruid: u32,
    euid: u32,
    rgid: u32,
}

impl Caller {
    fn open(listener: &OwnedFd, req: &libc::seccomp_notif) -> Result<Self, Errno> {
        let pid = i32::try_from(req.pid).map_err(|_| Errno::ESRCH)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let raw = RawFd::try_from(raw).ok().filter(|fd| *fd >= 0).ok_or_else(Errno::last)?;
        // SAFETY: a fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let proc = format!("/proc/{pid}");
        let path_fd = |name: &str| -> Result<File, Errno> {
            let fd = open(format!("{proc}/{name}").as_str(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
            Ok(File::from(fd))
        };
        let (root, cwd) = (path_fd("root")?, path_fd("cwd")?);
        let mnt_ns = File::open(format!("{proc}/ns/mnt")).map_err(io_errno)?;
        let status = std::fs::read_to_string(format!("{proc}/status")).map_err(io_errno)?;
        // Everything above belongs to the caller only if it still waits.
        id_valid(listener, req.id)?;
        let ids = |key: &str| -> Result<(u32, u32), Errno> {
            let line = status.lines().find_map(|l| l.strip_prefix(key)).ok_or(Errno::ESRCH)?;
            let mut f = line.split_whitespace().map(str::parse::<u32>);
            match (f.next(), f.next()) {
                (Some(Ok(real)), Some(Ok(effective))) => Ok((real, effective)),
                _ => Err(Errno::ESRCH),
            }
        };
        let (ruid, euid) = ids("Uid:")?;
        let (rgid, _) = ids("Gid:")?;
        Ok(Self { pid, pidfd, root, cwd, mnt_ns, ruid, euid, rgid })
    }

    /// Reads a NUL-terminated string at `addr` in the caller's memory, page
    /// by page (a string may end just before an unmapped page).
    fn string(&self, addr: u64) -> Result<String, Errno> {
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < MAX_STRING {
            let page_left = 4096 - usize::try_from(at % 4096).unwrap_or(0);
            let mut buf = vec![0u8; page_left.min(MAX_STRING - out.len())];
            let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let remote = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: buf.len() };
            // SAFETY: reads into `buf`, which `local` describes; the remote
            // side is only read, by the kernel, with its own checks.
            let got = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
            let got = usize::try_from(got).ok().filter(|n| *n > 0).ok_or(Errno::EFAULT)?;
            if let Some(nul) = buf[..got].iter().position(|b| *b == 0) {
                out.extend_from_slice(&buf[..nul]);
                return String::from_utf8(out).map_err(|_| Errno::EINVAL);
            }
            out.extend_from_slice(&buf[..got]);
            at += got as u64;
        }
        Err(Errno::ENAMETOOLONG)
    }

    /// A copy of the caller's descriptor `fd`, if it is `/dev/fuse`.
    fn fuse_device(&self, fd: i32) -> Result<OwnedFd, Errno> {
        // SAFETY: pidfd_getfd copies a descriptor of the caller into this process.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        let raw = RawFd::try_from(raw).ok().filter(|fd| *fd >= 0).ok_or_else(Errno::last)?;
        // SAFETY: a fresh descriptor we own.
        let dev = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = nix::sys::stat::fstat(&dev)?;
        let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
        if !is_chr || (libc::major(st.st_rdev), libc::minor(st.st_rdev)) != (FUSE_DEV.0 as _, FUSE_DEV.1 as _) {
            return Err(Errno::EINVAL);
        }
        Ok(dev)
    }

    /// Runs `f` on a thread in the caller's mount namespace, root and
    /// working directory; `f` gets the host's `/proc` to reach descriptors
    /// through `thread-self/fd`.
    fn in_sandbox<T: Send + 'static>(
        self,
        f: impl FnOnce(&File) -> Result<T, Errno> + Send + 'static,
    ) -> Result<T, Errno> {
        let host_proc =
            File::from(open("/proc", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?);
        std::thread::spawn(move || -> Result<T, Errno> {
            // This thread alone leaves the host's file system context.
            unshare(CloneFlags::CLONE_FS)?;
            setns(&self.mnt_ns, CloneFlags::CLONE_NEWNS)?;
            nix::unistd::fchdir(&self.root)?;
            nix::unistd::chroot(".")?;
            nix::unistd::fchdir(&self.cwd)?;
            f(&host_proc)
        })
        .join()
        .map_err(|_| Errno::EIO)?
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EPERM, Errno::from_raw)
}

fn handle(listener: &OwnedFd, req: &libc::seccomp_notif) -> Result<(), Errno> {
    let caller = Caller::open(listener, req)?;
    // Mounts, FUSE or not, were root's business before; they stay so.
    if caller.euid != 0 {
        return Err(Errno::EPERM);
    }
    let args = req.data.args;
    match i64::from(req.data.nr) {
        libc::SYS_mount => mount(listener, req.id, caller, args),
        libc::SYS_umount2 => umount(listener, req.id, caller, args),
        _ => Err(Errno::EPERM),
    }
}

/// `mount(source, target, fstype, flags, data)`.
fn mount(listener: &OwnedFd, id: u64, caller: Caller, args: [u64; 6]) -> Result<(), Errno> {
    let [source, target, fstype, flags, data, _] = args;
    // Anything but FUSE is refused as the filter refused it before.
    let fstype = caller.string(fstype).map_err(|_| Errno::EPERM)?;
    if !is_fuse_type(&fstype) {
        return Err(Errno::EPERM);
    }
    let mut flags = flags;
    // The old "magic" in the high half some callers still pass.
    if flags & 0xffff_0000 == 0xc0ed_0000 {
        flags &= !0xffff_0000;
    }
    if flags & !ALLOWED_FLAGS != 0 {
        return Err(Errno::EPERM);
    }
    let source = if source == 0 { fstype.clone() } else { caller.string(source)? };
    let target = caller.string(target)?;
    let options = Options::parse(&caller.string(data)?, caller.ruid, caller.rgid)?;
    id_valid(listener, id)?;
    if mountinfo::fuse_mounts(caller.pid.unsigned_abs()).map_err(io_errno)?.len() >= MAX_MOUNTS {
        return Err(Errno::EMFILE);
    }
    let dev = caller.fuse_device(options.fd)?;
    let data = options.with_fd(dev.as_raw_fd());
    let flags = flags | libc::MS_NOSUID | libc::MS_NODEV;
    caller.in_sandbox(move |host_proc| {
        let target = open(target.as_str(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        // Never over another mount (the masks of /proc and /sys, the
        // devices, envd, the root), nor anywhere in the kernel's own views.
        if is_mount_root(&target)? {
            return Err(Errno::EPERM);
        }
        if matches!(mount_type(host_proc, target.as_raw_fd())?.as_str(), "proc" | "sysfs") {
            return Err(Errno::EPERM);
        }
        nix::unistd::fchdir(host_proc)?;
        let at = format!("thread-self/fd/{}", target.as_raw_fd());
        let c = |s: &str| CString::new(s).map_err(|_| Errno::EINVAL);
        let (source, at, fstype, data) = (c(&source)?, c(&at)?, c(&fstype)?, c(&data)?);
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let rc = unsafe { libc::mount(source.as_ptr(), at.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) };
        drop(dev);
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    })
}

/// `umount2(target, flags)`, of a FUSE mount only.
fn umount(listener: &OwnedFd, id: u64, caller: Caller, args: [u64; 6]) -> Result<(), Errno> {
    let [target, flags, ..] = args;
    if flags & !ALLOWED_UMOUNT != 0 {
        return Err(Errno::EINVAL);
    }
    let target = caller.string(target)?;
    id_valid(listener, id)?;
    // The last component is looked up from its directory, held open: a
    // mount point cannot be renamed or removed, and no mount can change
    // meanwhile, so what is checked is what is unmounted. The final
    // component is never followed (a symlink there could point anywhere
    // once checked).
    let target = target.trim_end_matches('/');
    let (dir, last) = match target.rsplit_once('/') {
        Some(("", last)) => ("/".to_string(), last.to_string()),
        Some((dir, last)) => (dir.to_string(), last.to_string()),
        None => (".".to_string(), target.to_string()),
    };
    if matches!(last.as_str(), "" | "." | "..") {
        return Err(Errno::EINVAL);
    }
    caller.in_sandbox(move |host_proc| {
        let dir = open(dir.as_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        let at = nix::fcntl::openat(
            &dir,
            last.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // Read from the mount table, not asked of the file system: a hung
        // FUSE daemon must not hang its own unmount.
        let fuse = is_fuse_type(&mount_type(host_proc, at.as_raw_fd())?);
        // Holding it would keep the mount busy.
        drop(at);
        if !fuse {
            return Err(Errno::EPERM);
        }
        nix::unistd::fchdir(host_proc)?;
        let path = CString::new(format!("thread-self/fd/{}/{last}", dir.as_raw_fd())).map_err(|_| Errno::EINVAL)?;
        let flags = i32::try_from(flags).map_err(|_| Errno::EINVAL)? | libc::UMOUNT_NOFOLLOW;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    })
}

/// Whether `fd` is the root of a mount. Asks the file system for nothing
/// (`AT_STATX_DONT_SYNC`): the kernel fills the attribute itself.
fn is_mount_root(fd: &OwnedFd) -> Result<bool, Errno> {
    // SAFETY: statx is plain old data; zeroed is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: `empty` is NUL-terminated and `stx` is written by the call only.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & root == 0 {
        return Err(Errno::EPERM);
    }
    Ok(stx.stx_attributes & root != 0)
}

/// `fuse` or `fuse.<subtype>`; not `fuseblk`, which needs a block device.
fn is_fuse_type(fstype: &str) -> bool {
    fstype == "fuse"
        || fstype.strip_prefix("fuse.").is_some_and(|sub| {
            !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        })
}

/// The file system type of the mount descriptor `fd` (of this thread) is on,
/// from `fdinfo` and the mount table of this thread's mount namespace.
fn mount_type(host_proc: &File, fd: RawFd) -> Result<String, Errno> {
    let read = |name: String| -> Result<String, Errno> {
        let f = nix::fcntl::openat(host_proc, name.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        std::io::read_to_string(File::from(f)).map_err(io_errno)
    };
    let info = read(format!("thread-self/fdinfo/{fd}"))?;
    let mnt_id = info.lines().find_map(|l| l.strip_prefix("mnt_id:")).map(str::trim).ok_or(Errno::EINVAL)?;
    let table = read("thread-self/mountinfo".into())?;
    mountinfo::parse(&table).into_iter().find(|m| m.id == mnt_id).map(|m| m.fstype).ok_or(Errno::EINVAL)
}

/// The options of a FUSE mount: only those `fusermount3` and libfuse pass.
struct Options {
    fd: i32,
    rest: Vec<String>,
}

impl Options {
    /// Parses `data` of a caller with real uid `ruid` and gid `rgid`.
    fn parse(data: &str, ruid: u32, rgid: u32) -> Result<Self, Errno> {
        let mut fd = None;
        let mut rest = Vec::new();
        let (mut uid, mut gid, mut rootmode) = (None, None, false);
        for opt in data.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = opt.split_once('=').map_or((opt, None), |(k, v)| (k, Some(v)));
            let number = |radix| value.and_then(|v| u32::from_str_radix(v, radix).ok()).ok_or(Errno::EINVAL);
            match key {
                "fd" => {
                    fd = Some(i32::try_from(number(10)?).map_err(|_| Errno::EINVAL)?);
                    continue;
                }
                "user_id" => uid = Some(number(10)?),
                "group_id" => gid = Some(number(10)?),
                "rootmode" => rootmode = number(8).is_ok(),
                "max_read" => drop(number(10)?),
                "default_permissions" | "allow_other" if value.is_none() => {}
                // Security labels, fuseblk's blksize and anything new.
                _ => return Err(Errno::EINVAL),
            }
            rest.push(opt.to_string());
        }
        let (Some(fd), Some(uid), Some(gid), true) = (fd, uid, gid, rootmode) else {
            return Err(Errno::EINVAL);
        };
        // fusermount3 runs setuid for a user: the mount is that user's.
        if ruid != 0 && (uid != ruid || gid != rgid) {
            return Err(Errno::EPERM);
        }
        Ok(Self { fd, rest })
    }

    fn with_fd(&self, fd: RawFd) -> String {
        std::iter::once(format!("fd={fd}")).chain(self.rest.iter().cloned()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fuse_types_pass() {
        for ok in ["fuse", "fuse.bindfs", "fuse.s3fs", "fuse.sshfs-2"] {
            assert!(is_fuse_type(ok), "{ok}");
        }
        for bad in ["fuseblk", "fuse.", "tmpfs", "overlay", "fuse.a/b", "fusectl", "fuse.a,b"] {
            assert!(!is_fuse_type(bad), "{bad}");
        }
    }

    #[test]
    fn options_are_those_of_fusermount() {
        let o = Options::parse("fd=5,rootmode=40000,user_id=1000,group_id=1000,allow_other", 1000, 1000).unwrap();
        assert_eq!(o.fd, 5);
        assert_eq!(o.with_fd(9), "fd=9,rootmode=40000,user_id=1000,group_id=1000,allow_other");
        // Root may name any owner; a user only itself.
        assert!(Options::parse("fd=5,rootmode=40000,user_id=7,group_id=7", 0, 0).is_ok());
        assert_eq!(Options::parse("fd=5,rootmode=40000,user_id=0,group_id=0", 1000, 1000).err(), Some(Errno::EPERM));
        for bad in [
            "rootmode=40000,user_id=0,group_id=0",
            "fd=5,user_id=0,group_id=0",
            "fd=5,rootmode=40000,user_id=0,group_id=0,context=system_u:object_r:x",
            "fd=5,rootmode=40000,user_id=0,group_id=0,blksize=4096",
            "fd=x,rootmode=40000,user_id=0,group_id=0",
            "fd=5,rootmode=40000,user_id=0,group_id=0,allow_other=1",
        ] {
            assert_eq!(Options::parse(bad, 0, 0).err(), Some(Errno::EINVAL), "{bad}");
        }
    }
}

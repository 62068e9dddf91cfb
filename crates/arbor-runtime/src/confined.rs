//! File operations the host makes in a tree it does not trust: a sandbox's
//! root while its processes run, a build's exported changes, a layer a
//! tenant built.
//!
//! A host path into such a tree is never followed: any component may be a
//! link to the host's `/` that a process inside swaps in between a check and
//! the use (`renameat2(RENAME_EXCHANGE)` wins such races). Instead a
//! [`Dir`] holds a directory open and every lookup under it goes through
//! `openat2(2)` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`:
//! the kernel refuses a link in any component and a step onto another mount
//! (a sandbox's `/proc`, whose `sys/kernel/core_pattern` is the host's) in
//! the same call that finds the file. Files are replaced by a fresh file
//! renamed over the name, so a link, FIFO or device already there is never
//! opened; existing files are opened as `O_PATH` first and reopened only
//! once `fstat` shows a regular file.
//!
//! `nix`'s `openat2` is the system call with typed flags; `libpathrs` does
//! more (and needs a C toolchain to link), which these few operations do not
//! need.

use crate::error::{Error, Result};
use nix::{
    errno::Errno,
    fcntl::{openat2, OFlag, OpenHow, ResolveFlag},
    sys::stat::{fstat, FileStat, Mode, SFlag},
    unistd::UnlinkatFlags,
};
use std::{
    ffi::OsStr,
    io::{Read, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

/// How every name under a [`Dir`] is resolved.
const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_IN_ROOT
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

/// A directory of an untrusted tree, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where it is, for error messages only (never opened again).
    shown: PathBuf,
}

impl Dir {
    /// Opens `path`, a directory the host itself made or names (a mount
    /// point, a sandbox's directory), as the root of an untrusted tree.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::io("opening", path)(e.into()))?;
        Ok(Dir { fd, shown: path.to_path_buf() })
    }

    /// The root directory of process `pid` as it sees it (through the
    /// host's `/proc`): a sandbox's merged root, in its own mount namespace.
    pub fn process_root(pid: u32) -> Result<Dir> {
        let dir = Dir::open(Path::new(&format!("/proc/{pid}/root")))?;
        Ok(Dir { shown: PathBuf::from(format!("the root of process {pid}")), ..dir })
    }

    /// The directory `rel` (components separated by `/`) under this one,
    /// or `None` when there is none reachable without a link or a mount
    /// crossing (absent, a link, not a directory, another mount).
    pub fn subdir(&self, rel: &str) -> Result<Option<Dir>> {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(RESOLVE);
        match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => Ok(Some(Dir { fd, shown: self.shown.join(rel) })),
            Err(e) if unreachable(e) => Ok(None),
            Err(e) => Err(self.err("opening", rel, e)),
        }
    }

    /// The metadata of `rel` itself (a link's own, as `lstat`), or `None`
    /// when it is not reachable without a link or a mount crossing.
    pub fn stat(&self, rel: &str) -> Result<Option<std::fs::Metadata>> {
        let Some(fd) = self.open_path(rel)? else { return Ok(None) };
        // fstat of the O_PATH descriptor: the inode found, not a name.
        std::fs::File::from(fd).metadata().map(Some).map_err(Error::io("inspecting", self.shown.join(rel)))
    }

    /// The content of the regular file `rel`, or `None` when there is no
    /// regular file there (absent, a link, a FIFO, a device, a directory).
    /// Refuses a file larger than `max` bytes.
    pub fn read(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some(path_fd) = self.open_path(rel)? else { return Ok(None) };
        let st = fstat(path_fd.as_fd()).map_err(|e| self.err("inspecting", rel, e))?;
        if !is_regular(&st) {
            return Ok(None);
        }
        let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
        if size > max {
            return Err(self.err("reading", rel, Errno::EFBIG));
        }
        // Reopening the O_PATH descriptor through the host's /proc opens
        // exactly the inode just inspected, not whatever has the name now.
        let file = reopen(&path_fd, OFlag::O_RDONLY).map_err(|e| self.err("opening", rel, e))?;
        let mut content = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| self.err("reading", rel, io_errno(&e)))?;
        if u64::try_from(content.len()).unwrap_or(u64::MAX) > max {
            return Err(self.err("reading", rel, Errno::EFBIG));
        }
        Ok(Some(content))
    }

    /// The target of the link `name` (one component), or `None` when
    /// `name` is not a link.
    pub fn read_link(&self, name: &str) -> Result<Option<PathBuf>> {
        check_name(name)?;
        match nix::fcntl::readlinkat(self.fd.as_fd(), name) {
            Ok(target) => Ok(Some(PathBuf::from(target))),
            Err(Errno::EINVAL | Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.err("reading the link", name, e)),
        }
    }

    /// Makes `name` (one component) a regular file holding `content` with
    /// `mode`, replacing whatever file, link or node had the name (not a
    /// directory) without opening it.
    pub fn replace(&self, name: &str, content: &[u8], mode: u32) -> Result<()> {
        check_name(name)?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = format!(".arbor-{name}.{}.{n}", std::process::id());
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(RESOLVE);
        let created = match openat2(self.fd.as_fd(), tmp.as_str(), how) {
            // A leftover of a process that died mid-way (or a name the
            // tenant planted): it goes, being ours to replace anyway.
            Err(Errno::EEXIST) => {
                self.remove(&tmp)?;
                openat2(self.fd.as_fd(), tmp.as_str(), how)
            }
            other => other,
        };
        let fd = created.map_err(|e| self.err("creating", &tmp, e))?;
        let written = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(content).map_err(|e| io_errno(&e))?;
            // The umask must not decide the file's mode.
            nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
            nix::fcntl::renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), name)
        })();
        if let Err(e) = written {
            let _ = nix::unistd::unlinkat(self.fd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(self.err("writing", name, e));
        }
        Ok(())
    }

    /// Removes the file, link or node `name` (one component); whether there
    /// was one.
    pub fn remove(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        match nix::unistd::unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.err("removing", name, e)),
        }
    }

    /// Creates the link `name` (one component) to `target`.
    pub fn symlink(&self, name: &str, target: &str) -> Result<()> {
        check_name(name)?;
        nix::unistd::symlinkat(target, self.fd.as_fd(), name).map_err(|e| self.err("linking", name, e))
    }

    /// The descriptor, for `*at` calls of the caller's own.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn open_path(&self, rel: &str) -> Result<Option<OwnedFd>> {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(RESOLVE);
        match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if unreachable(e) => Ok(None),
            Err(e) => Err(self.err("opening", rel, e)),
        }
    }

    fn err(&self, what: &'static str, rel: &str, e: Errno) -> Error {
        Error::io(what, self.shown.join(rel))(e.into())
    }
}

/// Errors that mean "nothing reachable there" rather than a fault: absent,
/// a link (`ELOOP`), another mount (`EXDEV`), a file where a directory was
/// expected.
fn unreachable(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR)
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// One path component: no separator, not `.` or `..`, not empty.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidSpec(format!("{name:?} is not a file name")));
    }
    Ok(())
}

/// Opens the inode behind the `O_PATH` descriptor `fd` for real.
fn reopen(fd: &OwnedFd, flags: OFlag) -> std::result::Result<std::fs::File, Errno> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let fd = nix::fcntl::open(OsStr::new(&path), flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())?;
    Ok(std::fs::File::from(fd))
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host secret").unwrap();
        (d, root, outside)
    }

    #[test]
    fn links_anywhere_are_never_followed() {
        let (_d, root, outside) = tree();
        symlink(&outside, root.join("etc/abs")).unwrap();
        symlink("../..", root.join("etc/rel")).unwrap();
        symlink(outside.join("secret"), root.join("etc/hosts")).unwrap();
        let dir = Dir::open(&root).unwrap();
        assert!(dir.subdir("etc/abs").unwrap().is_none());
        assert!(dir.subdir("etc/rel").unwrap().is_none());
        assert!(dir.stat("etc/abs/secret").unwrap().is_none(), "no lookup through a link");
        let etc = dir.subdir("etc").unwrap().unwrap();
        assert_eq!(etc.read("hosts", 1 << 20).unwrap(), None, "a link is not read through");
        assert_eq!(etc.read_link("hosts").unwrap(), Some(outside.join("secret")));
        // Replacing the link writes inside, and the link's target is untouched.
        etc.replace("hosts", b"127.0.0.1 localhost\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "host secret");
        assert_eq!(etc.read("hosts", 1 << 20).unwrap().unwrap(), b"127.0.0.1 localhost\n");
        assert!(!std::fs::symlink_metadata(root.join("etc/hosts")).unwrap().file_type().is_symlink());
        assert!(dir.subdir("../outside").unwrap().is_none(), "`..` does not leave the root");
    }

    #[test]
    fn dot_dot_stays_in_the_root() {
        let (_d, root, _outside) = tree();
        std::fs::write(root.join("secret"), "inside").unwrap();
        let dir = Dir::open(&root).unwrap();
        // RESOLVE_IN_ROOT: `..` from the root is the root.
        assert_eq!(dir.read("../../secret", 64).unwrap().unwrap(), b"inside");
        assert!(dir.subdir("etc").unwrap().unwrap().replace("..", b"x", 0o644).is_err());
        assert!(dir.subdir("etc").unwrap().unwrap().replace("a/b", b"x", 0o644).is_err());
    }

    #[test]
    fn fifos_and_big_files_are_not_read() {
        let (_d, root, _outside) = tree();
        nix::unistd::mkfifo(&root.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::write(root.join("etc/big"), vec![b'x'; 4096]).unwrap();
        let etc = Dir::open(&root).unwrap().subdir("etc").unwrap().unwrap();
        assert_eq!(etc.read("fifo", 64).unwrap(), None, "a FIFO is never opened (it would block)");
        assert!(etc.read("big", 1024).is_err());
        etc.replace("fifo", b"now a file", 0o600).unwrap();
        assert_eq!(etc.read("fifo", 64).unwrap().unwrap(), b"now a file");
        let mode = std::fs::metadata(root.join("etc/fifo")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn a_directory_is_not_replaced() {
        let (_d, root, _outside) = tree();
        std::fs::create_dir(root.join("etc/hostname")).unwrap();
        let etc = Dir::open(&root).unwrap().subdir("etc").unwrap().unwrap();
        assert!(etc.replace("hostname", b"x\n", 0o644).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(root.join("etc")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("hostname")], "no temporary file is left");
    }
}

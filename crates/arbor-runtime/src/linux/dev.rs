//! `/dev` inside a sandbox: the usual character devices (bind-mounted from
//! the host's, so no device cgroup or mknod policy is needed), a private
//! devpts for terminals, `/dev/shm`, and `/dev/fuse` for FUSE mounts (a node
//! of its own, see [`fuse_node`]).

use crate::error::{Error, Result};
use nix::mount::{mount, MsFlags};
use std::{os::unix::fs::symlink, path::Path};

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Fills the tmpfs mounted at `dev`.
pub fn populate(dev: &Path) -> Result<()> {
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        std::fs::write(&target, b"").map_err(Error::io("creating device node", &target))?;
        mount(Some(&host), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(Error::sys("binding a device"))?;
    }
    fuse_node(dev)?;
    let pts = dev.join("pts");
    std::fs::create_dir_all(&pts).map_err(Error::io("creating", &pts))?;
    mount(
        None::<&str>,
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(Error::sys("mounting devpts"))?;
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm).map_err(Error::io("creating", &shm))?;
    mount(None::<&str>, &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=65536k"))
        .map_err(Error::sys("mounting /dev/shm"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(target, &path).map_err(Error::io("linking", &path))?;
    }
    Ok(())
}

/// Makes `/dev/fuse` (character device 10:229) with mode 0666, as
/// distributions do, where the host has FUSE. A node of the sandbox's own
/// rather than a bind of the host's: the host's may be 0600 (root only),
/// and changing a bound node's mode would change the host's. Opening it
/// gives nothing but a FUSE connection; mounting one goes through the
/// node's supervisor (docs/fuse.md).
fn fuse_node(dev: &Path) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Ok(());
    }
    let node = dev.join("fuse");
    let kind = nix::sys::stat::SFlag::S_IFCHR;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
    nix::sys::stat::mknod(&node, kind, mode, nix::sys::stat::makedev(10, 229))
        .map_err(Error::sys("mknod /dev/fuse"))?;
    // mknod applied the umask.
    nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, &node, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
        .map_err(Error::sys("chmod /dev/fuse"))
}

/// Brings up `lo` in a fresh network namespace.
pub fn loopback_up() -> Result<()> {
    // SAFETY: a plain socket call; the fd is wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket for", "lo")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(Error::io("reading flags of", "lo")(std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(Error::io("bringing up", "lo")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

//! `/dev` inside a sandbox: the usual character devices (bind-mounted from
//! the host's, so no device cgroup or mknod policy is needed), a private
//! devpts for terminals, `/dev/shm`, and `/dev/fuse` for FUSE mounts.

use crate::error::{Error, Result};
use nix::mount::{mount, MsFlags};
use std::{os::unix::fs::symlink, path::Path};

const DEVICES: [&str; 7] = ["null", "zero", "full", "random", "urandom", "tty", "fuse"];

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

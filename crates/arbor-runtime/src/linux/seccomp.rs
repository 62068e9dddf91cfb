//! The sandbox's seccomp filter, modelled on Docker's default profile: an
//! allowlist whose default answer is `EPERM`. The profile is
//! `seccomp/profile.json`; `build.rs` compiles it for the target
//! architecture into [`FILTER`].
//!
//! Left out, as in Docker's profile for a container without
//! `CAP_SYS_ADMIN`: namespaces (`setns`, and `clone`/`unshare` with a
//! namespace flag), the mount API, kernel modules, `kexec`, `bpf`,
//! `perf_event_open`, the kernel keyring, `io_uring`, `userfaultfd`,
//! `reboot`, `swapon`, clock setting, NUMA policy, `AF_VSOCK` sockets and
//! unusual `personality` values. `mount` and `umount2` go to a supervisor
//! in the node (`SECCOMP_RET_USER_NOTIF`), which performs FUSE mounts only
//! (see the `fuse` module). Two kinds of call answer `ENOSYS` instead,
//! so that libraries fall back rather than fail: `clone3` (its flags sit
//! behind a pointer a filter cannot read; glibc then uses `clone`), and
//! every number above [`NEWEST_KNOWN`] (as on an older kernel, as runc
//! does). Other ABIs (x86's 32-bit one) are killed.
//!
//! Installed with the plain `seccomp(2)` call: `seccompiler::apply_filter`
//! always sets `no_new_privs`, which would stop `sudo` (setuid) from
//! working. Without `no_new_privs` the kernel wants `CAP_SYS_ADMIN`, so this
//! runs before the capabilities are dropped.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

include!(concat!(env!("OUT_DIR"), "/seccomp_filter.rs"));

/// Installing the filter failed.
#[derive(Debug, thiserror::Error)]
#[error("installing the seccomp filter: {0}")]
pub struct SeccompError(std::io::Error);

/// Installs [`FILTER`] on the calling thread and returns its listener: the
/// descriptor on which the calls the profile lists under `notify` (`mount`,
/// `umount2`) wait for an answer (see the `fuse` module). Every process the
/// thread starts inherits the filter, and it stays across `execve`.
pub fn install() -> Result<OwnedFd, SeccompError> {
    let len = u16::try_from(FILTER.len()).map_err(|_| SeccompError(std::io::Error::from_raw_os_error(libc::E2BIG)))?;
    let prog = libc::sock_fprog { len, filter: FILTER.as_ptr().cast_mut() };
    // SAFETY: `prog` points at a static program; the kernel only reads it
    // (copying it in) during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    match RawFd::try_from(rc) {
        // SAFETY: with NEW_LISTENER the call returns a fresh descriptor (close-on-exec) we own.
        Ok(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        _ => Err(SeccompError(std::io::Error::last_os_error())),
    }
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;

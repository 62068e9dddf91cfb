//! The capabilities a sandbox's root keeps: Docker's default set less
//! `CAP_MKNOD`.
//!
//! envd (PID 1, root) needs `SETUID`/`SETGID` to start processes as `user`
//! and to act as them for file work (`setfsuid`, `setgroups`), and
//! `DAC_OVERRIDE`/`CHOWN`/`FOWNER`/`FSETID` for file operations as root;
//! the rest is what software run as root (or through `sudo`) expects in a
//! container: `KILL`, `NET_BIND_SERVICE`, `NET_RAW` (ping), `SYS_CHROOT`,
//! `SETFCAP`/`SETPCAP` (package installs), `AUDIT_WRITE` (sudo, login).
//!
//! `CAP_MKNOD` is in Docker's set, but Docker pairs it with a device cgroup
//! that refuses opening any device node it did not list. Sandboxes have no
//! device cgroup (their `/dev` is a few nodes bound from the host), so with
//! `CAP_MKNOD` a sandbox's root could create a node for a host disk and
//! open it. Without it, `mknod` still makes FIFOs and sockets.
//!
//! Everything else is removed from the bounding set, so no `execve` (of a
//! setuid binary or of anything run by root) can get it back, and from the
//! permitted and effective sets. The inheritable and ambient sets are
//! emptied, as runc does since CVE-2022-24769: a sandbox has no use for
//! capabilities that survive `execve` as a non-root user.

use caps::{CapSet, Capability, CapsHashSet};

/// What dropping capabilities can fail with.
#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities ({what}): {reason}")]
pub struct CapsError {
    what: &'static str,
    reason: String,
}

impl CapsError {
    fn at(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> Self {
        move |e| CapsError { what, reason: e.to_string() }
    }
}

/// The capabilities a sandbox keeps.
pub const KEPT: [Capability; 13] = [
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
];

/// [`KEPT`] as the bit mask `/proc/<pid>/status` shows (`CapBnd`, `CapEff`).
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |mask, cap| mask | cap.bitmask())
}

/// Reduces the calling thread's capabilities to [`KEPT`]. Needs
/// `CAP_SETPCAP` (to shrink the bounding set), so it runs as root before
/// envd is executed.
pub fn drop_to_kept() -> Result<(), CapsError> {
    let kept: CapsHashSet = KEPT.into_iter().collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP in the
    // effective set (in `KEPT`, so there throughout). Only the capabilities
    // this kernel has: dropping one it lacks fails with EINVAL.
    for cap in caps::runtime::thread_all_supported().difference(&kept) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(CapsError::at("bounding set"))?;
    }
    drop_unnamed_from_bounding()?;
    caps::clear(None, CapSet::Ambient).map_err(CapsError::at("ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(CapsError::at("inheritable set"))?;
    // Effective before permitted: the effective set must stay a subset.
    caps::set(None, CapSet::Effective, &kept).map_err(CapsError::at("effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(CapsError::at("permitted set"))?;
    Ok(())
}

/// Drops capabilities newer than the `caps` crate knows from the bounding
/// set (the kernel answers `EINVAL` past its last one). capset(2) already
/// clears such bits from the other sets, as it writes whole masks.
fn drop_unnamed_from_bounding() -> Result<(), CapsError> {
    let first_unnamed = caps::all().iter().map(|c| c.index()).max().map_or(0, |i| i + 1);
    for index in first_unnamed..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(index), 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(CapsError { what: "bounding set", reason: format!("capability {index}: {err}") });
        }
    }
    Ok(())
}

//! What `arbor-launch restore` does: join the sandbox's cgroup, then in a new
//! mount namespace (so the overlay never shows on the host) and a new cgroup
//! namespace (so the restored tree sees its cgroup as `/` again) mount the
//! overlay and run `criu restore` with the network namespace on fd 9.
//!
//! Runs in the single-threaded launcher: the namespace changes affect the
//! whole process, which the multi-threaded node must not do to itself.

use super::{criu, mounts};
use crate::{
    error::{Error, Result},
    spec::RestoreSpec,
};
use nix::sched::{unshare, CloneFlags};
use std::{fs::File, os::fd::AsRawFd, process::Command};

/// Restores the checkpoint; returns the restored PID 1's host pid once CRIU
/// has detached from the running tree.
pub fn run(spec: &RestoreSpec) -> Result<u32> {
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, &me).map_err(Error::io("joining cgroup", procs))?;
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP).map_err(Error::sys("unshare(mnt, cgroup)"))?;
    mounts::make_private()?;
    mounts::overlay(&spec.layers, &spec.upper, &spec.work, &spec.rootfs)?;
    let netns = File::open(&spec.netns).map_err(Error::io("opening netns", &spec.netns))?;
    // dup2 leaves the copy without close-on-exec: CRIU inherits it.
    // SAFETY: both descriptors are valid; fd 9 is free or ours to replace.
    if unsafe { libc::dup2(netns.as_raw_fd(), criu::NETNS_FD) } < 0 {
        return Err(Error::sys("dup2(netns)")(nix::errno::Errno::last()));
    }
    merge_memory();
    let log = spec.images.join("restore.log");
    let out = Command::new(&spec.criu)
        .args(criu::restore_args(&spec.images, &spec.rootfs, &spec.pidfile, &spec.externals))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(Error::io("running", &spec.criu))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Checkpoint(format!(
            "criu restore {}: {}{}",
            out.status,
            stderr.trim(),
            criu::log_tail(&log)
        )));
    }
    let pid = std::fs::read_to_string(&spec.pidfile).map_err(Error::io("reading", &spec.pidfile))?;
    pid.trim().parse().map_err(|_| Error::Checkpoint(format!("criu wrote no pid: {pid:?}")))
}

/// `PR_SET_MEMORY_MERGE` (Linux >= 6.4), absent from `libc`.
const PR_SET_MEMORY_MERGE: libc::c_int = 67;

/// Marks this process's memory, and that of every process it forks or
/// execs (since Linux 6.7 the flag is inherited and kept across exec), as
/// mergeable by KSM: CRIU restores each task's memory from a process this one
/// starts, so clones restored from one checkpoint hold identical pages the
/// kernel can share (when KSM runs, `/sys/kernel/mm/ksm/run`). Best effort: a
/// kernel without it restores all the same.
fn merge_memory() {
    // SAFETY: prctl with integer arguments only changes this process's flags.
    let rc = unsafe {
        libc::prctl(PR_SET_MEMORY_MERGE, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
    };
    if rc != 0 {
        eprintln!("arbor-launch: PR_SET_MEMORY_MERGE: {}", std::io::Error::last_os_error());
    }
}

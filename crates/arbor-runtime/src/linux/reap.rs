//! Sandbox init processes are the node's children.
//!
//! `arbor-launch` exits once envd is ready, so each sandbox's PID 1 is
//! re-parented to the nearest sub-reaper. The node is one: it can then reap
//! the init processes it destroys instead of leaving zombies to a host init
//! that may never reap them (this machine's does not).

use crate::error::{Error, Result};
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use std::time::{Duration, Instant};

/// Makes the calling process the sub-reaper of everything it starts.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(Error::sys("PR_SET_CHILD_SUBREAPER"))
}

/// Reaps `pid` once it has exited, waiting at most `timeout`. A process that
/// is not our child (adopted after a restart) is someone else's to reap.
pub fn reap(pid: u32, timeout: Duration) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if start.elapsed() < timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(Errno::EINTR) => {}
            Ok(WaitStatus::StillAlive) => {
                tracing::warn!(pid, "sandbox init did not exit in time; not reaped");
                return;
            }
            Ok(_) | Err(_) => return,
        }
    }
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

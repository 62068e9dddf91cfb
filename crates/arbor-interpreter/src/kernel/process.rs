//! The kernel's OS process: spawned in its own process group with
//! `PR_SET_PDEATHSIG`, so neither the kernel nor anything the user's code
//! starts outlives the interpreter.

use crate::error::{Error, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use tokio::process::{Child, Command};

/// A spawned kernel process (and its process group).
#[derive(Debug)]
pub struct KernelProcess {
    child: Mutex<Child>,
    pid: Option<Pid>,
}

impl KernelProcess {
    /// Spawns `argv` plus `conn_file` in `cwd`.
    pub fn spawn(argv: &[String], conn_file: &Path, cwd: &Path) -> Result<Self> {
        let (program, args) = argv.split_first().ok_or_else(|| Error::Config("empty kernel command".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(conn_file)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            // Its own group: SIGINT/SIGKILL reach the kernel's children too, and
            // a terminal's ^C to the interpreter does not reach the kernels.
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let child = cmd.spawn().map_err(|e| Error::io(format!("spawn {program}"), e))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        Ok(KernelProcess { child: Mutex::new(child), pid })
    }

    /// The kernel's pid (0 if unknown), for logs.
    pub fn pid(&self) -> i32 {
        self.pid.map_or(0, Pid::as_raw)
    }

    /// The exit status, if the kernel has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().ok().and_then(|mut c| c.try_wait().ok().flatten())
    }

    /// Sends SIGINT to the kernel process.
    pub fn sigint(&self) -> Result<()> {
        let pid = self.pid.ok_or_else(|| Error::KernelDied("kernel has no pid".into()))?;
        kill(pid, Signal::SIGINT).map_err(|e| Error::io("SIGINT kernel", std::io::Error::from(e)))
    }

    /// Kills the kernel and everything in its process group.
    pub fn kill(&self) {
        if let Some(pid) = self.pid {
            // The group id is the kernel's pid (process_group(0)).
            let _ = killpg(pid, Signal::SIGKILL);
        }
        if let Ok(mut child) = self.child.lock() {
            let _ = child.start_kill();
            // Reap it if it is already gone, so no zombie stays behind.
            let _ = child.try_wait();
        }
    }
}

impl Drop for KernelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Starting a process: command line, environment, working directory, user,
//! and either pipes or a pseudo-terminal.

use super::pty::PtyMaster;
use crate::{
    error::{Error, Result},
    state::Defaults,
    users::{resolve_path, User},
};
use arbor_proto::process::ProcessConfig;
use std::{
    os::{fd::OwnedFd, unix::process::CommandExt},
    process::{Command, Stdio},
};

/// `PATH` for processes whose environment sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a spawn hands back: the pid and envd's ends of the child's stdio.
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid (also its session and process group id).
    pub pid: u32,
    /// Write end of stdin, when stdin is a pipe.
    pub stdin: Option<OwnedFd>,
    /// Read end of stdout (pipe mode).
    pub stdout: Option<OwnedFd>,
    /// Read end of stderr (pipe mode).
    pub stderr: Option<OwnedFd>,
    /// The terminal's master side (pty mode).
    pub pty: Option<PtyMaster>,
}

/// How the child's stdio is wired.
#[derive(Debug, Clone, Copy)]
pub enum Stdio3 {
    /// Pipes; stdin is a pipe only if `stdin` is set, else /dev/null.
    Pipes {
        /// Whether the caller wants to send stdin.
        stdin: bool,
    },
    /// A terminal of this size (cols, rows).
    Pty(u16, u16),
}

/// Spawns `config` as `user`. Must be called with the reaper's lock held, so
/// the exit cannot be reaped before the pid is registered.
pub fn spawn(config: &ProcessConfig, stdio: Stdio3, user: &User, defaults: &Defaults) -> Result<Spawned> {
    if config.cmd.is_empty() {
        return Err(Error::InvalidArgument("process.cmd is empty".into()));
    }
    let cwd = match config.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => resolve_path(user, c),
        None => defaults.workdir.clone().unwrap_or_else(|| user.home.clone()),
    };
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::InvalidArgument(format!("cwd '{}' is not a directory", cwd.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidArgument(format!("cwd '{}' does not exist", cwd.display())))
        }
        Err(e) => return Err(Error::io(format!("cwd '{}'", cwd.display()), e)),
    }

    let mut cmd = Command::new(&config.cmd);
    cmd.args(&config.args).env_clear().current_dir(&cwd);
    cmd.env("PATH", DEFAULT_PATH)
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("SHELL", if user.shell.is_empty() { "/bin/sh" } else { &user.shell })
        .env("PWD", &cwd);
    cmd.envs(&defaults.envs).envs(&config.envs);

    let mut pty_master = None;
    let pty_mode = match stdio {
        Stdio3::Pty(cols, rows) => {
            let (master, slave) = PtyMaster::open(cols, rows).map_err(|e| Error::io("opening a pty", e))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("duplicating the pty", e));
            cmd.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(slave));
            pty_master = Some(master);
            true
        }
        Stdio3::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
            false
        }
    };

    // SAFETY: geteuid has no preconditions.
    let switch_user = unsafe { libc::geteuid() } == 0 && user.uid != 0;
    let (uid, gid) = (user.uid, user.gid);
    let groups: Vec<libc::gid_t> = user.groups.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe raw system calls on memory captured before the fork.
    unsafe {
        cmd.pre_exec(move || child_setup(pty_mode, switch_user, uid, gid, &groups));
    }

    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting '{}'", config.cmd), e))?;
    Ok(Spawned {
        pid: child.id(),
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        pty: pty_master,
    })
}

/// In the child: a new session (so signals reach the whole job), the
/// terminal as controlling tty, then the user's credentials.
fn child_setup(pty: bool, switch_user: bool, uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: raw syscalls with valid arguments; we are single-threaded in
    // the child between fork and exec.
    unsafe {
        check(libc::syscall(libc::SYS_setsid))?;
        if pty {
            check(libc::ioctl(0, libc::TIOCSCTTY, 0).into())?;
        }
        if switch_user {
            check(libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()))?;
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        }
    }
    Ok(())
}

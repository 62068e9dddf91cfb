//! What `arbor-launch` does: join the cgroup and network, create the other
//! namespaces, fork the sandbox's PID 1, build its root, exec envd.
//!
//! Runs in a single-threaded process, so everything after `fork` is safe.
//! The child reports a failure through a close-on-exec pipe: a clean exec
//! closes the pipe with nothing written.

use super::{dev, mounts};
use crate::{
    error::{Error, Result},
    spec::{LaunchSpec, ENVD_PATH},
};
use nix::{
    sched::{setns, unshare, CloneFlags},
    unistd::{fork, pipe2, ForkResult},
};
use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
};

/// Starts the sandbox; returns envd's pid as the host sees it.
pub fn run(spec: &LaunchSpec) -> Result<u32> {
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, &me).map_err(Error::io("joining cgroup", procs))?;
    }
    match &spec.netns {
        Some(path) => {
            let ns = File::open(path).map_err(Error::io("opening netns", path))?;
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(Error::sys("setns(net)"))?;
        }
        None => {
            unshare(CloneFlags::CLONE_NEWNET).map_err(Error::sys("unshare(net)"))?;
            dev::loopback_up()?;
        }
    }
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(flags).map_err(Error::sys("unshare(mnt, uts, ipc, pid, cgroup)"))?;

    let (report_r, report_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
    // SAFETY: this process is single-threaded (arbor-launch does nothing
    // else), so the child may allocate and make any call.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(report_r);
            let err = match become_init(spec) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let mut w = File::from(report_w);
            let _ = w.write_all(err.to_string().as_bytes());
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let mut msg = String::new();
            let _ = File::from(report_r).read_to_string(&mut msg);
            if msg.is_empty() {
                Ok(child.as_raw().unsigned_abs())
            } else {
                Err(Error::Launch(msg))
            }
        }
    }
}

/// In the new PID namespace, as its PID 1: root file system, then exec envd.
fn become_init(spec: &LaunchSpec) -> Result<std::convert::Infallible> {
    // stdout is the pipe the driver reads the pid from: envd must not hold
    // it open. Until the pivot its output goes to the log (stderr).
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(Error::sys("redirecting stdout"))?;
    mounts::make_private()?;
    mounts::overlay(&spec.layers, &spec.upper, &spec.work, &spec.rootfs)?;
    mounts::kernel_filesystems(&spec.rootfs)?;
    dev::populate(&spec.rootfs.join("dev"))?;
    mounts::bind_envd(&spec.envd, &spec.rootfs)?;
    mounts::pivot_into(&spec.rootfs)?;
    // From here on envd holds no descriptor of the host's: CRIU can only
    // checkpoint files it can find in the sandbox's own mount tree. Failures
    // still reach the driver through the report pipe.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(Error::io("opening", "/dev/null"))?;
    nix::unistd::dup2_stdin(&null).map_err(Error::sys("redirecting stdin"))?;
    nix::unistd::dup2_stdout(&null).map_err(Error::sys("redirecting stdout"))?;
    nix::unistd::dup2_stderr(&null).map_err(Error::sys("redirecting stderr"))?;
    drop(null);
    mounts::mask_proc()?;
    nix::unistd::sethostname(&spec.hostname).map_err(Error::sys("sethostname"))?;
    nix::unistd::setsid().map_err(Error::sys("setsid"))?;
    super::harden::apply()?;
    exec_envd(spec)
}

fn exec_envd(spec: &LaunchSpec) -> Result<std::convert::Infallible> {
    let cstr = |s: &str| CString::new(s).map_err(|_| Error::InvalidSpec(format!("NUL byte in '{s}'")));
    let path = cstr(ENVD_PATH)?;
    let argv = [cstr("arbor-envd")?];
    let mut env = vec![cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?];
    for (k, v) in &spec.env {
        env.push(cstr(&format!("{k}={v}"))?);
    }
    nix::unistd::execve(&path, &argv, &env).map_err(Error::sys("exec envd"))
}

//! What `arbor-launch` does: join the cgroup and network, create the other
//! namespaces, fork the sandbox's PID 1, build its root, exec envd.
//!
//! Runs in a single-threaded process, so everything after `fork` is safe.
//! The child reports a failure through a close-on-exec pipe: a clean exec
//! closes the pipe with nothing written. envd then writes one byte to a
//! second pipe once it listens; the launcher exits when it has, so the
//! driver learns of readiness from the launcher's exit without polling.

use super::{dev, handoff, mounts};
use crate::{
    confined,
    error::{Error, Result},
    spec::{LaunchSpec, ENVD_PATH},
};
use nix::{
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sched::{setns, unshare, CloneFlags},
    sys::socket::{socketpair, AddressFamily, SockFlag, SockType},
    unistd::{fork, pipe2, ForkResult},
};
use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

/// How long envd gets from exec to listening.
const READY_TIMEOUT_MS: u16 = 10_000;

/// Starts the sandbox; returns envd's pid as the host sees it once envd
/// listens, and the listener of the sandbox's seccomp filter (for the
/// driver's FUSE supervisor).
pub fn run(spec: &LaunchSpec) -> Result<(u32, OwnedFd)> {
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
    let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
    let (listener_r, listener_w) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(Error::sys("socketpair"))?;
    // SAFETY: this process is single-threaded (arbor-launch does nothing
    // else), so the child may allocate and make any call.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(report_r);
            drop(ready_r);
            drop(listener_r);
            let err = match become_init(spec, ready_w, listener_w) {
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
            drop(ready_w);
            drop(listener_w);
            let mut msg = String::new();
            let _ = File::from(report_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                return Err(Error::Launch(msg));
            }
            // Sent before the exec that closed the report pipe: already queued.
            let (_, listener) = handoff::recv(listener_r.as_fd(), false)?;
            let listener = listener.ok_or_else(|| Error::Launch("PID 1 sent no seccomp listener".into()))?;
            wait_ready(ready_r)?;
            Ok((child.as_raw().unsigned_abs(), listener))
        }
    }
}

/// Waits for envd's byte on the ready pipe; end of file means envd died.
fn wait_ready(pipe: OwnedFd) -> Result<()> {
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    let n = loop {
        match poll(&mut fds, PollTimeout::from(READY_TIMEOUT_MS)) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(Error::sys("waiting for envd"))?,
        }
    };
    if n == 0 {
        return Err(Error::Launch(format!("envd did not listen within {READY_TIMEOUT_MS} ms")));
    }
    let mut byte = [0u8; 1];
    match File::from(pipe).read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err(Error::Launch("envd exited before it listened".into())),
        Err(e) => Err(Error::io("reading the ready pipe", "arbor-launch")(e)),
    }
}

/// In the new PID namespace, as its PID 1: root file system, then exec envd.
fn become_init(spec: &LaunchSpec, ready: OwnedFd, listener_w: OwnedFd) -> Result<std::convert::Infallible> {
    // stdout is the pipe the driver reads the pid from: envd must not hold
    // it open. Until the pivot its output goes to the log (stderr).
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(Error::sys("redirecting stdout"))?;
    mounts::make_private()?;
    mounts::overlay(&spec.layers, &spec.upper, &spec.work, &spec.rootfs)?;
    // No process of the sandbox runs yet, but its layers are a tenant's.
    let root = confined::Dir::open(&spec.rootfs)?;
    name_host(&root, &spec.hostname, spec.resolv_conf.as_deref())?;
    link_mtab(&root)?;
    drop(root);
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
    // Whatever the launcher itself inherited (from a shell, a test harness)
    // must not reach the sandbox or its checkpoints: everything above stdio
    // closes on exec. The ready pipe is the one host descriptor envd
    // inherits; it closes it as soon as it listens.
    // SAFETY: close_range only changes descriptor flags of this process.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        return Err(Error::sys("close_range")(nix::errno::Errno::last()));
    }
    nix::fcntl::fcntl(&ready, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
        .map_err(Error::sys("passing the ready pipe"))?;
    // The listener goes to the launcher (and on to the driver); no process
    // of the sandbox keeps it: whoever holds it decides on mounts.
    let listener = super::harden::apply()?;
    handoff::send(listener_w.as_fd(), b"l", Some(listener.as_fd()))?;
    drop(listener);
    drop(listener_w);
    exec_envd(spec, ready.as_raw_fd())
}

/// The largest `/etc/hosts` the runtime rewrites: a real one is a few
/// lines; a tenant's giant one must not cost the server its memory.
const MAX_HOSTS: u64 = 1 << 20;

/// Makes the hostname resolve inside (sudo, for one, looks it up) and
/// `/etc/hostname` say it, as container runtimes do, and gives the sandbox
/// the host's name servers, in the sandbox whose root is `root`. Every
/// file goes through [`confined::Dir`]: a restored sandbox's processes run
/// while this happens, and any link there leads wherever they want; an
/// image whose `/etc` is a link gets none of these files.
fn name_host(root: &confined::Dir, hostname: &str, resolv_conf: Option<&str>) -> Result<()> {
    let Some(etc) = root.subdir("etc")? else { return Ok(()) };
    let hosts = etc.read("hosts", MAX_HOSTS)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let known = hosts.lines().any(|l| l.split_whitespace().skip(1).any(|name| name == hostname));
    if !known {
        let mut hosts = if hosts.is_empty() { "127.0.0.1\tlocalhost\n".to_string() } else { hosts };
        if !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
        etc.replace("hosts", hosts.as_bytes(), 0o644)?;
    }
    if let Some(conf) = resolv_conf {
        etc.replace("resolv.conf", conf.as_bytes(), 0o644)?;
    }
    etc.replace("hostname", format!("{hostname}\n").as_bytes(), 0o644)
}

/// The `resolv.conf` a sandbox gets from the host's `text`: its name servers
/// that a sandbox can reach (not loopback ones: the sandbox's loopback is
/// its own), with `search` and `options`. `None` when none is left.
pub fn sandbox_resolv_conf(text: &str) -> Option<String> {
    let mut out = String::from("# written by arbor from the host's resolv.conf\n");
    let mut servers = 0;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(addr) = words.next().and_then(|a| a.parse::<std::net::IpAddr>().ok()) else { continue };
                if !addr.is_loopback() && addr.is_ipv4() {
                    out.push_str(&format!("nameserver {addr}\n"));
                    servers += 1;
                }
            }
            Some("search" | "options" | "domain") => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    (servers > 0).then_some(out)
}

/// Links `/etc/mtab` to `/proc/self/mounts` where the image has none, as
/// Debian's own systems have it: `fusermount3 -u` run by a user looks its
/// mount up there (and refuses to unmount without it). The link lands in the
/// sandbox's own upper dir.
fn link_mtab(root: &confined::Dir) -> Result<()> {
    let Some(etc) = root.subdir("etc")? else { return Ok(()) };
    if etc.stat("mtab")?.is_some() {
        return Ok(());
    }
    etc.symlink("mtab", "../proc/self/mounts")
}

/// Gives the restored sandbox of `init_pid` the hostname `hostname` (a
/// clone, or a sandbox made from a snapshot, starts with its origin's): in
/// its UTS namespace, and in its `/etc/hostname` and `/etc/hosts`, reached
/// through its own root (`/proc/<pid>/root`, its mount namespace's view)
/// with every component resolved by the kernel, never through a host path:
/// the restored processes already run.
pub fn rename_host(init_pid: u32, hostname: &str) -> Result<()> {
    let ns_path = format!("/proc/{init_pid}/ns/uts");
    let ns = File::open(&ns_path).map_err(Error::io("opening", &ns_path))?;
    let name = hostname.to_string();
    // A thread of its own joins the namespace and ends with it: the
    // caller's threads keep the host's.
    std::thread::spawn(move || -> Result<()> {
        setns(ns, CloneFlags::CLONE_NEWUTS).map_err(Error::sys("setns(uts)"))?;
        nix::unistd::sethostname(&name).map_err(Error::sys("sethostname"))
    })
    .join()
    .map_err(|_| Error::Task("renaming the host", "the thread panicked".into()))??;
    name_host(&confined::Dir::process_root(init_pid)?, hostname, None)
}

fn exec_envd(spec: &LaunchSpec, ready_fd: i32) -> Result<std::convert::Infallible> {
    let cstr = |s: &str| CString::new(s).map_err(|_| Error::InvalidSpec(format!("NUL byte in '{s}'")));
    let path = cstr(ENVD_PATH)?;
    let mut argv = vec![cstr("arbor-envd")?, cstr("--ready-fd")?, cstr(&ready_fd.to_string())?];
    for (k, v) in &spec.env {
        argv.push(cstr("--env")?);
        argv.push(cstr(&format!("{k}={v}"))?);
    }
    let mut env = vec![cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?];
    if let Some(token) = &spec.access_token {
        env.push(cstr(&format!("ARBOR_ENVD_ACCESS_TOKEN={token}"))?);
    }
    nix::unistd::execve(&path, &argv, &env).map_err(Error::sys("exec envd"))
}

#[cfg(test)]
mod resolv_tests {
    #[test]
    fn host_resolvers_a_sandbox_can_reach() {
        let conf = super::sandbox_resolv_conf(
            "# x\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nsearch corp\n",
        );
        assert_eq!(
            conf.as_deref(),
            Some("# written by arbor from the host's resolv.conf\nnameserver 10.1.2.3\nsearch corp\n")
        );
        assert_eq!(super::sandbox_resolv_conf("nameserver 127.0.0.53\n"), None);
        assert_eq!(super::sandbox_resolv_conf(""), None);
    }
}

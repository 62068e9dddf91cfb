//! Test harness: every test runs in network namespaces it creates itself.
//!
//! A test's "host" is a fresh network namespace on a thread of its own, so the nftables table,
//! sysctls, veths and the fake internet host all vanish with it, and no packet of a test ever
//! reaches the machine's real interfaces.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// How long a connection attempt may take before it counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_millis(700);

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a network namespace of its own; jobs sent to it run there.
pub struct NsThread {
    tx: Option<mpsc::Sender<Job>>,
    join: Option<JoinHandle<()>>,
    pub tid: i32,
}

impl NsThread {
    /// `None` (after printing why) when this kernel or process cannot create network namespaces.
    pub fn new() -> Option<NsThread> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let join = std::thread::spawn(move || {
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(e));
                return;
            }
            let _ = ready_tx.send(Ok(nix::unistd::gettid().as_raw()));
            while let Ok(job) = rx.recv() {
                job();
            }
        });
        match ready_rx.recv().expect("namespace thread died") {
            Ok(tid) => {
                let t = NsThread { tx: Some(tx), join: Some(join), tid };
                t.sh("ip link set lo up");
                Some(t)
            }
            Err(e) => {
                eprintln!("NOTICE: skipping: cannot create a network namespace: {e}");
                None
            }
        }
    }

    /// Runs `f` in the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx.as_ref().unwrap().send(job).unwrap();
        rx.recv().expect("job panicked")
    }

    /// Runs a shell command in the namespace; panics if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let cmd = cmd.to_owned();
        self.run(move || sh(&cmd))
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a new thread inside the namespace pinned at `path`.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let fd: OwnedFd = fs::File::open(path).unwrap().into();
    std::thread::spawn(move || {
        setns(&fd, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .expect("thread in sandbox namespace panicked")
}

/// A directory for namespace pins that unmounts and removes whatever is left in it on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(test: &str) -> PinDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("arbor-net-{test}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        PinDir(dir)
    }

    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A TCP server on its own thread that answers every connection with `reply` and the peer's
/// address, until dropped.
pub struct Server {
    stop: mpsc::Sender<()>,
    join: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// Starts a server from within the calling thread's namespace (the listener keeps it).
pub fn serve(addr: SocketAddrV4, reply: &str) -> Server {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = mpsc::channel();
    let reply = reply.to_owned();
    let join = std::thread::spawn(move || loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                let local = s.local_addr().unwrap();
                let _ = s.write_all(format!("{reply} {peer} {local}").as_bytes());
            }
            Err(_) => {
                if stopped.recv_timeout(Duration::from_millis(5)).is_ok() {
                    return;
                }
            }
        }
    });
    Server { stop, join: Some(join) }
}

/// Connects and reads the server's answer; `None` when the connection does not succeed.
pub fn fetch(addr: Ipv4Addr, port: u16) -> Option<String> {
    let sa = SocketAddr::V4(SocketAddrV4::new(addr, port));
    let mut s = TcpStream::connect_timeout(&sa, BLOCKED_AFTER).ok()?;
    s.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A fake internet host `198.51.100.1/24` (TEST-NET-2) in its own namespace, attached to the
/// test host by a veth (`198.51.100.2` on the host side) and serving `port`.
pub struct Internet {
    pub ns: NsThread,
    pub server: Option<Server>,
}

pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const INTERNET_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

impl Internet {
    /// Call on the test host's thread.
    pub fn new(port: u16) -> Internet {
        let ns = NsThread::new().expect("second namespace");
        sh(&format!(
            "ip link add tinet type veth peer name eth0 netns {tid} && \
             ip addr add {INTERNET_GW}/24 dev tinet && ip link set tinet up",
            tid = ns.tid
        ));
        ns.sh(&format!("ip addr add {INTERNET}/24 dev eth0 && ip link set eth0 up"));
        let server = ns.run(move || serve(SocketAddrV4::new(INTERNET, port), "internet"));
        // A fresh veth may drop packets until the kernel's link watcher activates it (up to a
        // second): wait until the test host itself gets an answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fetch(INTERNET, port).is_none() {
            assert!(std::time::Instant::now() < deadline, "the fake internet host never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Internet { ns, server: Some(server) }
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        drop(self.server.take());
    }
}

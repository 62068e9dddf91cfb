//! Asking envd inside a sandbox whether it answers: `GET /health`.

use anyhow::{bail, Context};
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// envd's port in every sandbox.
const ENVD_PORT: u16 = 49983;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to reach a sandbox's envd from the host.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Its host-side address (sandboxes with a network).
    Addr(Ipv4Addr),
    /// 127.0.0.1 inside the network namespace of this process (loopback-only sandboxes).
    Netns(u32),
}

/// One `GET /health` round trip; fails unless envd answers with a 2xx status.
pub fn health(target: Target) -> anyhow::Result<()> {
    let mut stream = match target {
        Target::Addr(ip) => TcpStream::connect_timeout(&SocketAddr::from((ip, ENVD_PORT)), TIMEOUT)
            .with_context(|| format!("connecting to {ip}:{ENVD_PORT}"))?,
        Target::Netns(pid) => connect_in_netns(pid)?,
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: envd\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).context("reading the status line")?;
    // "HTTP/1.x 2xx"
    if !head.starts_with(b"HTTP/1.") || head[9] != b'2' {
        bail!("envd answered {:?}", String::from_utf8_lossy(&head));
    }
    Ok(())
}

/// Connects from a short-lived thread that joins the namespace: a thread's
/// network namespace never changes back, so it must not be a pool thread.
fn connect_in_netns(pid: u32) -> anyhow::Result<TcpStream> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).with_context(|| format!("opening netns of {pid}"))?;
    std::thread::spawn(move || -> anyhow::Result<TcpStream> {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, ENVD_PORT)), TIMEOUT)
            .context("connecting to envd in its namespace")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

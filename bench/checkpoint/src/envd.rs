//! Talking to envd inside a sandbox or container, the same way for both
//! sides: `GET /health`, and `process.Process/Start` over Connect (one
//! enveloped JSON request, a stream of enveloped events back). HTTP/1.0, so
//! the response body ends when envd closes the connection.

use anyhow::{bail, Context};
use base64::Engine as _;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// envd's port in every sandbox.
const ENVD_PORT: u16 = 49983;
/// How long one request may take (a 1 GiB filler needs a few seconds).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where to reach an envd from the host.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Its host-side address (Arbor sandboxes with a network).
    Addr(Ipv4Addr),
    /// 127.0.0.1 inside the network namespace of this pid (runc containers,
    /// loopback-only sandboxes).
    Netns(u32),
}

fn connect(t: Target) -> anyhow::Result<TcpStream> {
    let s = match t {
        Target::Addr(ip) => TcpStream::connect_timeout(&SocketAddr::from((ip, ENVD_PORT)), TIMEOUT)
            .with_context(|| format!("connecting to {ip}:{ENVD_PORT}"))?,
        Target::Netns(pid) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .with_context(|| format!("opening the netns of {pid}"))?;
            // A thread's network namespace never changes back, so the
            // connect happens on a thread of its own.
            std::thread::spawn(move || -> anyhow::Result<TcpStream> {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, ENVD_PORT)), TIMEOUT)
                    .context("connecting to envd in its namespace")
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??
        }
    };
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads the status line and headers; fails unless the status is 2xx.
fn read_head(r: &mut BufReader<TcpStream>) -> anyhow::Result<()> {
    let mut line = String::new();
    r.read_line(&mut line).context("reading the status line")?;
    // "HTTP/1.x 2xx ..."
    if !line.starts_with("HTTP/1.") || line.as_bytes().get(9) != Some(&b'2') {
        bail!("envd answered {:?}", line.trim_end());
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        if line == "\r\n" {
            return Ok(());
        }
    }
}

/// One `GET /health` round trip.
pub fn health(t: Target) -> anyhow::Result<()> {
    let mut s = connect(t)?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: envd\r\n\r\n")?;
    let mut r = BufReader::new(s);
    read_head(&mut r)?;
    drain(r)
}

/// Reads to the end of the response: envd has closed its side by then, so
/// no connection of ours is open inside the sandbox when it is checkpointed
/// next (CRIU refuses established connections unless told what to do).
fn drain(mut r: BufReader<TcpStream>) -> anyhow::Result<()> {
    std::io::copy(&mut r, &mut std::io::sink()).context("reading to the end of the response")?;
    Ok(())
}

/// Polls `/health` until envd answers or `within` has passed.
pub fn wait_health(t: Target, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match health(t) {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > within => return Err(e.context(format!("envd not up within {within:?}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Runs `cmd args` as root through envd's `process.Process/Start` until its
/// end event (it must exit 0) and the end of the response; returns its stdout.
pub fn run(t: Target, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let msg = serde_json::json!({"process": {"cmd": cmd, "args": args}, "stdin": false}).to_string();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len())?.to_be_bytes());
    body.extend_from_slice(msg.as_bytes());
    let mut s = connect(t)?;
    // One write for head and body: no Nagle/delayed-ACK stall between them.
    let mut req = format!(
        "POST /process.Process/Start HTTP/1.0\r\nHost: envd\r\nContent-Type: application/connect+json\r\n\
         Connect-Protocol-Version: 1\r\nAuthorization: Basic cm9vdDo=\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    s.write_all(&req)?;
    let mut r = BufReader::new(s);
    read_head(&mut r)?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).context("the event stream ended early")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        let v: serde_json::Value = serde_json::from_slice(&payload).context("an event is not JSON")?;
        if head[0] & 0x02 != 0 {
            bail!("{cmd}: the stream ended without an end event: {v}");
        }
        let ev = &v["event"];
        for (key, buf) in [("stdout", &mut stdout), ("stderr", &mut stderr)] {
            if let Some(out) = ev["data"][key].as_str() {
                buf.extend(base64::engine::general_purpose::STANDARD.decode(out)?);
            }
        }
        if ev.get("end").is_some() {
            // proto3 JSON leaves a zero exit code out.
            if ev["end"]["exitCode"].as_i64().unwrap_or(0) != 0 {
                bail!("{cmd} ended with {}: {}", ev["end"], String::from_utf8_lossy(&stderr).trim());
            }
            drain(r)?;
            return Ok(String::from_utf8_lossy(&stdout).into_owned());
        }
    }
}

/// The process that holds a sandbox's memory: `size_mib` MiB of random
/// bytes (random, so that nothing merges or compresses them for free),
/// touched once, then idle. It runs in a child of its own session with its
/// stdio on `/dev/null`; the parent prints `ready` once the memory is in
/// place and exits, which ends the Start stream (and its connection).
const FILLER: &str = r#"import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    os.setsid()
    b = os.urandom(int(sys.argv[1]) << 20)
    null = os.open('/dev/null', os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(w, b'1')
    os.close(w)
    while True:
        time.sleep(3600)
os.close(w)
ok = os.read(r, 1) == b'1'
print('ready' if ok else 'failed')
sys.exit(0 if ok else 1)
"#;

/// Starts the memory filler and returns once its memory is allocated.
pub fn fill(t: Target, size_mib: u64) -> anyhow::Result<()> {
    let size = size_mib.to_string();
    let out = run(t, "/usr/bin/python3", &["-c", FILLER, &size]).context("starting the memory filler")?;
    if !out.contains("ready") {
        bail!("the memory filler said {out:?}");
    }
    Ok(())
}

/// The "first command" of a resumed sandbox: `/bin/true` through envd.
pub fn first_command(t: Target) -> anyhow::Result<()> {
    run(t, "/bin/true", &[]).map(drop)
}

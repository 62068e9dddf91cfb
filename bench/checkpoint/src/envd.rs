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
    read_head(&mut BufReader::new(s))
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

/// When [`run`] returns.
#[derive(Debug, Clone, Copy)]
pub enum Until<'a> {
    /// When the process ended (it must exit 0).
    End,
    /// As soon as its stdout contains this text; the process goes on
    /// running (envd keeps it when the stream's client goes away).
    Stdout(&'a str),
}

/// Starts `cmd args` as root through envd's `process.Process/Start`.
pub fn run(t: Target, cmd: &str, args: &[&str], until: Until) -> anyhow::Result<()> {
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
    let mut stdout = Vec::new();
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
        if let Some(out) = ev["data"]["stdout"].as_str() {
            stdout.extend(base64::engine::general_purpose::STANDARD.decode(out)?);
            if let Until::Stdout(want) = until {
                if String::from_utf8_lossy(&stdout).contains(want) {
                    return Ok(());
                }
            }
        }
        if ev.get("end").is_some() {
            // proto3 JSON leaves a zero exit code out.
            let code = ev["end"]["exitCode"].as_i64().unwrap_or(0);
            return match until {
                Until::End if code == 0 => Ok(()),
                _ => bail!("{cmd} ended with {}", ev["end"]),
            };
        }
    }
}

/// The process that holds a sandbox's memory: `size_mib` MiB of random
/// bytes (random, so that nothing merges or compresses them for free),
/// touched once, then idle. Prints `ready` when the memory is in place.
const FILLER: &str = "import os, sys, time\n\
b = os.urandom(int(sys.argv[1]) << 20)\n\
sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
while True: time.sleep(3600)\n";

/// Starts the memory filler and returns once its memory is allocated.
pub fn fill(t: Target, size_mib: u64) -> anyhow::Result<()> {
    let size = size_mib.to_string();
    run(t, "/usr/bin/python3", &["-c", FILLER, &size], Until::Stdout("ready")).context("starting the memory filler")
}

/// The "first command" of a resumed sandbox: `/bin/true` through envd.
pub fn first_command(t: Target) -> anyhow::Result<()> {
    run(t, "/bin/true", &[], Until::End)
}

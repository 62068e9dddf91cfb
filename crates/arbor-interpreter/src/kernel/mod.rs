//! One Jupyter kernel: its process, its connection file, and the client
//! side of its channels.
//!
//! Transport: `ipc` (ZeroMQ over unix sockets) where the kernel supports it
//! (ipykernel, bash_kernel), `tcp` on loopback for Deno, which only speaks tcp.
//! Both survive a checkpoint: CRIU dumps and restores unix sockets and, with
//! `--tcp-established`, established TCP connections as they were, so a
//! restored or cloned interpreter keeps talking to its kernels unchanged.

mod channels;
mod flush;
mod process;
mod run;

use crate::error::{Error, Result};
use crate::language::{self, KernelFamily};
use channels::Channels;
use jupyter_protocol::{ConnectionInfo, Transport};
use process::KernelProcess;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

/// How a kernel is launched and spoken to.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Program and arguments; the connection file's path is appended.
    pub argv: Vec<String>,
    /// ZeroMQ transport written into the connection file.
    pub transport: Transport,
    /// Which kind of kernel it is (decides the env-var code).
    pub family: KernelFamily,
}

/// A running kernel and its client connections.
#[derive(Debug)]
pub struct Kernel {
    spec: KernelSpec,
    run_dir: PathBuf,
    process: KernelProcess,
    channels: Channels,
    /// The sandbox-wide env vars this kernel has been given.
    globals: StdMutex<BTreeMap<String, String>>,
    /// Set when an execution could not be brought to an end: the kernel is
    /// replaced before the next one.
    broken: AtomicBool,
    /// Whether Deno's output marker works on this kernel (see `flush`).
    flushable: AtomicBool,
    keepalive: Duration,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Kernel {
    /// Starts a kernel in `cwd`, its connection file (and ipc sockets) in a
    /// fresh directory under `run_root`, and waits until it answers
    /// `kernel_info_request` with its iopub subscription live.
    pub async fn start(spec: &KernelSpec, run_root: &Path, cwd: &Path, keepalive: Duration) -> Result<Self> {
        let started = Instant::now();
        let run_dir = run_root.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(format!("create {}", run_dir.display()), e))?;
        let kernel = Self::start_in(spec, run_dir.clone(), cwd, keepalive).await;
        if kernel.is_err() {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        let kernel = kernel?;
        if let Some(code) = language::init_code(spec.family) {
            kernel.silent(code).await?;
        }
        tracing::info!(pid = kernel.process.pid(), "{:?} kernel ready in {:?}", spec.family, started.elapsed());
        Ok(kernel)
    }

    async fn start_in(spec: &KernelSpec, run_dir: PathBuf, cwd: &Path, keepalive: Duration) -> Result<Self> {
        let (ip, ports) = match spec.transport {
            // With ipc the "ip" is a path prefix and each port a suffix: <ip>-<port>.
            Transport::IPC => (run_dir.join("k").to_string_lossy().into_owned(), vec![1, 2, 3, 4, 5]),
            Transport::TCP => {
                let lo = std::net::IpAddr::from([127, 0, 0, 1]);
                (lo.to_string(), jupyter_zmq_client::peek_ports(lo, 5).await?)
            }
        };
        let info = ConnectionInfo {
            transport: spec.transport.clone(),
            ip,
            stdin_port: ports[0],
            control_port: ports[1],
            hb_port: ports[2],
            shell_port: ports[3],
            iopub_port: ports[4],
            signature_scheme: "hmac-sha256".into(),
            key: uuid::Uuid::new_v4().to_string(),
            kernel_name: None,
        };
        let conn_file = run_dir.join("connection.json");
        let json = serde_json::to_vec(&info).map_err(|e| Error::Kernel(e.to_string()))?;
        std::fs::write(&conn_file, json).map_err(|e| Error::io(format!("write {}", conn_file.display()), e))?;

        let process = KernelProcess::spawn(&spec.argv, &conn_file, cwd)?;
        wait_for_sockets(&process, &info, &ports, Duration::from_secs(60)).await?;
        let channels = Channels::connect(&info).await?;
        Ok(Kernel {
            spec: spec.clone(),
            run_dir,
            process,
            channels,
            globals: StdMutex::default(),
            broken: AtomicBool::new(false),
            flushable: AtomicBool::new(true),
            keepalive,
        })
    }

    /// Whether the kernel must be replaced: its process exited, its iopub
    /// socket died, or an execution could not be ended.
    pub fn is_dead(&self) -> bool {
        self.process.exited().is_some() || self.broken.load(Ordering::Relaxed) || self.channels.reader_stopped()
    }

    /// Kills the kernel process group now.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Kills the kernel and removes its connection file and sockets (at
    /// shutdown, when destructors will not run).
    pub fn kill_and_clean(&self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Waits until the kernel has bound all its sockets (the pure-Rust zeromq
/// client does not retry a connect to a missing ipc socket file as libzmq does).
async fn wait_for_sockets(
    process: &KernelProcess,
    info: &ConnectionInfo,
    ports: &[u16],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if all_bound(info, ports).await {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            return Err(Error::KernelDied(format!("kernel exited at start: {status}")));
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout("kernel sockets not bound".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether every channel's socket is bound by the kernel.
async fn all_bound(info: &ConnectionInfo, ports: &[u16]) -> bool {
    for port in ports {
        let bound = match info.transport {
            Transport::IPC => PathBuf::from(format!("{}-{port}", info.ip)).exists(),
            Transport::TCP => tokio::net::TcpStream::connect((info.ip.as_str(), *port)).await.is_ok(),
        };
        if !bound {
            return false;
        }
    }
    true
}

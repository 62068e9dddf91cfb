//! One Jupyter kernel process and the client side of its channels.
//!
//! The kernel is started with a connection file whose transport is `ipc`
//! (ZeroMQ over unix sockets): CRIU restores a paused or cloned sandbox with
//! `--tcp-close`, which would cut established localhost TCP connections between
//! this process and its kernels; unix sockets are restored as they were.

use crate::error::{Error, Result};
use crate::ndjson::{map_iopub, OutputLine};
use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, ExecutionState, InterruptRequest, JupyterMessage, JupyterMessageContent,
    KernelInfoRequest, ReplyStatus, Transport,
};
use jupyter_zmq_client::{ClientControlConnection, ClientShellConnection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Mutex};

/// How a kernel is launched: the argv before the connection-file path.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Program and arguments; the connection file's path is appended.
    pub argv: Vec<String>,
}

impl KernelSpec {
    /// ipykernel run by the given python interpreter.
    pub fn ipykernel(python: &str) -> Self {
        KernelSpec { argv: vec![python.into(), "-m".into(), "ipykernel_launcher".into(), "-f".into()] }
    }
}

/// iopub messages routed by the `msg_id` of the request that caused them.
type Routes = Arc<StdMutex<HashMap<String, mpsc::UnboundedSender<JupyterMessage>>>>;

/// A running kernel and its client connections.
pub struct Kernel {
    child: StdMutex<Child>,
    pid: Option<u32>,
    /// Held for a whole execution: one context runs one cell at a time, in order.
    shell: Mutex<ClientShellConnection>,
    control: Mutex<ClientControlConnection>,
    routes: Routes,
    reader: tokio::task::JoinHandle<()>,
    /// How often a silent execution sends a keepalive line.
    keepalive: Duration,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The zeromq connections have no Debug; the pid identifies the kernel.
        f.debug_struct("Kernel").field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.reader.abort();
        if let Ok(mut child) = self.child.lock() {
            let _ = child.start_kill();
        }
    }
}

impl Kernel {
    /// Starts a kernel in `cwd`, its sockets under `run_dir`, and waits until it
    /// answers `kernel_info_request` and its iopub subscription is live.
    pub async fn start(
        spec: &KernelSpec,
        run_dir: &Path,
        cwd: &Path,
        transport: Transport,
        keepalive: Duration,
    ) -> Result<Self> {
        tokio::fs::create_dir_all(run_dir).await.map_err(|e| Error::io(format!("create {}", run_dir.display()), e))?;
        let (ip, ports) = match transport {
            // With ipc the "ip" is a path prefix and each port a suffix: <ip>-<port>.
            Transport::IPC => (run_dir.join("k").to_string_lossy().into_owned(), vec![1, 2, 3, 4, 5]),
            // tcp is kept for comparison only: it does not survive a CRIU restore.
            Transport::TCP => {
                let lo = std::net::IpAddr::from([127, 0, 0, 1]);
                (lo.to_string(), jupyter_zmq_client::peek_ports(lo, 5).await?)
            }
        };
        let info = ConnectionInfo {
            transport: transport.clone(),
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
        tokio::fs::write(&conn_file, json).await.map_err(|e| Error::io(format!("write {}", conn_file.display()), e))?;

        let (program, args) = spec.argv.split_first().ok_or_else(|| Error::BadRequest("empty kernel argv".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .arg(&conn_file)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("spawn {program}"), e))?;
        let pid = child.id();

        wait_for_sockets(&mut child, &info, &ports, Duration::from_secs(60)).await?;

        let session = uuid::Uuid::new_v4().to_string();
        let mut iopub = jupyter_zmq_client::create_client_iopub_connection(&info, "", &session).await?;
        let identity = jupyter_zmq_client::peer_identity_for_session(&session)?;
        let mut shell =
            jupyter_zmq_client::create_client_shell_connection_with_identity(&info, &session, identity).await?;
        let control = jupyter_zmq_client::create_client_control_connection(&info, &session).await?;

        // ZeroMQ's slow-joiner problem: the SUB side may miss messages published
        // before its subscription reaches the kernel. Ask for kernel_info until an
        // iopub message arrives, as Jupyter clients do.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                return Err(Error::Timeout("no iopub traffic after kernel_info".into()));
            }
            shell.send(KernelInfoRequest {}.into()).await?;
            tokio::time::timeout(Duration::from_secs(10), shell.read())
                .await
                .map_err(|_| Error::Timeout("kernel_info_reply".into()))??;
            if let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), iopub.read()).await {
                msg?;
                break;
            }
        }

        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_iopub(iopub, routes.clone()));
        Ok(Kernel {
            child: StdMutex::new(child),
            pid,
            shell: Mutex::new(shell),
            control: Mutex::new(control),
            routes,
            reader,
            keepalive,
        })
    }

    /// Runs `code`, streaming its output lines into the returned receiver; the
    /// last line is `end_of_execution` (or `unexpected_end_of_execution`). If
    /// the receiver is dropped mid-run (client gone) the kernel is interrupted
    /// and the run is drained so the next one starts clean.
    pub fn execute(self: &Arc<Self>, code: String) -> mpsc::Receiver<OutputLine> {
        let (tx, rx) = mpsc::channel(64);
        let kernel = self.clone();
        tokio::spawn(async move {
            let last = match kernel.run(code, &tx).await {
                Ok(()) => OutputLine::EndOfExecution,
                Err(e) => {
                    tracing::warn!("execution failed: {e}");
                    OutputLine::UnexpectedEndOfExecution
                }
            };
            let _ = tx.send(last).await;
        });
        rx
    }

    async fn run(&self, code: String, tx: &mpsc::Sender<OutputLine>) -> Result<()> {
        let mut shell = self.shell.lock().await;
        let mut request = ExecuteRequest::new(code);
        request.allow_stdin = false;
        request.stop_on_error = true;
        let request: JupyterMessage = request.into();
        let msg_id = request.header.msg_id.clone();
        let (route_tx, mut iopub) = mpsc::unbounded_channel();
        self.routes.lock().map_err(|_| Error::Kernel("routes poisoned".into()))?.insert(msg_id.clone(), route_tx);
        let _unroute = Unroute { routes: self.routes.clone(), msg_id: msg_id.clone() };
        shell.send(request).await?;

        let reply = shell.read();
        tokio::pin!(reply);
        let mut reply_seen = false;
        let mut idle_seen = false;
        let mut client_gone = false;
        let mut ticker = tokio::time::interval(self.keepalive);
        ticker.tick().await;
        while !(reply_seen && idle_seen) {
            let line = tokio::select! {
                r = &mut reply, if !reply_seen => {
                    let r = r?;
                    reply_seen = true;
                    match r.content {
                        JupyterMessageContent::ExecuteReply(rep) if rep.status != ReplyStatus::Ok => {
                            tracing::debug!("execute_reply status {:?}", rep.status);
                        }
                        _ => {}
                    }
                    None
                }
                m = iopub.recv() => {
                    let m = m.ok_or_else(|| Error::KernelDied("iopub reader stopped".into()))?;
                    if let JupyterMessageContent::Status(s) = &m.content {
                        if s.execution_state == ExecutionState::Idle {
                            idle_seen = true;
                        }
                    }
                    map_iopub(&m.content, &m.header.date.to_rfc3339())
                }
                _ = ticker.tick() => {
                    // A dead kernel sends nothing more; the zeromq sockets just wait
                    // to reconnect, so check the process itself.
                    if let Some(status) = self.exited() {
                        return Err(Error::KernelDied(format!("kernel exited: {status}")));
                    }
                    Some(OutputLine::Keepalive)
                }
                // Notice a closed response at once, not at the next line.
                _ = tx.closed(), if !client_gone => {
                    client_gone = true;
                    tracing::info!("client went away; interrupting the kernel");
                    self.interrupt().await?;
                    None
                }
            };
            if let Some(line) = line {
                if !client_gone && tx.send(line).await.is_err() {
                    client_gone = true;
                    tracing::info!("client went away; interrupting the kernel");
                    self.interrupt().await?;
                }
            }
        }
        Ok(())
    }

    /// The kernel's exit status, if it has exited.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().ok().and_then(|mut c| c.try_wait().ok().flatten())
    }

    /// Interrupts the running cell: `interrupt_request` on the control channel,
    /// and SIGINT to the kernel process if no reply comes within a second (a
    /// kernelspec may say `interrupt_mode: signal`).
    pub async fn interrupt(&self) -> Result<()> {
        let mut control = self.control.lock().await;
        control.send(InterruptRequest {}.into()).await?;
        match tokio::time::timeout(Duration::from_secs(1), control.read()).await {
            Ok(reply) => {
                reply?;
                tracing::debug!("interrupted via control channel");
                Ok(())
            }
            Err(_) => {
                tracing::debug!("no interrupt_reply; sending SIGINT");
                self.sigint()
            }
        }
    }

    fn sigint(&self) -> Result<()> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = self.pid.ok_or_else(|| Error::KernelDied("kernel has no pid".into()))?;
        let pid = i32::try_from(pid).map_err(|_| Error::Kernel("pid out of range".into()))?;
        kill(Pid::from_raw(pid), Signal::SIGINT).map_err(|e| Error::io("SIGINT kernel", std::io::Error::from(e)))
    }
}

/// Removes an execution's iopub route when the execution ends, however it ends.
struct Unroute {
    routes: Routes,
    msg_id: String,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.msg_id);
        }
    }
}

/// Waits until the kernel has bound all its sockets (the pure-Rust zeromq
/// client does not retry a connect to a missing ipc socket file as libzmq does).
async fn wait_for_sockets(child: &mut Child, info: &ConnectionInfo, ports: &[u16], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if all_bound(info, ports).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
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

/// Reads iopub forever and hands each message to the execution that caused it.
async fn read_iopub(mut iopub: jupyter_zmq_client::ClientIoPubConnection, routes: Routes) {
    loop {
        let msg = match iopub.read().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("iopub read: {e}");
                // A malformed message is skipped; a dead socket ends the reader
                // (the senders drop, and running executions end unexpectedly).
                if matches!(e, jupyter_zmq_client::RuntimeError::ZmqError(_)) {
                    return;
                }
                continue;
            }
        };
        let Some(parent) = msg.parent_header.as_ref().map(|h| h.msg_id.clone()) else {
            continue;
        };
        let route = routes.lock().ok().and_then(|r| r.get(&parent).cloned());
        if let Some(route) = route {
            let _ = route.send(msg);
        }
    }
}

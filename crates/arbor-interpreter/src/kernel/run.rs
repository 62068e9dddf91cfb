//! Running a cell: the execute request, the iopub lines it produces, silent
//! helper executions (env vars, init code) and interrupts.

use super::channels::{read_reply, Channels};
use super::Kernel;
use crate::error::{Error, Result};
use crate::language::{env_after, env_before, EnvPlan, KernelFamily};
use crate::ndjson::{map_iopub, OutputLine};
use jupyter_protocol::{
    ExecuteRequest, ExecutionState, InterruptRequest, JupyterMessage, JupyterMessageContent, ReplyStatus,
};
use jupyter_zmq_client::ClientShellConnection;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long an interrupted cell may take to wind down before the kernel is
/// given up on and replaced.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How often a running cell checks that the kernel process is still there.
const EXIT_POLL: Duration = Duration::from_millis(250);
/// How long a silent helper execution may take.
const SILENT_LIMIT: Duration = Duration::from_secs(30);

impl Kernel {
    /// Runs `code` with `call_env` set for this run only (and the sandbox-wide
    /// `globals` applied if they changed), streaming its output lines into the
    /// returned receiver; the last line is `end_of_execution` (or
    /// `unexpected_end_of_execution`). If the receiver is dropped mid-run
    /// (client gone) the kernel is interrupted and the run is drained so the
    /// next one starts clean.
    pub fn execute(
        self: &Arc<Self>,
        code: String,
        call_env: BTreeMap<String, String>,
        globals: Arc<BTreeMap<String, String>>,
    ) -> mpsc::Receiver<OutputLine> {
        let (tx, rx) = mpsc::channel(64);
        let kernel = self.clone();
        tokio::spawn(async move {
            let last = match kernel.run(code, call_env, &globals, &tx).await {
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

    async fn run(
        &self,
        code: String,
        call: BTreeMap<String, String>,
        globals: &BTreeMap<String, String>,
        tx: &mpsc::Sender<OutputLine>,
    ) -> Result<()> {
        let ch = &self.channels;
        let mut shell = ch.shell.lock().await;
        let plan = EnvPlan { globals: self.new_globals(globals), call };
        if let Some(before) = env_before(self.spec.family, &plan) {
            silent_on(&mut shell, before).await?;
            if let Ok(mut applied) = self.globals.lock() {
                applied.extend(plan.globals.clone());
            }
        }
        let result = self.run_cell(ch, &mut shell, code, tx).await;
        if let Some(after) = env_after(self.spec.family, &plan) {
            if let Err(e) = silent_on(&mut shell, after).await {
                tracing::warn!("restoring env vars: {e}");
            }
        }
        result
    }

    /// The sandbox-wide variables that differ from what the kernel has.
    fn new_globals(&self, globals: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let Ok(applied) = self.globals.lock() else { return globals.clone() };
        globals.iter().filter(|(k, v)| applied.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    async fn run_cell(
        &self,
        ch: &Channels,
        shell: &mut ClientShellConnection,
        code: String,
        tx: &mpsc::Sender<OutputLine>,
    ) -> Result<()> {
        let mut request = ExecuteRequest::new(code);
        request.allow_stdin = false;
        request.stop_on_error = true;
        let request: JupyterMessage = request.into();
        let msg_id = request.header.msg_id.clone();
        let (route_tx, mut iopub) = mpsc::unbounded_channel();
        let _unroute = Unroute::add(ch, &msg_id, route_tx.clone())?;
        shell.send(request).await?;

        let mut client_gone = false;
        // A block, so the pending shell read ends before the flush uses the socket.
        {
            let reply = read_reply(shell, &msg_id);
            tokio::pin!(reply);
            let mut reply_seen = false;
            let mut idle_seen = false;
            let mut ticker = tokio::time::interval(self.keepalive);
            ticker.tick().await;
            let mut exit_poll = tokio::time::interval(EXIT_POLL);
            let drain = tokio::time::sleep(Duration::MAX / 4);
            tokio::pin!(drain);
            while !(reply_seen && idle_seen) {
                let line = tokio::select! {
                    r = &mut reply, if !reply_seen => {
                        let r = r?;
                        reply_seen = true;
                        if let JupyterMessageContent::ExecuteReply(rep) = &r.content {
                            if rep.status != ReplyStatus::Ok {
                                tracing::debug!("execute_reply status {:?}", rep.status);
                            }
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
                        map_iopub(&m.content, &m.header.date.to_rfc3339(), self.spec.family == KernelFamily::Deno)
                    }
                    _ = ticker.tick() => Some(OutputLine::Keepalive),
                    // A dead kernel sends nothing more; the zeromq sockets just wait
                    // to reconnect, so check the process itself (one waitpid).
                    _ = exit_poll.tick() => {
                        if let Some(status) = self.process.exited() {
                            return Err(Error::KernelDied(format!("kernel exited: {status}")));
                        }
                        None
                    }
                    // Notice a closed response at once, not at the next line.
                    _ = tx.closed(), if !client_gone => {
                        client_gone = true;
                        drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
                        self.interrupt(ch).await?;
                        None
                    }
                    _ = &mut drain => {
                        self.broken.store(true, Ordering::Relaxed);
                        return Err(Error::Timeout("interrupted cell did not end; the kernel will be replaced".into()));
                    }
                };
                if let Some(line) = line {
                    if !client_gone && tx.send(line).await.is_err() {
                        client_gone = true;
                        drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
                        self.interrupt(ch).await?;
                    }
                }
            }
        }
        if self.spec.family == KernelFamily::Deno && !client_gone {
            self.flush_deno(ch, shell, route_tx, &mut iopub, tx).await?;
        }
        Ok(())
    }

    /// Runs helper code without output or history (and without bumping the
    /// execution counter).
    pub(super) async fn silent(&self, code: &str) -> Result<()> {
        let ch = &self.channels;
        let mut shell = ch.shell.lock().await;
        silent_on(&mut shell, code.to_string()).await
    }

    /// Interrupts the running cell: `interrupt_request` on the control channel
    /// (ipykernel and Deno both answer it), and SIGINT to the kernel process if
    /// no reply comes within a second.
    async fn interrupt(&self, ch: &Channels) -> Result<()> {
        tracing::info!("client went away; interrupting the {:?} kernel", self.spec.family);
        let mut control = ch.control.lock().await;
        let request: JupyterMessage = InterruptRequest {}.into();
        let id = request.header.msg_id.clone();
        control.send(request).await?;
        let reply = async {
            loop {
                let msg = control.read().await?;
                if msg.parent_header.as_ref().is_some_and(|h| h.msg_id == id) {
                    return Ok::<_, Error>(());
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(1), reply).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("no interrupt_reply; sending SIGINT");
                self.process.sigint()
            }
        }
    }
}

/// Sends a silent execute request on `shell` and waits for its reply.
async fn silent_on(shell: &mut ClientShellConnection, code: String) -> Result<()> {
    let mut request = silent_request(code);
    request.stop_on_error = false;
    let request: JupyterMessage = request.into();
    let id = request.header.msg_id.clone();
    shell.send(request).await?;
    let reply = tokio::time::timeout(SILENT_LIMIT, read_reply(shell, &id))
        .await
        .map_err(|_| Error::Timeout("silent execution".into()))??;
    if let JupyterMessageContent::ExecuteReply(rep) = &reply.content {
        if rep.status != ReplyStatus::Ok {
            tracing::warn!("silent execution ended with {:?}", rep.status);
        }
    }
    Ok(())
}

/// An execute request of helper code: no output, no history, no stdin (and
/// the execution counter is not bumped).
pub(super) fn silent_request(code: String) -> ExecuteRequest {
    let mut request = ExecuteRequest::new(code);
    request.silent = true;
    request.store_history = false;
    request.allow_stdin = false;
    request
}

/// Removes an execution's iopub route when the execution ends, however it ends.
pub(super) struct Unroute<'a> {
    ch: &'a Channels,
    msg_id: String,
}

impl<'a> Unroute<'a> {
    /// Sends the iopub messages of request `msg_id` to `route` until the
    /// returned guard drops.
    pub(super) fn add(ch: &'a Channels, msg_id: &str, route: mpsc::UnboundedSender<JupyterMessage>) -> Result<Self> {
        ch.routes.lock().map_err(|_| Error::Kernel("routes poisoned".into()))?.insert(msg_id.to_string(), route);
        Ok(Unroute { ch, msg_id: msg_id.to_string() })
    }
}

impl Drop for Unroute<'_> {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.ch.routes.lock() {
            routes.remove(&self.msg_id);
        }
    }
}

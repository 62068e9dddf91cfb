//! The `process.Process` Connect service: starting processes with pipes or
//! a pty, streaming their output to any number of listeners, input, signals,
//! and the SIGCHLD reaper that also serves as PID 1's orphan reaper.

mod exit;
mod handle;
mod pty;
mod reaper;
pub mod rpc;
mod spawn;

use crate::{
    error::{Error, Result},
    state::Defaults,
    users::User,
};
use arbor_proto::process::{
    process_event::data_event::Output, process_selector::Selector, ProcessEvent, ProcessInfo, ProcessSelector,
    StartRequest,
};
use exit::Exit;
use handle::bytes_of;
pub use handle::Handle;
use nix::{
    errno::Errno,
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use reaper::Reaper;
use spawn::{spawn, Stdio3};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{net::unix::pipe, sync::mpsc, task::JoinHandle};

/// After a process exits, its output keeps being forwarded while it still
/// flows; once it pauses this long (e.g. a background grandchild holds the
/// pipe open) the end event is sent.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// Terminal size when a pty request gives none.
const DEFAULT_PTY: (u16, u16) = (80, 24);

/// All processes started through the process service.
#[derive(Debug, Default)]
pub struct Processes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Mutex<HashMap<u32, Arc<Handle>>>,
    reaper: Arc<Reaper>,
    emptied: tokio::sync::Notify,
}

impl Default for Inner {
    fn default() -> Self {
        Self { table: Mutex::default(), reaper: Reaper::global(), emptied: tokio::sync::Notify::new() }
    }
}

impl Inner {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Handle>>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Processes {
    /// Starts the process-wide SIGCHLD loop (idempotent).
    pub fn start_reaper(&self) -> std::io::Result<()> {
        self.inner.reaper.start()
    }

    /// Starts a process and returns it with a listener that sees all of its
    /// output. `lifetime` (the Start stream's timeout) kills it when it passes.
    pub fn start(
        &self,
        req: StartRequest,
        user: &User,
        defaults: &Defaults,
        lifetime: Option<Duration>,
    ) -> Result<(Arc<Handle>, mpsc::Receiver<ProcessEvent>)> {
        let config = req.process.ok_or_else(|| Error::InvalidArgument("StartRequest.process is required".into()))?;
        let stdio = match req.pty {
            Some(pty) => {
                let size = pty.size.unwrap_or_default();
                let dim = |v: u32, d: u16| {
                    if v == 0 {
                        d
                    } else {
                        u16::try_from(v).unwrap_or(u16::MAX)
                    }
                };
                Stdio3::Pty(dim(size.cols, DEFAULT_PTY.0), dim(size.rows, DEFAULT_PTY.1))
            }
            None => Stdio3::Pipes { stdin: req.stdin.unwrap_or(true) },
        };

        let mut guard = self.inner.reaper.lock();
        let spawned = spawn(&config, stdio, user, defaults)?;
        let exit = reaper::register(&mut guard, spawned.pid);
        drop(guard);
        let pid = spawned.pid;

        let setup = || -> std::io::Result<_> {
            let stdin = spawned.stdin.map(pipe::Sender::from_owned_fd).transpose()?;
            let stdout = spawned.stdout.map(pipe::Receiver::from_owned_fd).transpose()?;
            let stderr = spawned.stderr.map(pipe::Receiver::from_owned_fd).transpose()?;
            Ok((stdin, stdout, stderr))
        };
        let (stdin, stdout, stderr) = match setup() {
            Ok(fds) => fds,
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid_i32(pid)), Signal::SIGKILL);
                return Err(Error::io("wiring the process's pipes", e));
            }
        };
        let pty = spawned.pty.map(Arc::new);
        let handle = Arc::new(Handle::new(pid, req.tag.filter(|t| !t.is_empty()), config, stdin, pty.clone()));
        let listener = handle.subscribe().ok_or_else(|| Error::Internal("a new process cannot have ended".into()))?;
        self.inner.table().insert(pid, handle.clone());

        let flowed = Arc::new(AtomicU64::new(0));
        let sources =
            [stdout.map(|r| Source::Pipe(r, Output::Stdout)), stderr.map(|r| Source::Pipe(r, Output::Stderr))]
                .into_iter()
                .chain([pty.map(Source::Pty)])
                .flatten();
        let readers = sources.map(|source| pump(handle.clone(), source, flowed.clone())).collect();
        tokio::spawn(supervise(self.inner.clone(), handle.clone(), exit, lifetime, readers, flowed));
        Ok((handle, listener))
    }

    /// Finds a running process by pid or tag.
    pub fn find(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Handle>> {
        let table = self.inner.table();
        match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => {
                table.get(pid).cloned().ok_or_else(|| Error::NotFound(format!("process with pid {pid} not found")))
            }
            Some(Selector::Tag(tag)) => table
                .values()
                .find(|h| h.tag.as_deref() == Some(tag.as_str()))
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("process with tag '{tag}' not found"))),
            None => Err(Error::InvalidArgument("a process selector (pid or tag) is required".into())),
        }
    }

    /// Every running process.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut all: Vec<ProcessInfo> = self.inner.table().values().map(|h| h.info()).collect();
        all.sort_by_key(|p| p.pid);
        all
    }

    /// Sends `sig` to a process and everything in its process group.
    pub fn signal(&self, handle: &Handle, sig: Signal) {
        signal_group(handle.pid, sig);
    }

    /// Sends `sig` to every process envd started.
    pub fn signal_all(&self, sig: Signal) {
        let pids: Vec<u32> = self.inner.table().keys().copied().collect();
        for pid in pids {
            signal_group(pid, sig);
        }
    }

    /// Resolves once no started process is running.
    pub async fn wait_all_exited(&self) {
        loop {
            let emptied = self.inner.emptied.notified();
            if self.inner.table().is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

fn signal_group(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid_i32(pid));
    // Every process is a session (and group) leader; if the group is gone
    // the leader may still be a zombie awaiting reaping, which is harmless.
    if let Err(Errno::ESRCH) = killpg(pid, sig) {
        let _ = kill(pid, sig);
    }
}

/// One output of a process: a pipe (stdout or stderr) or the pty master.
enum Source {
    Pipe(pipe::Receiver, fn(bytes::Bytes) -> Output),
    Pty(Arc<pty::PtyMaster>),
}

impl Source {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        match self {
            Source::Pipe(rx, _) => rx.read(buf).await,
            Source::Pty(pty) => pty.read(buf).await,
        }
    }

    fn event(&self, data: bytes::Bytes) -> Output {
        match self {
            Source::Pipe(_, kind) => kind(data),
            Source::Pty(_) => Output::Pty(data),
        }
    }
}

/// Forwards one output to the process's listeners until end-of-file.
fn pump(handle: Arc<Handle>, mut source: Source, flowed: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match source.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    flowed.fetch_add(n as u64, Ordering::Relaxed);
                    handle.publish(source.event(bytes_of(&buf[..n]))).await;
                }
            }
        }
    })
}

/// Waits for the exit (killing the process when its `lifetime` passes), lets
/// the remaining output drain, then ends every listener's stream and forgets
/// the process.
async fn supervise(
    inner: Arc<Inner>,
    handle: Arc<Handle>,
    mut exit: tokio::sync::oneshot::Receiver<Exit>,
    lifetime: Option<Duration>,
    readers: Vec<JoinHandle<()>>,
    flowed: Arc<AtomicU64>,
) {
    let exited = match lifetime {
        Some(lifetime) => tokio::time::timeout(lifetime, &mut exit).await.ok(),
        None => None,
    };
    let exit = match exited {
        Some(status) => status,
        None => {
            if lifetime.is_some() {
                tracing::info!(pid = handle.pid, "process lifetime (Connect-Timeout-Ms) elapsed; killing it");
                signal_group(handle.pid, Signal::SIGKILL);
            }
            exit.await
        }
    }
    .unwrap_or(Exit::Code(-1));
    let mut readers = std::pin::pin!(futures::future::join_all(readers));
    loop {
        let before = flowed.load(Ordering::Relaxed);
        if tokio::time::timeout(DRAIN_QUIET, &mut readers).await.is_ok() || flowed.load(Ordering::Relaxed) == before {
            break;
        }
    }
    let now_empty = {
        let mut table = inner.table();
        table.remove(&handle.pid);
        table.is_empty()
    };
    handle.finish(exit.end_event()).await;
    if now_empty {
        inner.emptied.notify_waiters();
    }
}

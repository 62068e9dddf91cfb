//! The SIGCHLD loop: the only place envd waits for children.
//!
//! It waits for *any* child, so as PID 1 it also reaps orphans re-parented
//! to envd. Exit statuses of processes envd started are handed to their
//! supervisors; the rest are dropped. Spawning takes the same lock, so a
//! child that exits at once is never reaped before its pid is registered.
//!
//! SIGCHLD and `waitpid(-1)` belong to the whole process, so there is one
//! reaper per process, on a thread of its own: it outlives any runtime that
//! starts it (several envd routers in one test binary share it).

use super::exit::Exit;
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};
use tokio::sync::oneshot;

/// Pids waiting for their exit status.
#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

/// The reaper's lock, held while spawning and registering a child.
pub type SpawnGuard<'a> = MutexGuard<'a, HashMap<i32, oneshot::Sender<Exit>>>;

impl Reaper {
    /// Locks the table; spawn and [`register`] under this guard.
    pub fn lock(&self) -> SpawnGuard<'_> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process's reaper.
    pub fn global() -> Arc<Reaper> {
        static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
        REAPER.get_or_init(Arc::default).clone()
    }

    /// Starts the SIGCHLD loop on its own thread; later calls do nothing.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
        let reaper = self.clone();
        STARTED
            .get_or_init(move || {
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("arbor-reaper".into())
                    .spawn(move || reaper.run(ready_tx))
                    .map_err(|e| e.to_string())?;
                ready_rx.recv().map_err(|e| e.to_string())?
            })
            .clone()
            .map_err(std::io::Error::other)
    }

    /// The reaper thread: a small runtime for the SIGCHLD stream.
    fn run(self: Arc<Self>, ready: std::sync::mpsc::Sender<Result<(), String>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(format!("reaper runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(format!("SIGCHLD handler: {e}")));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            loop {
                self.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
    }

    /// Reaps every child that has exited.
    fn reap(&self) {
        let mut waiting = self.lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    let (Some(pid), Some(exit)) = (status.pid(), Exit::from_wait(status)) else {
                        continue;
                    };
                    match waiting.remove(&pid.as_raw()) {
                        Some(tx) => {
                            let _ = tx.send(exit);
                        }
                        None => tracing::debug!(pid = pid.as_raw(), "reaped an orphan"),
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waitpid failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Registers `pid` under the spawn guard; the receiver gets its exit.
pub fn register(guard: &mut SpawnGuard<'_>, pid: u32) -> oneshot::Receiver<Exit> {
    let (tx, rx) = oneshot::channel();
    guard.insert(i32::try_from(pid).unwrap_or(i32::MAX), tx);
    rx
}

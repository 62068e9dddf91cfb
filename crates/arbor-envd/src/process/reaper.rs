//! The SIGCHLD loop: the only place envd waits for children.
//!
//! It waits for *any* child, so as PID 1 it also reaps orphans re-parented
//! to envd. Exit statuses of processes envd started are handed to their
//! supervisors; the rest are dropped. Spawning takes the same lock, so a
//! child that exits at once is never reaped before its pid is registered.

use super::exit::Exit;
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
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

    /// Starts the SIGCHLD loop on the current tokio runtime.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = self.clone();
        tokio::spawn(async move {
            loop {
                reaper.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
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

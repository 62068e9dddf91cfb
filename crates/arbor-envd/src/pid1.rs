//! Duties of a sandbox's PID 1: orphans are reaped by the process service's
//! SIGCHLD loop (it waits for any child, not only its own); here, SIGTERM and
//! SIGINT are forwarded to every process before envd exits.

use crate::state::Envd;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::{sync::Arc, time::Duration};
use tokio::signal::unix::{signal, SignalKind};

/// How long children get to exit after SIGTERM before they are killed.
const GRACE: Duration = Duration::from_secs(5);
/// How long open streams get to finish once every process is gone.
pub const STREAM_DRAIN: Duration = Duration::from_secs(1);

/// Whether envd is the init process of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Resolves when envd should stop: on SIGTERM or SIGINT, after forwarding
/// SIGTERM to its processes, giving them [`GRACE`] to exit, and killing
/// those that did not (an interactive shell ignores SIGTERM), so nothing
/// outlives envd on a host either.
pub async fn shutdown_signal(envd: Arc<Envd>) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; envd will not forward them");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: forwarding SIGTERM to all processes");
    envd.processes.signal_all(Signal::SIGTERM);
    if is_pid1() {
        // Everything in the namespace, including orphans envd never started.
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, envd.processes.wait_all_exited()).await.is_err() {
        tracing::warn!("processes still running after {GRACE:?}; killing them");
        envd.processes.signal_all(Signal::SIGKILL);
        let _ = tokio::time::timeout(STREAM_DRAIN, envd.processes.wait_all_exited()).await;
    }
}

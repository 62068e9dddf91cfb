//! Duties of a sandbox's PID 1: orphans are reaped by the process service's
//! SIGCHLD loop (it waits for any child, not only its own); here, SIGTERM and
//! SIGINT are forwarded to every process before envd exits.

use crate::state::Envd;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::{sync::Arc, time::Duration};
use tokio::signal::unix::{signal, SignalKind};

/// How long children get to exit after SIGTERM before envd stops anyway.
const GRACE: Duration = Duration::from_secs(5);

/// Whether envd is the init process of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Resolves when envd should stop: on SIGTERM or SIGINT, after forwarding
/// SIGTERM to its processes and giving them [`GRACE`] to exit.
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
    let _ = tokio::time::timeout(GRACE, envd.processes.wait_all_exited()).await;
}

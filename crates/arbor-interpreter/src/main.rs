//! `arbor-interpreter`: the code-interpreter companion process of a sandbox.
//! Serves the SDK's code-interpreter protocol on port 49999 and runs the code
//! in Jupyter kernels it starts and talks to over ZeroMQ.

mod error;
mod kernel;
mod ndjson;
mod server;

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "arbor-interpreter", about = "Code-interpreter server backed by Jupyter kernels")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:49999")]
    listen: SocketAddr,
    /// Python interpreter that has ipykernel installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where kernels' connection files and ipc sockets live.
    #[arg(long, default_value = "/run/arbor-interpreter")]
    run_dir: PathBuf,
    /// Working directory of the default contexts.
    #[arg(long, default_value = "/home/user")]
    cwd: PathBuf,
    /// ZeroMQ transport to the kernels: `ipc` (unix sockets, survives a CRIU
    /// restore with --tcp-close) or `tcp` (for comparison only).
    #[arg(long, default_value = "ipc", value_parser = ["ipc", "tcp"])]
    transport: String,
    /// Seconds between keepalive lines on a silent execution.
    #[arg(long, default_value_t = 30)]
    keepalive_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), error::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let started = std::time::Instant::now();
    let python = kernel::Kernel::start(
        &kernel::KernelSpec::ipykernel(&args.python),
        &args.run_dir.join("python"),
        &args.cwd,
        if args.transport == "tcp" { jupyter_protocol::Transport::TCP } else { jupyter_protocol::Transport::IPC },
        Duration::from_secs(args.keepalive_secs.max(1)),
    )
    .await?;
    tracing::info!("python kernel ready in {:?}", started.elapsed());
    let app = server::router(server::AppState { python: Arc::new(python) });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| error::Error::io(format!("bind {}", args.listen), e))?;
    tracing::info!("listening on {}", args.listen);
    // On SIGTERM/SIGINT stop serving and return, so the kernels are dropped and
    // killed (kill_on_drop) instead of being left behind as orphans.
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| error::Error::io("serve", e))?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

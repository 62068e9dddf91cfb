//! `arbor-envd` binary entry point.

use anyhow::Context;
use arbor_envd::{config::Config, pid1, server, state::Envd};
use axum::serve::ListenerExt;
use clap::Parser;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ARBOR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    // Two workers: envd shares the sandbox's CPUs with the user's work, and
    // two keep streaming and a blocking file operation from starving each other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let envd = Arc::new(Envd::new(&config));
    envd.processes.start_reaper().context("installing the SIGCHLD handler")?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr().unwrap_or(config.listen);
    // Streams are many small frames: without NODELAY, Nagle and delayed ACKs
    // add ~40 ms to every short command.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    tracing::info!(
        listen = %local,
        pid1 = pid1::is_pid1(),
        version = arbor_proto::ENVD_VERSION,
        "arbor-envd serving"
    );
    let shutdown = pid1::shutdown_signal(envd.clone());
    axum::serve(listener, server::router(envd)).with_graceful_shutdown(shutdown).await.context("serving")?;
    Ok(())
}

//! `arbor-interpreter`: the code-interpreter companion process of a sandbox.
//! Serves the SDK's code-interpreter protocol on port 49999 and runs the code
//! in Jupyter kernels it starts and talks to over ZeroMQ. See
//! docs/code-interpreter.md.
//!
//! Crates: `jupyter-protocol` and `jupyter-zmq-client` (the runtimed
//! project's, maintained) give typed Jupyter messages, HMAC signing and the
//! client sockets over pure-Rust ZeroMQ, so no wire framing is hand-written
//! and the binary stays static; axum serves HTTP as envd does; reqwest asks
//! envd about access tokens.

mod auth;
mod config;
mod contexts;
mod error;
mod kernel;
mod language;
mod ndjson;
mod server;

use axum::serve::ListenerExt;
use clap::Parser;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), error::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = config::Args::parse();
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&args.run_dir)
        .map_err(|e| error::Error::io(format!("create {}", args.run_dir.display()), e))?;
    let contexts = Arc::new(contexts::Contexts::new(contexts::KernelSettings {
        specs: args.specs().await,
        run_root: args.run_dir.clone(),
        default_cwd: args.cwd.clone(),
        keepalive: args.keepalive(),
    }));
    tokio::spawn(shutdown_on_signal(contexts.clone()));

    // The default contexts' kernels start before the port opens: a template's
    // memory snapshot is taken once /health answers, and the first run_code
    // must not wait for a kernel start.
    let eager = args.eager.iter().filter(|l| !l.trim().is_empty()).map(|name| {
        let contexts = contexts.clone();
        async move {
            match language::Language::parse(Some(name)) {
                Ok(language) => {
                    if let Err(e) = contexts.default_for(language).await {
                        tracing::error!("default {language} context: {e}");
                    }
                }
                Err(name) => tracing::error!("--eager: unknown language {name}"),
            }
        }
    });
    futures::future::join_all(eager).await;
    tracing::info!("kernels ready in {:?}; available: {}", started.elapsed(), contexts.available());

    let state = server::AppState { contexts, auth: Arc::new(auth::Auth::new(args.envd())) };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| error::Error::io(format!("bind {}", args.listen), e))?;
    // Results are small NDJSON chunks: without NODELAY, Nagle holds the first
    // one back until the client's delayed ACK of the headers (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    tracing::info!("listening on {}", args.listen);
    axum::serve(listener, server::router(state)).await.map_err(|e| error::Error::io("serve", e))?;
    Ok(())
}

/// On the first SIGTERM or SIGINT: kill every kernel's process group and
/// exit at once (a graceful drain would wait for running cells).
async fn shutdown_on_signal(contexts: Arc<contexts::Contexts>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: killing kernels");
    contexts.kill_all();
    std::process::exit(0);
}

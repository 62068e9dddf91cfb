//! `arbor-envd` binary entry point.

use anyhow::Context;
use arbor_envd::{config::Config, pid1, server, state::Envd};
use axum::serve::ListenerExt;
use clap::Parser;
use std::{future::IntoFuture, sync::Arc};

fn main() -> anyhow::Result<()> {
    // Template builds run `arbor-envd untar ...` inside the build sandbox.
    if std::env::args().nth(1).as_deref() == Some(arbor_envd::untar::COMMAND) {
        return arbor_envd::untar::main(std::env::args().skip(2).collect());
    }
    tune_allocator();
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
        // File operations run on blocking threads; idle ones are let go
        // quickly so their stacks and caches do not linger in the footprint.
        .thread_keep_alive(std::time::Duration::from_millis(500))
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
    if let Some(fd) = config.ready_fd {
        signal_ready(fd);
    }
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
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let shutdown = {
        let envd = envd.clone();
        async move {
            pid1::shutdown_signal(envd).await;
            let _ = stopping_tx.send(true);
        }
    };
    let serve = axum::serve(listener, server::router(envd.clone())).with_graceful_shutdown(shutdown).into_future();
    // Graceful shutdown waits for open streams, and a watch or a connected
    // pty never ends by itself: give them a moment, then stop regardless.
    tokio::select! {
        served = serve => served.context("serving")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(pid1::STREAM_DRAIN).await;
        } => tracing::info!("streams still open after shutdown; closing them"),
    }
    Ok(())
}

/// Tells the launcher that envd listens. The descriptor is closed afterwards:
/// a checkpoint must find no host pipe in the sandbox.
fn signal_ready(fd: i32) {
    use std::{io::Write, os::fd::FromRawFd};
    // Only a descriptor the launcher left open is worth touching.
    // SAFETY: fcntl(F_GETFD) on any number is harmless.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 || fd <= 2 {
        tracing::warn!(fd, "ready descriptor is not open; not signalling");
        return;
    }
    // SAFETY: the launcher passed this descriptor to envd alone and nothing
    // else in this process uses it; the File owns and closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = pipe.write_all(b"R") {
        tracing::warn!(fd, "signalling readiness: {e}");
    }
}

/// envd lives in every sandbox, so its idle footprint counts more than the
/// last bit of allocation speed: few arenas, and large buffers (file chunks,
/// process output) mapped and returned to the kernel instead of cached in
/// the heap after a transfer.
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it runs before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

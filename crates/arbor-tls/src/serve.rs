//! The listeners: an axum router over HTTP/1.1 and HTTP/2, behind TLS (by
//! ALPN) or in the clear (HTTP/2 with prior knowledge), each connection
//! under the timeouts of [`crate::conn`].

use crate::{conn, Result, Timeouts};
use rustls::ServerConfig;
use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;

/// Serves `router` on `listener` behind TLS until `shutdown` completes, then
/// stops accepting and waits for open connections to finish, as
/// `axum::serve(..).with_graceful_shutdown(..)` does. HTTP/2 or HTTP/1.1 is
/// picked by ALPN; HTTP/1.1 upgrades (WebSocket) pass through to the router.
/// A client that has not finished its handshake within
/// [`Timeouts::handshake`] is dropped. A failed handshake is logged at debug
/// level only: scanners and clients that do not trust the CA make them all
/// the time.
pub async fn serve<F>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    timeouts: Timeouts,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    run(listener, Tls(TlsAcceptor::from(config)), router, timeouts, shutdown).await;
    Ok(())
}

/// Serves `router` on `listener` in the clear (HTTP/1.1, and HTTP/2 with
/// prior knowledge), with the same timeouts and graceful shutdown as
/// [`serve`]; what `axum::serve` does, plus the timeouts.
pub async fn serve_plain<F>(listener: TcpListener, router: axum::Router, timeouts: Timeouts, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    run(listener, Plain, router, timeouts, shutdown).await;
    Ok(())
}

/// What turns an accepted TCP connection into the stream HTTP is spoken on.
trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

#[derive(Clone)]
struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}

#[derive(Clone)]
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<Self::Io> {
        self.0.accept(tcp).await
    }
}

async fn run<H, F>(listener: TcpListener, handshake: H, router: axum::Router, timeouts: Timeouts, shutdown: F)
where
    H: Handshake,
    F: Future<Output = ()> + Send + 'static,
{
    // Connections hold a receiver: `true` asks them to shut down gracefully,
    // and the server is done when the last one has dropped its receiver.
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin,
                    // as axum::serve does.
                    tracing::error!("listener: accept: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Streams are many small frames: without NODELAY, Nagle and delayed
        // ACKs add tens of milliseconds to short commands.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        tokio::spawn(connection(tcp, peer, handshake.clone(), router.clone(), timeouts, stopped.clone()));
    }
    drop(listener);
    stop.send_replace(true);
    drop(stopped);
    stop.closed().await;
}

async fn connection<H: Handshake>(
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: H,
    router: axum::Router,
    timeouts: Timeouts,
    stopped: watch::Receiver<bool>,
) {
    let io = match tokio::time::timeout(timeouts.handshake, handshake.handshake(tcp)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
        Err(_) => return tracing::debug!("TLS handshake with {peer}: timed out"),
    };
    // The client's address, for the API's failed-key limits (as axum's `ConnectInfo`).
    let router = router.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
    conn::serve(io, router, timeouts, stopped).await;
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

//! The TLS listener: an axum router over HTTP/1.1 and HTTP/2 by ALPN.

use crate::Result;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::ServerConfig;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished its handshake by then is dropped, so
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` behind TLS until `shutdown` completes, then
/// stops accepting and waits for open connections to finish, as
/// `axum::serve(..).with_graceful_shutdown(..)` does. HTTP/2 or HTTP/1.1 is
/// picked by ALPN; HTTP/1.1 upgrades (WebSocket) pass through to the router.
/// A failed handshake is logged at debug level only: scanners and clients
/// that do not trust the CA make them all the time.
pub async fn serve<F>(listener: TcpListener, config: Arc<ServerConfig>, router: axum::Router, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin,
                    // as axum::serve does.
                    tracing::error!("TLS listener: accept: {e}");
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
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone().map_request(host_from_authority));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
                Err(_) => return tracing::debug!("TLS handshake with {peer}: timed out"),
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!("TLS connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// HTTP/2 requests carry the host in the `:authority` pseudo-header, which
/// hyper puts in the URI, not in a `Host` header. Routing on `Host`
/// (`<port>-<id>.<domain>`) must see the same thing over both versions.
fn host_from_authority<B>(mut req: http::Request<B>) -> http::Request<B> {
    if !req.headers().contains_key(http::header::HOST) {
        let host = req.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = host {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    req
}

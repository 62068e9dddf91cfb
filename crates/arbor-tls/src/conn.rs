//! One accepted connection served with the listener's timeouts.
//!
//! hyper bounds a slow HTTP/1.1 request head with `header_read_timeout`, but
//! it starts that timer the moment a keep-alive connection goes idle, so one
//! value would be both the header and the idle timeout; and nothing bounds a
//! client that connects and sends nothing (hyper-util's version detection
//! waits forever) or an idle HTTP/2 connection. So a watchdog per
//! connection, fed by a count of requests in flight and by the first byte
//! read after the connection went idle, keeps the deadlines:
//!
//! * no request yet: the first request head must be in within
//!   [`Timeouts::header_read`] of the accept (or of the TLS handshake);
//! * between HTTP/1.1 requests: once the next head has started arriving, it
//!   must be complete within [`Timeouts::header_read`];
//! * no request in flight for [`Timeouts::idle`]: a graceful shutdown
//!   (HTTP/1.1: close; HTTP/2: GOAWAY), then a close if the client still
//!   holds the connection without a request.
//!
//! hyper's own `header_read_timeout` stays on as a backstop at `idle +
//! header_read`, which the watchdog always beats; it still bounds a head the
//! watchdog cannot see start (pipelined behind a request in flight).
//!
//! A connection with a request in flight is never timed out, however quiet:
//! a `commands.run` stream, a file watch or a download may say nothing for
//! minutes. Upgraded connections (WebSocket) leave hyper and this watchdog
//! at the `101`.

use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    Request, Response, Version,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{watch, Notify},
};
use tower::ServiceExt;

/// How long a client may take to send a request head, and a new connection
/// its first request. The SDKs and browsers write a whole head at once, so
/// only a client that is not really sending a request (a slowloris, a port
/// scan) ever comes near it; 10 s still leaves room for a slow mobile link.
/// Stricter than nginx's `client_header_timeout` (60 s) and hyper's own
/// default (30 s), which would let a slowloris hold a connection that long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection with no request in flight stays open (HTTP/1.1
/// keep-alive, HTTP/2 without open streams); in the range of nginx (75 s)
/// and AWS ALB (60 s). The Python SDKs pool connections for 300 s but check
/// before each reuse whether the server has closed one (httpcore sees the
/// EOF), so a close between requests costs them a reconnect, not a failed
/// request; Node's fetch drops idle connections after 4 s itself. A load
/// balancer in front must have a shorter idle timeout than this (raise
/// `--http-idle-timeout` otherwise), or it may send a request into a
/// connection just being closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a TLS client may take to finish its handshake (from the accept):
/// one that connects and never sends a ClientHello is dropped, so half-open
/// connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The timeouts of a listener; [`Default`] gives the constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
    /// See [`HANDSHAKE_TIMEOUT`]; unused by plain listeners.
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { header_read: HEADER_READ_TIMEOUT, idle: IDLE_TIMEOUT, handshake: HANDSHAKE_TIMEOUT }
    }
}

/// Serves `router` on `io` until the connection ends, the watchdog closes it,
/// or (after `shutdown` changes) a graceful shutdown completes.
pub(crate) async fn serve<T>(io: T, router: axum::Router, timeouts: Timeouts, mut shutdown: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { io, activity: activity.clone() });
    let service = Counted { router, activity: activity.clone() };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.idle + timeouts.header_read);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let next = activity.next(&timeouts, closing);
        if let Some((at, action)) = next {
            if Instant::now() >= at {
                match action {
                    Action::Close => return tracing::debug!("closing a connection: no request head in time"),
                    Action::Shutdown => {
                        conn.as_mut().graceful_shutdown();
                        activity.closing_since.store(activity.now(), Ordering::Relaxed);
                        closing = true;
                        continue;
                    }
                }
            }
        }
        let deadline = next.map(|(at, _)| tokio::time::Instant::from_std(at));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection: {e}");
                }
                return;
            }
            // A closed sender (the server is gone) means the same.
            _ = shutdown.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                activity.closing_since.store(activity.now(), Ordering::Relaxed);
                closing = true;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// What the watchdog does when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Drop the connection: nothing has been served on it that a graceful
    /// close could finish (a head that never completes, no request at all).
    Close,
    /// Start a graceful shutdown (HTTP/2: GOAWAY).
    Shutdown,
}

/// What the watchdog knows of a connection. Times are milliseconds since
/// `start` plus one, so that 0 can mean "none".
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    http2: AtomicBool,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// The first read after `idle_since` (0: nothing read since).
    first_read: AtomicU64,
    /// When a graceful shutdown started (0: not closing).
    closing_since: AtomicU64,
    /// Wakes the watchdog when any of the above changes its deadline.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(1),
            first_read: AtomicU64::new(0),
            closing_since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    fn at(&self, stamp: u64, after: Duration) -> Instant {
        self.start + Duration::from_millis(stamp.saturating_sub(1)) + after
    }

    /// A request head has arrived; the guard ends the request when dropped.
    fn begin(self: &Arc<Self>, version: Version) -> Guard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        Guard(self.clone())
    }

    fn read(&self) {
        if self.first_read.load(Ordering::Relaxed) == 0
            && self.first_read.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// The next deadline and what to do then; `None` while a request is in
    /// flight.
    fn next(&self, t: &Timeouts, closing: bool) -> Option<(Instant, Action)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Relaxed) {
            return Some((self.at(1, t.header_read), Action::Close));
        }
        if closing {
            // Nothing is in flight, yet the connection has not closed after
            // its graceful shutdown (a head arriving after it, say).
            let since = self.closing_since.load(Ordering::Relaxed).max(self.idle_since.load(Ordering::Relaxed));
            return Some((self.at(since, t.header_read), Action::Close));
        }
        // Over HTTP/1.1 a byte after the last response starts the next head.
        // Over HTTP/2 pings and window updates are not requests: only
        // streams count.
        if !self.http2.load(Ordering::Relaxed) {
            let first = self.first_read.load(Ordering::Acquire);
            if first != 0 {
                return Some((self.at(first, t.header_read), Action::Close));
            }
        }
        Some((self.at(self.idle_since.load(Ordering::Relaxed), t.idle), Action::Shutdown))
    }
}

/// One request in flight, from its head to the end of its response body.
#[derive(Debug)]
struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now(), Ordering::Relaxed);
            a.first_read.store(0, Ordering::Release);
            a.changed.notify_one();
        }
    }
}

/// The connection's I/O, noting the first read after each idle start.
#[derive(Debug)]
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router as a hyper service that counts requests in flight.
#[derive(Debug, Clone)]
struct Counted {
    router: axum::Router,
    activity: Arc<Activity>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin(req.version());
        let router = self.router.clone();
        Box::pin(async move {
            let resp = router.oneshot(host_from_authority(req.map(axum::body::Body::new))).await?;
            Ok(resp.map(|body| axum::body::Body::new(Guarded { body, _guard: guard })))
        })
    }
}

/// A response body that holds its request's [`Guard`] until hyper drops it
/// (sent, or the client went away).
struct Guarded {
    body: axum::body::Body,
    _guard: Guard,
}

impl Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    // Passed on so that hyper still sends `Content-Length` for sized bodies.
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// HTTP/2 requests carry the host in the `:authority` pseudo-header, which
/// hyper puts in the URI, not in a `Host` header. Routing on `Host`
/// (`<port>-<id>.<domain>`) must see the same thing over both versions.
fn host_from_authority<B>(mut req: Request<B>) -> Request<B> {
    if !req.headers().contains_key(http::header::HOST) {
        let host = req.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = host {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    req
}

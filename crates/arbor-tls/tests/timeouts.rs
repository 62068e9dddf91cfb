//! The listeners' timeouts, with short values so the suite is quick: slow
//! or missing request heads and TLS handshakes are cut, idle connections
//! are closed, and requests in flight are never cut however quiet they are
//! (a response that pauses longer than every timeout, an upgraded tunnel,
//! an HTTP/2 stream).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_tls::{Certs, Timeouts};
use axum::{body::Body, extract::Request, response::Response, routing::get, Router};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const HEADER: Duration = Duration::from_millis(600);
const IDLE: Duration = Duration::from_millis(1500);
const HANDSHAKE: Duration = Duration::from_millis(800);
/// Slack for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(700);
/// Longer than every timeout above.
const SILENCE: Duration = Duration::from_millis(2500);

fn timeouts() -> Timeouts {
    Timeouts { header_read: HEADER, idle: IDLE, handshake: HANDSHAKE }
}

/// A body that sends "one", stays silent for [`SILENCE`], then sends "two".
fn slow_body() -> Body {
    let chunks = futures::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok::<_, std::io::Error>("one\n"), 1)),
            1 => {
                tokio::time::sleep(SILENCE).await;
                Some((Ok("two\n"), 2))
            }
            _ => None,
        }
    });
    Body::from_stream(chunks)
}

/// Answers `101` and echoes whatever the client sends on the upgraded connection.
async fn echo_upgrade(mut req: Request) -> Response {
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 64];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/slow", get(|| async { slow_body() }))
        .route("/upgrade", get(echo_upgrade))
}

async fn plain() -> SocketAddr {
    plain_with(timeouts()).await
}

async fn plain_with(timeouts: Timeouts) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(arbor_tls::serve_plain(listener, router(), timeouts, std::future::pending()));
    addr
}

/// Reads until the server closes the connection; returns what it sent and
/// how long after `since` the close came.
async fn until_closed(sock: &mut TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, since.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for 20 s"),
        }
    }
}

/// Whether the server still has the connection open after `wait` (nothing to read, no EOF).
async fn still_open(sock: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(wait, sock.read(&mut buf)).await.is_err()
}

fn assert_closed_around(took: Duration, timeout: Duration, what: &str) {
    eprintln!("{what}: closed after {took:?} (timeout {timeout:?})");
    assert!(took >= timeout - Duration::from_millis(50), "{what}: closed too early, after {took:?}");
    assert!(took <= timeout + MARGIN, "{what}: closed after {took:?}, timeout {timeout:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let addr = plain().await;
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let (got, took) = until_closed(&mut sock, start).await;
    assert!(got.is_empty());
    assert_closed_around(took, HEADER, "nothing sent");
}

#[tokio::test]
async fn a_partial_request_line_is_closed() {
    let addr = plain().await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    sock.write_all(b"GET / HT").await.unwrap();
    let (_, took) = until_closed(&mut sock, start).await;
    assert_closed_around(took, HEADER, "partial request line");
}

#[tokio::test]
async fn headers_trickling_in_are_cut_at_the_header_timeout() {
    let addr = plain().await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // One header byte every 100 ms, as a slowloris does: each byte is
    // progress, but the head as a whole never completes.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sock.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), trickle).await;
    assert_closed_around(start.elapsed(), HEADER, "trickled headers");
}

#[tokio::test]
async fn idle_keep_alive_lasts_the_idle_timeout_and_a_slow_second_head_the_header_timeout() {
    let addr = plain().await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_start = Instant::now();
    // Idle, longer than the header timeout: still open (no head has started).
    assert!(still_open(&mut sock, HEADER + Duration::from_millis(200)).await);
    let (_, took) = until_closed(&mut sock, idle_start).await;
    assert_closed_around(took, IDLE, "idle keep-alive");

    // A second request whose head starts but never ends: the header timeout
    // runs from its first byte.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let _ = sock.read(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    sock.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let (_, took) = until_closed(&mut sock, start).await;
    assert_closed_around(took, HEADER, "slow second head");
}

#[tokio::test]
async fn each_timeout_holds_when_idle_is_the_shorter() {
    let (header, idle) = (Duration::from_millis(1200), Duration::from_millis(500));
    let addr = plain_with(Timeouts { header_read: header, idle, handshake: HANDSHAKE }).await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    sock.write_all(b"GET / HT").await.unwrap();
    let (_, took) = until_closed(&mut sock, start).await;
    assert_closed_around(took, header, "partial request line, short idle");

    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let _ = sock.read(&mut buf).await.unwrap();
    let (_, took) = until_closed(&mut sock, Instant::now()).await;
    assert_closed_around(took, idle, "idle keep-alive, short idle");
}

#[tokio::test]
async fn a_quiet_response_is_not_cut_over_http1_and_http2() {
    let addr = plain().await;
    let url = format!("http://{addr}/slow");
    for client in [
        reqwest::Client::builder().http1_only().build().unwrap(),
        reqwest::Client::builder().http2_prior_knowledge().build().unwrap(),
    ] {
        let start = Instant::now();
        let resp = client.get(&url).send().await.unwrap();
        let version = resp.version();
        assert_eq!(resp.text().await.unwrap(), "one\ntwo\n", "{version:?}");
        assert!(start.elapsed() >= SILENCE, "{version:?}");
    }
}

#[tokio::test]
async fn an_upgraded_connection_is_not_timed_out() {
    let addr = plain().await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf[..n]));
    tokio::time::sleep(SILENCE).await;
    sock.write_all(b"still here").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"still here");
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_after_the_idle_timeout() {
    use http_body_util::{BodyExt, Empty};
    let addr = plain().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/")).body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    let idle_start = Instant::now();
    // The connection ends when the server's GOAWAY arrives and it closes.
    tokio::time::timeout(Duration::from_secs(20), conn).await.unwrap().unwrap().unwrap();
    assert_closed_around(idle_start.elapsed(), IDLE, "idle HTTP/2");
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_and_waits_for_open_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(arbor_tls::serve_plain(listener, router(), timeouts(), async {
        let _ = stopped.await;
    }));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let _ = idle.read(&mut buf).await.unwrap();
    let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let (_, took) = until_closed(&mut idle, Instant::now()).await;
    assert!(took < Duration::from_millis(300), "an idle connection is closed at once on shutdown: {took:?}");
    let body = slow.await.unwrap().unwrap().text().await.unwrap();
    assert_eq!(body, "one\ntwo\n", "a request in flight finishes");
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn tls_handshakes_that_never_finish_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::load_or_create(dir.path(), "arbor.test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = arbor_tls::serve(listener, certs.server_config(), router(), timeouts(), std::future::pending());
    tokio::spawn(server);

    // No ClientHello at all.
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let (got, took) = until_closed(&mut sock, start).await;
    assert!(got.is_empty());
    assert_closed_around(took, HANDSHAKE, "no ClientHello");

    // The first bytes of a TLS record (handshake, TLS 1.0 record version,
    // length 512), then nothing.
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let (_, took) = until_closed(&mut sock, start).await;
    assert_closed_around(took, HANDSHAKE, "partial ClientHello");

    // A finished handshake and then no request: the header timeout, from
    // the end of the handshake.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(certs.ca_path().unwrap()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("x.arbor.test").unwrap();
    let mut tls = connector.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap();
    // rustls reports a close without close_notify as an error; either is a close.
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_closed_around(start.elapsed(), HEADER, "TLS without a request");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.ca_path().unwrap()).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("x.arbor.test", addr)
        .http1_only()
        .build()
        .unwrap();
    // A request works, and a quiet response over TLS is not cut either.
    let resp = client.get(format!("https://x.arbor.test:{}/slow", addr.port())).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "one\ntwo\n");
}

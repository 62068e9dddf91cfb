//! The proxy in front of a real envd process: routing, error shapes,
//! streaming in both directions, activity reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use common::{envelope, envelopes, serve_proxy, Envd, TableResolver};
use futures::StreamExt;
use serde_json::{json, Value};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

const TOKEN: &str = "tok-alpha";

/// Request headers of a test case.
type Headers = &'static [(&'static str, &'static str)];

async fn setup(activity_every: Duration) -> (Envd, Arc<TableResolver>, SocketAddr) {
    let envd = Envd::start(TOKEN).await;
    let resolver = Arc::new(TableResolver::default());
    resolver.add("alpha", TOKEN, envd.addr);
    resolver.add("paused", "tok-paused", envd.addr);
    // Nothing listens there: bind, read the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    resolver.add("dead", "tok-dead", dead);
    let proxy = serve_proxy(resolver.clone(), activity_every).await;
    (envd, resolver, proxy)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[tokio::test]
async fn routes_by_id_header_or_by_token() {
    let (_envd, resolver, proxy) = setup(Duration::ZERO).await;
    let client = reqwest::Client::new();
    let list = |headers: &[(&str, &str)]| {
        let mut req = client
            .post(url(proxy, "/process.Process/List"))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body("{}");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };

    for headers in [
        &[("Novita-Sandbox-Id", "alpha"), ("X-Access-Token", TOKEN)][..],
        &[("E2b-Sandbox-Id", "alpha"), ("X-Access-Token", TOKEN)][..],
        &[("X-Access-Token", TOKEN)][..],
    ] {
        let resp = list(headers).await.unwrap();
        assert_eq!(resp.status(), 200, "{headers:?}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert!(body.is_object(), "{body}");
    }
    assert_eq!(
        *resolver.lookups.lock().unwrap(),
        [r#"Id("alpha")"#, r#"Id("alpha")"#, r#"Token("tok-alpha")"#],
        "the id header wins; the token names the sandbox only when no id is sent"
    );
    // Start and end of each of the three exchanges.
    assert!(resolver.activity_count("alpha") >= 6, "{}", resolver.activity_count("alpha"));

    // The token goes through untouched and envd checks it itself.
    let resp = list(&[("Novita-Sandbox-Id", "alpha"), ("X-Access-Token", "wrong")]).await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated", "{body}");
}

#[tokio::test]
async fn proxy_errors_have_the_shapes_the_sdks_map() {
    let (_envd, _resolver, proxy) = setup(Duration::ZERO).await;
    let client = reqwest::Client::new();
    let get = |path: &str, headers: &[(&'static str, &'static str)]| {
        let mut req = client.get(url(proxy, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let rpc = |content_type: &'static str, body: Vec<u8>, headers: &[(&'static str, &'static str)]| {
        let mut req = client
            .post(url(proxy, "/process.Process/Start"))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };

    // Plain envd paths: HTTP status + {"code": <int>, "message"}.
    let cases: [(Headers, u16, &str); 5] = [
        (&[], 401, "names no sandbox"),
        (&[("Novita-Sandbox-Id", "nope")], 502, "sandbox nope not found"),
        (&[("X-Access-Token", "tok-nobody")], 502, "no sandbox has this access token"),
        (&[("Novita-Sandbox-Id", "paused")], 409, "sandbox paused is paused"),
        (&[("Novita-Sandbox-Id", "dead")], 502, "sandbox dead is not reachable: cannot connect to envd"),
    ];
    for (headers, status, message) in cases {
        let resp = get("/files?path=/etc/hostname", headers).await.unwrap();
        assert_eq!(resp.status(), status, "{headers:?}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], status, "{body}");
        assert!(body["message"].as_str().unwrap().contains(message), "{body}");
    }

    // Connect unary: HTTP status + Connect error JSON.
    let resp = rpc("application/json", b"{}".to_vec(), &[("Novita-Sandbox-Id", "nope")]).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"code": "unavailable", "message": "sandbox nope not found"}));
    let resp = rpc("application/json", b"{}".to_vec(), &[("Novita-Sandbox-Id", "dead")]).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");

    // Connect streams: 200 and one end-stream frame with the error.
    for (id, code) in [("nope", "unavailable"), ("dead", "unavailable"), ("paused", "failed_precondition")] {
        let resp = rpc("application/connect+json", envelope(&json!({})), &[("Novita-Sandbox-Id", id)]).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/connect+json");
        let mut buf = resp.bytes().await.unwrap().to_vec();
        let frames = envelopes(&mut buf);
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].0, 0x02);
        assert_eq!(frames[0].1["error"]["code"], code, "{frames:?}");
        assert!(frames[0].1["error"]["message"].as_str().unwrap().contains(id));
    }
}

/// A command printing a line every 300 ms: its lines must come out of the
/// proxy as they are printed, not all at once at the end.
#[tokio::test]
async fn server_stream_arrives_incrementally_and_counts_as_activity() {
    let (_envd, resolver, proxy) = setup(Duration::from_millis(100)).await;
    let start = json!({
        "process": {"cmd": "/bin/bash", "args": ["-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done"]},
    });
    let began = Instant::now();
    let resp = reqwest::Client::new()
        .post(url(proxy, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("keepalive-ping-interval", "50")
        .header("novita-sandbox-id", "alpha")
        .header("x-access-token", TOKEN)
        .body(envelope(&start))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let before = resolver.activity_count("alpha");

    let (mut buf, mut lines, mut end) = (Vec::new(), Vec::new(), None);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        for (flags, msg) in envelopes(&mut buf) {
            if flags == 0x02 {
                end = Some(msg);
            } else if let Some(out) = msg["event"]["data"]["stdout"].as_str() {
                let text = String::from_utf8(B64.decode(out).unwrap()).unwrap();
                lines.extend(text.lines().map(|l| (l.to_string(), began.elapsed())));
            }
        }
    }
    assert_eq!(end, Some(json!({})));
    let names: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(names, ["line1", "line2", "line3", "line4", "line5"]);
    let spread = lines[4].1 - lines[0].1;
    assert!(spread >= Duration::from_millis(900), "lines arrived together ({spread:?}): buffered");

    // ~1.5 s of open stream at one report per 100 ms, plus the end.
    let during = resolver.activity_count("alpha") - before;
    assert!(during >= 8, "only {during} activity reports during the stream");
}

/// A client stream (StreamInput) reaches envd message by message: the
/// process echoes the first line while the request body is still open.
#[tokio::test]
async fn client_stream_is_forwarded_as_it_is_written() {
    let (_envd, _resolver, proxy) = setup(Duration::ZERO).await;
    let client = reqwest::Client::new();
    let start = json!({
        "process": {"cmd": "/bin/cat", "args": []},
        "tag": "echo",
        "stdin": true,
    });
    let resp = client
        .post(url(proxy, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("x-access-token", TOKEN)
        .body(envelope(&start))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut output = resp.bytes_stream();
    let mut buf = Vec::new();
    // Wait for the start event so the tag exists.
    'started: while let Some(chunk) = output.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        for (_, msg) in envelopes(&mut buf) {
            if msg["event"]["start"]["pid"].is_number() {
                break 'started;
            }
        }
    }

    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let input = client
        .post(url(proxy, "/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .header("x-access-token", TOKEN)
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let input = tokio::spawn(input);
    let stdin = |text: &str| Ok(envelope(&json!({"data": {"input": {"stdin": B64.encode(text)}}})));
    tx.unbounded_send(Ok(envelope(&json!({"start": {"process": {"tag": "echo"}}})))).unwrap();
    tx.unbounded_send(stdin("ping\n")).unwrap();

    let mut echoed = String::new();
    let read_echo = async {
        while let Some(chunk) = output.next().await {
            buf.extend_from_slice(&chunk.unwrap());
            for (_, msg) in envelopes(&mut buf) {
                if let Some(out) = msg["event"]["data"]["stdout"].as_str() {
                    echoed.push_str(&String::from_utf8(B64.decode(out).unwrap()).unwrap());
                }
            }
            if echoed.contains("ping\n") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_echo)
        .await
        .expect("stdin did not reach envd while the stream was open");
    assert!(!input.is_finished(), "the input stream is still open");

    // Ending the input stream completes the call (cat keeps running).
    let mut end = envelope(&json!({}));
    end[0] = 0x02;
    tx.unbounded_send(Ok(end)).unwrap();
    drop(tx);
    let resp = tokio::time::timeout(Duration::from_secs(10), input).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut reply = resp.bytes().await.unwrap().to_vec();
    assert_eq!(envelopes(&mut reply).last().map(|f| f.0), Some(0x02));
}

/// envd dying in the middle of a server stream: the client gets a proper
/// end-stream `unavailable` naming the sandbox instead of a cut connection.
#[tokio::test]
async fn stream_cut_by_a_dying_envd_ends_with_unavailable() {
    let (mut envd, _resolver, proxy) = setup(Duration::ZERO).await;
    let start = json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo started; sleep 3"]}});
    let resp = reqwest::Client::new()
        .post(url(proxy, "/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("novita-sandbox-id", "alpha")
        .header("x-access-token", TOKEN)
        .body(envelope(&start))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let mut killed = false;
    let read = async {
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.expect("the proxy ends the stream cleanly"));
            for frame in envelopes(&mut buf) {
                if frame.1["event"]["data"]["stdout"].is_string() && !killed {
                    envd.kill();
                    killed = true;
                }
                frames.push(frame);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.unwrap();
    assert!(killed, "{frames:?}");
    let (flags, last) = frames.last().unwrap();
    assert_eq!(*flags, 0x02, "{frames:?}");
    assert_eq!(last["error"]["code"], "unavailable", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("sandbox alpha is not reachable"), "{last}");
}

/// HTTP/2 with prior knowledge from the client (the SDKs use HTTP/1.1, other
/// clients may not): the proxy still talks HTTP/1.1 to envd.
#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    use http_body_util::{BodyExt, Full};
    let (_envd, _resolver, proxy) = setup(Duration::ZERO).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let request = |content_type: &str, body: Vec<u8>| {
        http::Request::post(url(proxy, "/process.Process/Start"))
            .header("content-type", content_type)
            .header("novita-sandbox-id", "alpha")
            .header("x-access-token", TOKEN)
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let start = json!({"process": {"cmd": "/bin/echo", "args": ["over-h2"]}});
    let resp = client.request(request("application/connect+json", envelope(&start))).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let mut buf = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    let frames = envelopes(&mut buf);
    let out: String = frames
        .iter()
        .filter_map(|(_, m)| m["event"]["data"]["stdout"].as_str())
        .map(|s| String::from_utf8(B64.decode(s).unwrap()).unwrap())
        .collect();
    assert_eq!(out, "over-h2\n");
    assert_eq!(frames.last().map(|f| (f.0, f.1.clone())), Some((0x02, json!({}))));
}

/// What envd receives: a raw listener in envd's place records the request
/// heads and counts connections.
#[tokio::test]
async fn forwarded_heads_and_pooled_connections() {
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, a) = (heads.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: head, then a Content-Length body.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = sock.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        let n = sock.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    buf.drain(..end + len);
                    h.lock().unwrap().push(head);
                    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-Envd: 1\r\n\r\nok";
                    sock.write_all(resp.as_bytes()).await.unwrap();
                }
            });
        }
    });

    let resolver = Arc::new(TableResolver::default());
    resolver.add("raw", "tok-raw", upstream);
    resolver.add("raw2", "tok-raw2", upstream);
    let proxy = serve_proxy(resolver, Duration::ZERO).await;
    let client = reqwest::Client::new();
    let send = |id: &'static str| {
        client
            .post(url(proxy, "/files?path=a%20b"))
            .header("novita-sandbox-id", id)
            .header("x-access-token", "tok")
            .header("authorization", "Basic cm9vdDo=")
            .header("connection", "keep-alive, x-drop-me")
            .header("x-drop-me", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-authorization", "secret")
            .header("expect", "100-continue")
            .header("x-custom", "kept")
            .body("hello")
            .send()
    };
    for id in ["raw", "raw", "raw2"] {
        let resp = send(id).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-envd"], "1");
        assert!(resp.headers().get("keep-alive").is_none());
        assert_eq!(resp.text().await.unwrap(), "ok");
    }

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3);
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("POST /files?path=a%20b HTTP/1.1\r\n"), "{head}");
        assert!(lower.contains(&format!("\r\nhost: {upstream}\r\n")), "{head}");
        assert!(!head.contains('@'), "the pool key leaked: {head}");
        for kept in ["x-access-token: tok", "authorization: basic cm9vdDo=", "novita-sandbox-id: raw", "x-custom: kept"]
        {
            assert!(lower.contains(&kept.to_ascii_lowercase()), "{kept} missing: {head}");
        }
        for gone in ["x-drop-me", "keep-alive:", "\r\nte:", "proxy-authorization", "expect:"] {
            assert!(!lower.contains(gone), "{gone} forwarded: {head}");
        }
    }
    // raw's two requests share a kept-alive connection; raw2 at the same
    // address gets its own.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

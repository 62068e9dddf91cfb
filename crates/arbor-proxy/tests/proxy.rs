//! The proxy in front of a real envd process: routing, the head envd
//! receives, connection reuse, and the proxy's own error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{envelope, envelopes, serve_proxy, setup, url, TableResolver, TOKEN};
use serde_json::{json, Value};
use std::{sync::Arc, time::Duration};

/// Request headers of a test case.
type Headers = &'static [(&'static str, &'static str)];

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
    let cases: [(Headers, u16, &str); 7] = [
        (&[], 401, "names no sandbox"),
        (&[("Novita-Sandbox-Id", "nope")], 502, "sandbox nope not found"),
        (&[("X-Access-Token", "tok-nobody")], 502, "no sandbox has this access token"),
        // A paused sandbox is named only to a request with its token; without
        // it (or with a wrong one) it is not found, like an unknown id.
        (&[("Novita-Sandbox-Id", "paused")], 502, "sandbox paused not found"),
        (&[("Novita-Sandbox-Id", "paused"), ("X-Access-Token", "tok-alpha")], 502, "sandbox paused not found"),
        (&[("Novita-Sandbox-Id", "paused"), ("X-Access-Token", "tok-paused")], 502, "sandbox paused is paused"),
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
    for (id, code) in [("nope", "unavailable"), ("dead", "unavailable"), ("paused", "unavailable")] {
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

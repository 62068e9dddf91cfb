//! Streaming through the proxy to a real envd: server streams arrive as
//! written, client streams are forwarded as written, a dying envd ends a
//! stream cleanly, HTTP/2 clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use common::{envelope, envelopes, setup, url, TOKEN};
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

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

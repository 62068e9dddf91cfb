//! The process service over real HTTP through paths the SDKs do not take:
//! the binary protobuf codec, client streaming (`StreamInput`), tags, and
//! malformed calls. The SDK suites under tests/ cover the JSON paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_proto::{
    connect::{envelope, EnvelopeDecoder, FLAG_END_STREAM},
    process::{
        process_event::{data_event::Output, Event},
        process_input::Input,
        process_selector::Selector,
        stream_input_request, ListResponse, ProcessConfig, ProcessInput, ProcessSelector, StartRequest, StartResponse,
        StreamInputRequest,
    },
};
use prost::Message;
use std::time::Duration;

const AS_ROOT: &str = "Basic cm9vdDo=";

fn bash(script: &str, tag: Option<&str>, stdin: bool) -> StartRequest {
    StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }),
        tag: tag.map(str::to_string),
        stdin: Some(stdin),
        ..Default::default()
    }
}

fn frames(body: &[u8]) -> Vec<(u8, bytes::Bytes)> {
    let mut dec = EnvelopeDecoder::default();
    dec.push(body);
    std::iter::from_fn(|| dec.next_envelope().unwrap().map(|e| (e.flags, e.payload))).collect()
}

async fn post(fx: &common::Fixture, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(fx.url(path))
        .header("content-type", content_type)
        .header("authorization", AS_ROOT)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Reads a stream response and returns its stdout and whether it ended cleanly.
async fn collect_proto_stream(resp: reqwest::Response) -> (Vec<u8>, Option<i32>, String) {
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let body = resp.bytes().await.unwrap();
    let (mut stdout, mut exit, mut end) = (Vec::new(), None, String::new());
    for (flags, payload) in frames(&body) {
        if flags & FLAG_END_STREAM != 0 {
            end = String::from_utf8_lossy(&payload).into_owned();
            continue;
        }
        match StartResponse::decode(payload).unwrap().event.and_then(|e| e.event) {
            Some(Event::Data(d)) => {
                if let Some(Output::Stdout(b)) = d.output {
                    stdout.extend_from_slice(&b);
                }
            }
            Some(Event::End(e)) => exit = Some(e.exit_code),
            _ => {}
        }
    }
    (stdout, exit, end)
}

#[tokio::test]
async fn binary_protobuf_codec() {
    let fx = common::Fixture::start(None, &[]).await;
    let req = bash("echo proto-$((6*7))", None, false).encode_to_vec();
    let resp = post(&fx, "/process.Process/Start", "application/connect+proto", envelope(0, &req).to_vec()).await;
    assert_eq!(resp.status(), 200);
    let (stdout, exit, end) = collect_proto_stream(resp).await;
    assert_eq!(String::from_utf8(stdout).unwrap(), "proto-42\n");
    assert_eq!(exit, Some(0));
    assert_eq!(end, "{}", "the end-stream frame is JSON in both codecs");

    let resp = post(&fx, "/process.Process/List", "application/proto", Vec::new()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/proto");
    let list = ListResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(list.processes.is_empty());
}

#[tokio::test]
async fn stream_input_feeds_a_process_found_by_tag() {
    let fx = common::Fixture::start(None, &[]).await;
    // A reader that exits after two lines; found through its tag.
    let start = bash("read a; read b; echo \"$a+$b\"", Some("reader"), true).encode_to_vec();
    let url = fx.url("/process.Process/Start");
    let output = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/connect+proto")
            .header("authorization", AS_ROOT)
            .body(envelope(0, &start).to_vec())
            .send()
            .await
            .unwrap();
        collect_proto_stream(resp).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let selector = Some(ProcessSelector { selector: Some(Selector::Tag("reader".into())) });
    let msgs = [
        stream_input_request::Event::Start(stream_input_request::StartEvent { process: selector }),
        stream_input_request::Event::Data(stream_input_request::DataEvent {
            input: Some(ProcessInput { input: Some(Input::Stdin(b"left\n".to_vec().into())) }),
        }),
        stream_input_request::Event::Keepalive(stream_input_request::KeepAlive {}),
        stream_input_request::Event::Data(stream_input_request::DataEvent {
            input: Some(ProcessInput { input: Some(Input::Stdin(b"right\n".to_vec().into())) }),
        }),
    ];
    let mut body = Vec::new();
    for m in msgs {
        body.extend_from_slice(&envelope(0, &StreamInputRequest { event: Some(m) }.encode_to_vec()));
    }
    body.extend_from_slice(&envelope(FLAG_END_STREAM, b"{}"));
    let resp = post(&fx, "/process.Process/StreamInput", "application/connect+proto", body).await;
    assert_eq!(resp.status(), 200);
    let reply = frames(&resp.bytes().await.unwrap());
    assert_eq!(reply.last().map(|(f, p)| (*f, p.clone())), Some((FLAG_END_STREAM, bytes::Bytes::from_static(b"{}"))));

    let (stdout, exit, _) = tokio::time::timeout(Duration::from_secs(10), output).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(stdout).unwrap(), "left+right\n");
    assert_eq!(exit, Some(0));
}

#[tokio::test]
async fn stream_input_without_start_is_refused() {
    let fx = common::Fixture::start(None, &[]).await;
    let data = StreamInputRequest {
        event: Some(stream_input_request::Event::Data(stream_input_request::DataEvent {
            input: Some(ProcessInput { input: Some(Input::Stdin(b"x".to_vec().into())) }),
        })),
    };
    let resp = post(
        &fx,
        "/process.Process/StreamInput",
        "application/connect+proto",
        envelope(0, &data.encode_to_vec()).to_vec(),
    )
    .await;
    let reply = frames(&resp.bytes().await.unwrap());
    let end = String::from_utf8_lossy(&reply.last().unwrap().1).into_owned();
    assert!(end.contains("failed_precondition"), "{end}");
}

#[tokio::test]
async fn malformed_calls_get_clear_errors() {
    let fx = common::Fixture::start(None, &[]).await;
    let resp = post(&fx, "/process.Process/List", "text/plain", b"{}".to_vec()).await;
    assert_eq!(resp.status(), 415);
    let resp = post(&fx, "/process.Process/Nope", "application/json", b"{}".to_vec()).await;
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unimplemented");
    let resp = post(&fx, "/process.Process/SendSignal", "application/json", b"{\"process\":".to_vec()).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");
    let resp = post(&fx, "/process.Process/SendSignal", "application/json", b"{}".to_vec()).await;
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument", "{body}");
    // A streaming method called as unary is a Connect error too.
    let resp = post(&fx, "/process.Process/Start", "application/json", b"{}".to_vec()).await;
    assert_eq!(resp.status(), 400);
    // An empty start request names no process.
    let resp = post(&fx, "/process.Process/Start", "application/connect+json", envelope(0, b"{}").to_vec()).await;
    assert_eq!(resp.status(), 200);
    let end = frames(&resp.bytes().await.unwrap()).pop().unwrap();
    assert_eq!(end.0, FLAG_END_STREAM);
    assert!(String::from_utf8_lossy(&end.1).contains("invalid_argument"));
}

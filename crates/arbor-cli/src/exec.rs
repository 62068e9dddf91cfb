//! `arbor sandbox exec`: runs a command in a sandbox through the server's
//! envd proxy with Connect server streaming (`process.Process/Start`), the
//! way the SDKs' `commands.run` does, and relays its output as it arrives.

use crate::client::Client;
use crate::error::{root_cause, Error, Result};
use arbor_proto::connect::{envelope, EnvelopeDecoder};
use arbor_proto::process::process_selector::Selector;
use arbor_proto::process::{ProcessConfig, ProcessSelector, SendSignalRequest, Signal, StartRequest};
pub use arbor_proto::stream::{parse_frame, Frame};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// A shell command line, run as `/bin/bash -l -c COMMAND`.
    pub command: String,
    /// OS user inside the sandbox; `None` = envd's default user.
    pub user: Option<String>,
    /// Working directory; `None` = the user's home.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub envs: BTreeMap<String, String>,
}

/// The CLI's exit code for a finished process: its own code, or 128 + the
/// signal number for a process killed by a well-known signal, like a shell.
pub fn exit_code_of(exit_code: i32, exited: bool, status: &str) -> i32 {
    if exited && (0..=255).contains(&exit_code) {
        return exit_code;
    }
    let signo = match status.strip_prefix("signal: ").map(|s| s.trim_end_matches(" (core dumped)")) {
        Some("hangup") => 1,
        Some("interrupt") => 2,
        Some("quit") => 3,
        Some("aborted") => 6,
        Some("killed") => 9,
        Some("segmentation fault") => 11,
        Some("broken pipe") => 13,
        Some("terminated") => 15,
        _ => return 1,
    };
    128 + signo
}

/// The `StartRequest` JSON body, enveloped.
pub fn start_body(req: &ExecRequest) -> Bytes {
    let start = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), req.command.clone()],
            envs: req.envs.clone().into_iter().collect(),
            cwd: req.cwd.clone(),
        }),
        ..Default::default()
    };
    // Serialising a generated message cannot fail; fall back to `{}` anyway.
    let json = serde_json::to_vec(&start).unwrap_or_else(|_| b"{}".to_vec());
    envelope(0, &json)
}

/// Runs `req` in sandbox `id`, writing its output to `out`/`err` as it
/// arrives; returns the exit code the CLI should exit with. When `cancel`
/// completes first (Ctrl-C), the process is killed with SIGKILL, since envd
/// keeps a process running when its stream goes away, and 130 is returned.
pub async fn exec(
    client: &Client,
    id: &str,
    req: &ExecRequest,
    out: &mut dyn Write,
    err: &mut dyn Write,
    cancel: impl Future<Output = ()>,
) -> Result<i32> {
    let info = client.info(id).await?;
    let token = info.get("envdAccessToken").and_then(Value::as_str).filter(|t| !t.is_empty());

    let url = client.url("/process.Process/Start");
    let mut http = envd_request(client, &url, id, token)
        .header("Content-Type", "application/connect+json")
        .header("Keepalive-Ping-Interval", "50");
    if let Some(user) = &req.user {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
        http = http.header("Authorization", format!("Basic {basic}"));
    }
    let resp = http.body(start_body(req)).send().await.map_err(|e| client.transport_error(&e, &url))?;
    if !resp.status().is_success() {
        return Err(stream_http_error(resp).await);
    }

    let mut body = resp.bytes_stream();
    let mut decoder = EnvelopeDecoder::default();
    let (mut pid, mut ended): (Option<u32>, Option<i32>) = (None, None);
    let output = |e: std::io::Error| Error::Output(e);
    tokio::pin!(cancel);
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = &mut cancel => {
                if let (Some(pid), None) = (pid, ended) {
                    if let Err(e) = kill_process(client, id, token, pid).await {
                        // Best effort: say so, but the user asked to stop.
                        let _ = writeln!(err, "error: could not kill process {pid} in {id}: {e}");
                    }
                }
                return Ok(130);
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| Error::Http { url: url.clone(), reason: root_cause(&e) })?;
        decoder.push(&chunk);
        while let Some(env) = decoder.next_envelope().map_err(|e| bad(&url, e.to_string()))? {
            match parse_frame(&env).map_err(|r| bad(&url, r))? {
                Frame::Started(p) => pid = Some(p),
                Frame::Stdout(b) => write_flush(out, &b).map_err(output)?,
                Frame::Stderr(b) => write_flush(err, &b).map_err(output)?,
                Frame::Ended { exit_code, exited, status } => {
                    ended = Some(exit_code_of(exit_code, exited, &status));
                }
                Frame::StreamEnd(Some((code, message))) => return Err(Error::Rpc { code, message }),
                Frame::StreamEnd(None) => {
                    return ended.ok_or_else(|| bad(&url, "the stream ended before the command did".into()));
                }
                Frame::Other => {}
            }
        }
    }
    // Tolerate a missing end-stream frame (as the Python SDK does) once the
    // process has reported its end.
    ended.ok_or_else(|| bad(&url, "the connection closed before the command ended".into()))
}

/// A request to envd through the server's proxy, addressed to sandbox `id`.
fn envd_request(client: &Client, url: &str, id: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let req = client
        .request(Method::POST, url)
        .header("Connect-Protocol-Version", "1")
        .header("Novita-Sandbox-Id", id)
        .header("Novita-Sandbox-Port", "49983");
    match token {
        Some(token) => req.header("X-Access-Token", token),
        None => req,
    }
}

/// `process.Process/SendSignal` with SIGKILL for `pid` (unary Connect call).
async fn kill_process(client: &Client, id: &str, token: Option<&str>, pid: u32) -> Result<()> {
    let url = client.url("/process.Process/SendSignal");
    let msg = SendSignalRequest {
        process: Some(ProcessSelector { selector: Some(Selector::Pid(pid)) }),
        signal: Signal::Sigkill as i32,
    };
    let body = serde_json::to_vec(&msg).map_err(|e| bad(&url, e.to_string()))?;
    let resp = envd_request(client, &url, id, token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| client.transport_error(&e, &url))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(stream_http_error(resp).await)
    }
}

fn bad(url: &str, reason: String) -> Error {
    Error::BadResponse { url: url.to_string(), reason }
}

/// Writes and flushes, treating a closed pipe (`| head`) as success.
fn write_flush(w: &mut dyn Write, data: &[u8]) -> std::io::Result<()> {
    match w.write_all(data).and_then(|()| w.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A non-2xx answer to an envd request: a Connect error body
/// (`{"code":"not_found",...}`) or the API's own (`{"code":404,...}`).
async fn stream_http_error(resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    if let Some(code) = parsed.as_ref().and_then(|v| v.get("code")).and_then(Value::as_str) {
        let message = parsed.as_ref().and_then(|v| v.get("message")).and_then(Value::as_str).unwrap_or_default();
        return Error::Rpc { code: code.to_string(), message: message.to_string() };
    }
    crate::client::api_error(status, &body, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_proto::connect::{end_stream, Envelope, FLAG_END_STREAM};

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut dec = EnvelopeDecoder::default();
        let mut frames = Vec::new();
        // Feed one byte at a time: envelopes split anywhere must still parse.
        for b in bytes {
            dec.push(&[*b]);
            while let Some(env) = dec.next_envelope().unwrap() {
                frames.push(parse_frame(&env).unwrap());
            }
        }
        assert!(!dec.has_partial());
        frames
    }

    #[test]
    fn parses_a_whole_stream() {
        let mut wire = Vec::new();
        for json in [
            r#"{"event":{"start":{"pid":42}}}"#,
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#,
            r#"{"event":{"keepalive":{}}}"#,
            r#"{"event":{"data":{"stderr":"b29wcw=="}}}"#,
            r#"{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3","error":"exit status 3"}}}"#,
        ] {
            wire.extend_from_slice(&envelope(0, json.as_bytes()));
        }
        wire.extend_from_slice(&end_stream(None));
        assert_eq!(
            decode_all(&wire),
            vec![
                Frame::Started(42),
                Frame::Stdout(Bytes::from_static(b"hi\n")),
                Frame::Other,
                Frame::Stderr(Bytes::from_static(b"oops")),
                Frame::Ended { exit_code: 3, exited: true, status: "exit status 3".into() },
                Frame::StreamEnd(None),
            ]
        );
    }

    #[test]
    fn end_stream_errors_are_reported() {
        let wire = envelope(FLAG_END_STREAM, br#"{"error":{"code":"unauthenticated","message":"bad token"}}"#);
        assert_eq!(decode_all(&wire), vec![Frame::StreamEnd(Some(("unauthenticated".into(), "bad token".into())))]);
        let wire = envelope(FLAG_END_STREAM, b"");
        assert_eq!(decode_all(&wire), vec![Frame::StreamEnd(None)]);
        let env = Envelope { flags: 0, payload: Bytes::from_static(b"not json") };
        assert!(parse_frame(&env).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code_of(0, true, "exit status 0"), 0);
        assert_eq!(exit_code_of(42, true, "exit status 42"), 42);
        assert_eq!(exit_code_of(-1, false, "signal: killed"), 137);
        assert_eq!(exit_code_of(-1, false, "signal: segmentation fault (core dumped)"), 139);
        assert_eq!(exit_code_of(-1, false, "signal: user defined signal 1"), 1);
    }

    #[test]
    fn start_body_is_an_enveloped_start_request() {
        let req = ExecRequest { command: "echo hi".into(), cwd: Some("/tmp".into()), ..Default::default() };
        let body = start_body(&req);
        assert_eq!(body[0], 0);
        assert_eq!(u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize, body.len() - 5);
        let v: Value = serde_json::from_slice(&body[5..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "cwd": "/tmp"}})
        );
    }
}

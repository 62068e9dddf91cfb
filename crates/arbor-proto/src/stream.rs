//! The response stream of `process.Process/Start` (and `Connect`) as a
//! client sees it, decoded frame by frame: shared by the CLI's `exec` and
//! the template builder, which both run commands through envd.

use crate::connect::{Envelope, FLAG_END_STREAM};
use crate::process::process_event::{data_event::Output, Event};
use crate::process::StartResponse;
use bytes::Bytes;
use serde_json::Value;

/// One decoded frame of a `process.Process/Start` response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The process started with this pid.
    Started(u32),
    /// Output on stdout.
    Stdout(Bytes),
    /// Output on stderr.
    Stderr(Bytes),
    /// The process ended.
    Ended {
        /// Exit code (-1 when killed by a signal).
        exit_code: i32,
        /// Whether it exited (rather than being killed).
        exited: bool,
        /// Go-style status, e.g. `exit status 1`, `signal: killed`.
        status: String,
    },
    /// A keepalive or an event this CLI does not use.
    Other,
    /// The end-stream frame; `Some((code, message))` if it carries an error.
    StreamEnd(Option<(String, String)>),
}

/// Decodes one envelope of the stream.
pub fn parse_frame(env: &Envelope) -> std::result::Result<Frame, String> {
    if env.flags & FLAG_END_STREAM != 0 {
        let v: Value = if env.payload.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&env.payload).map_err(|e| format!("bad end-stream frame: {e}"))?
        };
        let error = v.get("error").filter(|e| !e.is_null()).map(|e| {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            (Some(field("code")).filter(|c| !c.is_empty()).unwrap_or_else(|| "unknown".into()), field("message"))
        });
        return Ok(Frame::StreamEnd(error));
    }
    let msg: StartResponse = serde_json::from_slice(&env.payload).map_err(|e| format!("bad stream message: {e}"))?;
    Ok(match msg.event.and_then(|e| e.event) {
        Some(Event::Start(s)) => Frame::Started(s.pid),
        Some(Event::Data(d)) => match d.output {
            Some(Output::Stdout(b)) | Some(Output::Pty(b)) => Frame::Stdout(b),
            Some(Output::Stderr(b)) => Frame::Stderr(b),
            None => Frame::Other,
        },
        Some(Event::End(e)) => Frame::Ended { exit_code: e.exit_code, exited: e.exited, status: e.status },
        Some(Event::Keepalive(_)) | None => Frame::Other,
    })
}

//! Maps Jupyter iopub/shell messages onto the NDJSON lines of `POST /execute`
//! (protocol notes §5.3). Pure: no I/O, so every rule is unit-tested here.

use jupyter_protocol::{JupyterMessageContent, Media, Stdio};
use serde::Serialize;
use serde_json::{Map, Value};

/// One line of the `/execute` stream. Serialised with a `type` tag; never empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputLine {
    /// Text the code wrote to stdout.
    Stdout {
        /// The text, as the kernel sent it (may hold several lines).
        text: String,
        /// ISO-8601 time from the kernel's message header.
        timestamp: String,
    },
    /// Text the code wrote to stderr.
    Stderr {
        /// The text.
        text: String,
        /// ISO-8601 time from the kernel's message header.
        timestamp: String,
    },
    /// A rich result (`execute_result` or `display_data`): mime keys mapped to
    /// the SDK's field names, plus `is_main_result`.
    Result(Map<String, Value>),
    /// An exception raised by the code.
    Error {
        /// Exception class name.
        name: String,
        /// Exception message.
        value: String,
        /// Traceback lines joined with newlines.
        traceback: String,
    },
    /// The cell's execution counter.
    NumberOfExecutions {
        /// `In [n]` of this run.
        execution_count: usize,
    },
    /// Last line of a normal run.
    EndOfExecution,
    /// Last line when the kernel died or stopped answering mid-run.
    UnexpectedEndOfExecution,
    /// Sent during long silent runs so proxies and clients see traffic; the SDKs
    /// ignore unknown types.
    Keepalive,
}

impl OutputLine {
    /// The line as NDJSON bytes: one JSON object and a `\n`.
    pub fn to_ndjson(&self) -> Vec<u8> {
        // Serialising these plain enums cannot fail (string keys, no maps with
        // non-string keys); fall back to an unexpected end rather than panic.
        let mut out =
            serde_json::to_vec(self).unwrap_or_else(|_| br#"{"type":"unexpected_end_of_execution"}"#.to_vec());
        out.push(b'\n');
        out
    }
}

/// The SDK field each Jupyter mime type lands in. Anything else goes under `extra`.
const MIME_KEYS: &[(&str, &str)] = &[
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
    // Where a chart formatter inside the kernel publishes the §5.4 chart object.
    ("application/vnd.e2b.chart+json", "chart"),
    ("application/vnd.e2b.data+json", "data"),
];

/// Builds the `result` line's object from a mime bundle.
pub fn result_from_media(media: &Media, is_main_result: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let mut extra = Map::new();
    if let Ok(Value::Object(bundle)) = serde_json::to_value(media) {
        for (mime, value) in bundle {
            match MIME_KEYS.iter().find(|(m, _)| *m == mime) {
                Some((_, key)) => {
                    out.insert((*key).to_string(), strip_base64_newlines(key, value));
                }
                None => {
                    extra.insert(mime, value);
                }
            }
        }
    }
    if !extra.is_empty() {
        out.insert("extra".into(), Value::Object(extra));
    }
    out.insert("is_main_result".into(), Value::Bool(is_main_result));
    out
}

/// Some kernels wrap base64 images at 76 columns; the SDK decodes with a strict
/// decoder in places, so images are sent as one line.
fn strip_base64_newlines(key: &str, value: Value) -> Value {
    match (key, value) {
        ("png" | "jpeg", Value::String(s)) if s.contains('\n') => {
            Value::String(s.chars().filter(|c| *c != '\n').collect())
        }
        (_, v) => v,
    }
}

/// Maps one iopub message to the line it produces, if any. `timestamp` is the
/// message header's date in ISO-8601.
pub fn map_iopub(content: &JupyterMessageContent, timestamp: &str) -> Option<OutputLine> {
    match content {
        JupyterMessageContent::StreamContent(s) => {
            let text = s.text.clone();
            let timestamp = timestamp.to_string();
            Some(match s.name {
                Stdio::Stdout => OutputLine::Stdout { text, timestamp },
                Stdio::Stderr => OutputLine::Stderr { text, timestamp },
            })
        }
        JupyterMessageContent::ExecuteResult(r) => Some(OutputLine::Result(result_from_media(&r.data, true))),
        JupyterMessageContent::DisplayData(d) => Some(OutputLine::Result(result_from_media(&d.data, false))),
        JupyterMessageContent::ErrorOutput(e) => Some(OutputLine::Error {
            name: e.ename.clone(),
            value: e.evalue.clone(),
            traceback: e.traceback.join("\n"),
        }),
        JupyterMessageContent::ExecuteInput(i) => {
            Some(OutputLine::NumberOfExecutions { execution_count: i.execution_count.value() })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jupyter_protocol::{
        DisplayData, ErrorOutput, ExecuteInput, ExecuteResult, ExecutionCount, MediaType, StreamContent,
    };
    use serde_json::json;

    fn line_json(line: &OutputLine) -> Value {
        let bytes = line.to_ndjson();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&bytes[..bytes.len() - 1]).unwrap_or(Value::Null)
    }

    #[test]
    fn stream_maps_to_stdout_and_stderr() {
        let ts = "2026-12-06T09:00:00.000000Z";
        let out = map_iopub(&StreamContent::stdout("hi\n").into(), ts);
        assert_eq!(out.as_ref().map(line_json), Some(json!({"type": "stdout", "text": "hi\n", "timestamp": ts})));
        let err = map_iopub(&StreamContent::stderr("oops").into(), ts);
        assert_eq!(err.as_ref().map(line_json), Some(json!({"type": "stderr", "text": "oops", "timestamp": ts})));
    }

    #[test]
    fn execute_result_is_main_result_with_mime_keys() {
        let media = Media::new(vec![
            MediaType::Plain("2".into()),
            MediaType::Html("<b>2</b>".into()),
            MediaType::Png("iVBO\nRw0K".into()),
            MediaType::Json(json!({"a": 1})),
            MediaType::Other(("application/x-custom".into(), json!("c"))),
        ]);
        let content = ExecuteResult::new(ExecutionCount::new(3), media).into();
        let got = map_iopub(&content, "t").as_ref().map(line_json);
        assert_eq!(
            got,
            Some(json!({
                "type": "result", "text": "2", "html": "<b>2</b>", "png": "iVBORw0K",
                "json": {"a": 1}, "extra": {"application/x-custom": "c"},
                "is_main_result": true
            }))
        );
    }

    #[test]
    fn display_data_is_not_main_result() {
        let media = Media::new(vec![MediaType::Svg("<svg/>".into())]);
        let got = map_iopub(&DisplayData::new(media).into(), "t").as_ref().map(line_json);
        assert_eq!(got, Some(json!({"type": "result", "svg": "<svg/>", "is_main_result": false})));
    }

    #[test]
    fn error_joins_traceback() {
        let content = ErrorOutput {
            ename: "ZeroDivisionError".into(),
            evalue: "division by zero".into(),
            traceback: vec!["Traceback".into(), "  line 1".into()],
        }
        .into();
        let got = map_iopub(&content, "t").as_ref().map(line_json);
        assert_eq!(
            got,
            Some(json!({
                "type": "error", "name": "ZeroDivisionError", "value": "division by zero",
                "traceback": "Traceback\n  line 1"
            }))
        );
    }

    #[test]
    fn execute_input_gives_number_of_executions() {
        let content = ExecuteInput { code: "x".into(), execution_count: ExecutionCount::new(7) }.into();
        let got = map_iopub(&content, "t").as_ref().map(line_json);
        assert_eq!(got, Some(json!({"type": "number_of_executions", "execution_count": 7})));
    }

    #[test]
    fn unit_lines_and_ignored_messages() {
        assert_eq!(line_json(&OutputLine::EndOfExecution), json!({"type": "end_of_execution"}));
        assert_eq!(line_json(&OutputLine::Keepalive), json!({"type": "keepalive"}));
        let status = JupyterMessageContent::Status(jupyter_protocol::Status::idle());
        assert_eq!(map_iopub(&status, "t"), None);
    }
}

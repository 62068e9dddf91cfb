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
                    out.insert((*key).to_string(), clean(key, value));
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

/// Normalises a value: some kernels wrap base64 images at 76 columns (the
/// SDKs decode strictly in places, so images are sent as one line); Deno
/// colours its `text/plain` results with ANSI escapes and Python quotes
/// strings (the SDK's `Execution.text` must be the bare value).
fn clean(key: &str, value: Value) -> Value {
    match (key, value) {
        ("png" | "jpeg", Value::String(s)) if s.contains('\n') => {
            Value::String(s.chars().filter(|c| *c != '\n').collect())
        }
        ("text", Value::String(s)) => Value::String(unquote_single(&strip_ansi(&s))),
        (_, v) => v,
    }
}

/// A text value in single quotes (Python's repr of a string) without them, as
/// upstream's interpreter gives it: the SDKs' own tests expect
/// `os.getenv("FOO")` to have `text == "bar"`.
fn unquote_single(s: &str) -> String {
    match s.strip_prefix('\'').and_then(|rest| rest.strip_suffix('\'')) {
        Some(inner) => inner.to_string(),
        None => s.to_string(),
    }
}

/// The contents of a JavaScript string literal as Deno's inspector prints it
/// (`"..."`, or `'...'` / backticks when the string holds double quotes);
/// `None` if `s` is not one.
pub fn unquote_js_string(s: &str) -> Option<String> {
    let quote = s.chars().next().filter(|q| matches!(q, '"' | '\'' | '`'))?;
    if s.len() < 2 || !s.ends_with(quote) {
        return None;
    }
    if quote == '"' {
        return serde_json::from_str(s).ok();
    }
    let inner = &s[1..s.len() - 1];
    // Only simple escapes are undone; anything else is left as printed.
    Some(inner.replace(&format!("\\{quote}"), &quote.to_string()).replace("\\n", "\n").replace("\\\\", "\\"))
}

/// Removes ANSI CSI sequences (`ESC [ params final`) and lone escapes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Maps one iopub message to the line it produces, if any. `timestamp` is the
/// message header's date in ISO-8601. With `unquote_strings` (Deno), a cell
/// value that is a string literal is given bare, as the SDKs expect
/// (`await Promise.resolve('hi')` has `text == "hi"`).
pub fn map_iopub(content: &JupyterMessageContent, timestamp: &str, unquote_strings: bool) -> Option<OutputLine> {
    match content {
        JupyterMessageContent::StreamContent(s) => {
            let text = s.text.clone();
            let timestamp = timestamp.to_string();
            Some(match s.name {
                Stdio::Stdout => OutputLine::Stdout { text, timestamp },
                Stdio::Stderr => OutputLine::Stderr { text, timestamp },
            })
        }
        JupyterMessageContent::ExecuteResult(r) => {
            let mut result = result_from_media(&r.data, true);
            if unquote_strings {
                if let Some(Value::String(text)) = result.get_mut("text") {
                    if let Some(bare) = unquote_js_string(text) {
                        *text = bare;
                    }
                }
            }
            Some(OutputLine::Result(result))
        }
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

    #[test]
    fn single_quoted_text_is_given_bare() {
        assert_eq!(super::unquote_single("'bar'"), "bar");
        assert_eq!(super::unquote_single("\"it's\""), "\"it's\"");
        assert_eq!(super::unquote_single("'"), "'");
        assert_eq!(super::unquote_single("[1] 2"), "[1] 2");
    }

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
        let out = map_iopub(&StreamContent::stdout("hi\n").into(), ts, false);
        assert_eq!(out.as_ref().map(line_json), Some(json!({"type": "stdout", "text": "hi\n", "timestamp": ts})));
        let err = map_iopub(&StreamContent::stderr("oops").into(), ts, false);
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
        let got = map_iopub(&content, "t", false).as_ref().map(line_json);
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
        let got = map_iopub(&DisplayData::new(media).into(), "t", false).as_ref().map(line_json);
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
        let got = map_iopub(&content, "t", false).as_ref().map(line_json);
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
        let got = map_iopub(&content, "t", false).as_ref().map(line_json);
        assert_eq!(got, Some(json!({"type": "number_of_executions", "execution_count": 7})));
    }

    #[test]
    fn ansi_colours_are_stripped_from_text_results() {
        assert_eq!(strip_ansi("\x1b[33m42\x1b[39m"), "42");
        assert_eq!(strip_ansi("\x1b[1;32m\"bar\"\x1b[0m x"), "\"bar\" x");
        let media = Media::new(vec![MediaType::Plain("\x1b[33m-1\x1b[39m".into())]);
        let got = result_from_media(&media, true);
        assert_eq!(got.get("text"), Some(&json!("-1")));
    }

    #[test]
    fn deno_string_values_are_unquoted() {
        assert_eq!(unquote_js_string(r#""Hello World!""#), Some("Hello World!".into()));
        assert_eq!(unquote_js_string(r#""a\"b""#), Some("a\"b".into()));
        assert_eq!(unquote_js_string(r#"'say "hi"'"#), Some("say \"hi\"".into()));
        assert_eq!(unquote_js_string("42"), None);
        assert_eq!(unquote_js_string("\""), None);
        let media = Media::new(vec![MediaType::Plain("\x1b[32m\"bar\"\x1b[39m".into())]);
        let content = ExecuteResult::new(ExecutionCount::new(1), media).into();
        let got = map_iopub(&content, "t", true).as_ref().map(line_json);
        assert_eq!(got, Some(json!({"type": "result", "text": "bar", "is_main_result": true})));
        let media = Media::new(vec![MediaType::Plain("\"bar\"".into())]);
        let content = ExecuteResult::new(ExecutionCount::new(1), media).into();
        let got = map_iopub(&content, "t", false).as_ref().map(line_json);
        assert_eq!(got, Some(json!({"type": "result", "text": "\"bar\"", "is_main_result": true})));
    }

    #[test]
    fn unit_lines_and_ignored_messages() {
        assert_eq!(line_json(&OutputLine::EndOfExecution), json!({"type": "end_of_execution"}));
        assert_eq!(line_json(&OutputLine::Keepalive), json!({"type": "keepalive"}));
        let status = JupyterMessageContent::Status(jupyter_protocol::Status::idle());
        assert_eq!(map_iopub(&status, "t", false), None);
    }
}

//! Query strings exactly as the Python SDK builds them (wire notes §3.4), so
//! the server sees the same bytes from the CLI as from `Sandbox.list()`.

use crate::error::{Error, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::BTreeMap;

/// Python's `urllib.parse.quote_plus` / httpx value encoding: everything but
/// ASCII letters, digits and `_.-~` is escaped.
const PY_QUOTE_PLUS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-').remove(b'~');
/// Python's `urllib.parse.quote` with its default `safe="/"`.
const PY_QUOTE: &AsciiSet = &PY_QUOTE_PLUS.remove(b'/');

/// Escapes one query component the way httpx and `quote_plus` do. Spaces
/// never reach it raw in our uses, so `+` for space is not needed.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, PY_QUOTE_PLUS).to_string()
}

/// The inner metadata string: `urlencode({quote(k): quote(v)})`.
pub fn metadata_inner(metadata: &BTreeMap<String, String>) -> String {
    metadata
        .iter()
        .map(|(k, v)| {
            let (k, v) = (utf8_percent_encode(k, PY_QUOTE).to_string(), utf8_percent_encode(v, PY_QUOTE).to_string());
            format!("{}={}", encode_component(&k), encode_component(&v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Filters of `GET /v2/sandboxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// States to include (`running`, `paused`); empty = server default.
    pub state: Vec<String>,
    /// Metadata pairs that must all match.
    pub metadata: BTreeMap<String, String>,
    /// Page size; `None` lets the server choose.
    pub limit: Option<u32>,
}

impl ListQuery {
    /// The raw query string (without `?`) for one page; empty when there is
    /// nothing to send, as the SDK sends no parameters at all then.
    pub fn to_query(&self, next_token: Option<&str>) -> String {
        let mut parts = Vec::new();
        if !self.metadata.is_empty() {
            parts.push(format!("metadata={}", encode_component(&metadata_inner(&self.metadata))));
        }
        if !self.state.is_empty() {
            parts.push(format!("state={}", encode_component(&self.state.join(","))));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(token) = next_token.filter(|t| !t.is_empty()) {
            parts.push(format!("nextToken={}", encode_component(token)));
        }
        parts.join("&")
    }
}

/// Parses repeated `KEY=VALUE` arguments (`--metadata`, `--env`). The value
/// may contain `=`; the key may not be empty.
pub fn parse_pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Usage(format!("{flag} expects KEY=VALUE, got '{item}'"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn metadata_is_double_encoded_like_the_sdk() {
        let q = ListQuery { metadata: map(&[("a b", "c&d=e"), ("x", "y")]), ..Default::default() };
        assert_eq!(q.to_query(None), "metadata=a%252520b%3Dc%252526d%25253De%26x%3Dy");
    }

    #[test]
    fn slash_and_unicode_follow_python_quote() {
        // quote() keeps '/', then urlencode's quote_plus escapes it once.
        assert_eq!(metadata_inner(&map(&[("p/q", "é~")])), "p%2Fq=%25C3%25A9~");
    }

    #[test]
    fn state_limit_and_token() {
        let q = ListQuery { state: vec!["running".into(), "paused".into()], limit: Some(1), ..Default::default() };
        assert_eq!(q.to_query(Some("tok/1=")), "state=running%2Cpaused&limit=1&nextToken=tok%2F1%3D");
        assert_eq!(ListQuery::default().to_query(None), "");
        assert_eq!(ListQuery::default().to_query(Some("")), "");
    }

    #[test]
    fn pairs_need_a_key_and_keep_equals_in_values() {
        assert_eq!(parse_pairs("--env", &["A=b=c".into(), "E=".into()]).unwrap(), map(&[("A", "b=c"), ("E", "")]));
        assert!(matches!(parse_pairs("--env", &["=x".into()]), Err(Error::Usage(_))));
        assert!(matches!(parse_pairs("--env", &["novalue".into()]), Err(Error::Usage(_))));
    }
}

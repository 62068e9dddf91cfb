//! Whether to gzip a download.
//!
//! httpx (the Python SDK's client) and undici send `Accept-Encoding: gzip`
//! on every request, so "the client accepts gzip" says little about whether
//! compressing pays. envd gzips only when the client accepts it *and* a
//! sample of the file shrinks noticeably: text compresses at the fastest
//! level, already-compressed or random data goes out as-is at disk speed.

use http::{header, HeaderMap};
use std::io::Write;

/// Bytes sampled to judge compressibility.
pub const SAMPLE: usize = 64 * 1024;
/// Compress when the sample shrinks to at most this fraction.
const WORTH_IT: f64 = 0.9;

/// Whether `Accept-Encoding` allows gzip (and does not refuse it with q=0).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f64>().ok()) == Some(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        },
    )
}

/// Whether gzip shrinks `sample` enough to be worth the CPU.
pub fn worth_compressing(sample: &[u8]) -> bool {
    if sample.len() < 64 {
        return false;
    }
    let mut enc = flate2::write::DeflateEncoder::new(Vec::with_capacity(sample.len()), flate2::Compression::fast());
    if enc.write_all(sample).is_err() {
        return false;
    }
    match enc.finish() {
        Ok(out) => (out.len() as f64) <= sample.len() as f64 * WORTH_IT,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn compressibility() {
        assert!(worth_compressing("hello world, ".repeat(1000).as_bytes()));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..SAMPLE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        assert!(!worth_compressing(&noise));
        assert!(!worth_compressing(b"tiny"));
    }
}

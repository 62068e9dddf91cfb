//! Signed `/files` URLs (format `v1`), as the SDKs' `download_url` and
//! `upload_url` make them: envd checks them, and the proxy checks them
//! before a signed URL may wake a paused sandbox.
//!
//! The signature is `v1_` + unpadded standard base64 of
//! `sha256("<path>:<read|write>:<username>:<token>[:<expiration>]")`, where
//! `path` and `username` are the query values as sent (`username` is empty
//! for the default user) and `expiration` is in Unix seconds.

use base64::Engine;
use sha2::{Digest, Sha256};

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /files`.
    Read,
    /// `POST /files`.
    Write,
}

impl Operation {
    /// The word in the signed text: `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Computes the `v1` signature of a request for `token`.
pub fn sign(path: &str, op: Operation, username: &str, token: &str, expiration: Option<i64>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update(b":");
    hasher.update(op.as_str().as_bytes());
    hasher.update(b":");
    hasher.update(username.as_bytes());
    hasher.update(b":");
    hasher.update(token.as_bytes());
    if let Some(exp) = expiration {
        hasher.update(b":");
        hasher.update(exp.to_string().as_bytes());
    }
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hasher.finalize());
    format!("v1_{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from the Python SDK's `get_signature`
    // (novita_sandbox/core/sandbox/signature.py).
    #[test]
    fn matches_the_sdk() {
        assert_eq!(
            sign("/home/user/a.txt", Operation::Read, "", "tok", None),
            "v1_Zkbb3914oLJLvMBzCAHQhm2ydBLxbSx2eQUR/kLdvIY"
        );
        assert_eq!(
            sign("a b/ü.txt", Operation::Write, "root", "tok", Some(1_700_000_000)),
            "v1_VRDPKBCQb9LQraoU5PtkQRjZBoPgrFtCyX9ZnSRm9uU"
        );
    }
}

//! Signed `/files` URLs.
//!
//! When a sandbox has an access token, the SDKs' `download_url`/`upload_url`
//! hand out URLs that carry a signature instead of the token, so a browser or
//! `curl` can use them without headers. The signature itself (format `v1`)
//! is [`arbor_proto::signature`], shared with the proxy, which checks it too
//! before a signed URL may wake a paused sandbox.

use crate::{
    auth::{constant_time_eq, ACCESS_TOKEN_HEADER},
    error::{Error, Result},
};
use http::HeaderMap;

pub use arbor_proto::signature::{sign, unix_now, Operation};

/// The signature-related parts of a `/files` request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signed<'a> {
    /// The `path` query value as sent (empty if absent).
    pub path: &'a str,
    /// The `username` query value as sent (empty if absent).
    pub username: &'a str,
    /// The `signature` query value.
    pub signature: Option<&'a str>,
    /// The `signature_expiration` query value, Unix seconds.
    pub expiration: Option<i64>,
}

/// Decides whether a `/files` request may proceed.
///
/// Without a configured `token` everything passes. Otherwise an
/// `X-Access-Token` header, when present, must match; without it, the request
/// must carry a valid, unexpired signature for `op`. `now` is the current
/// Unix time in seconds.
pub fn authorize(token: Option<&str>, headers: &HeaderMap, req: &Signed<'_>, op: Operation, now: i64) -> Result<()> {
    let Some(token) = token else { return Ok(()) };
    // An empty header counts as absent, as upstream envd treats it.
    if let Some(got) = headers.get(ACCESS_TOKEN_HEADER).filter(|v| !v.is_empty()) {
        return if constant_time_eq(got.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("access token present in header but does not match".into()))
        };
    }
    let Some(signature) = req.signature else {
        return Err(Error::Unauthenticated(
            "missing access token: send X-Access-Token or use a signed URL (signature query parameter)".into(),
        ));
    };
    let expected = sign(req.path, op, req.username, token, req.expiration);
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(Error::Unauthenticated("invalid signature".into()));
    }
    match req.expiration {
        // The SDKs' tests expect exactly this message.
        Some(exp) if exp < now => Err(Error::Unauthenticated("signature is already expired".into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(sig: &'a str, exp: Option<i64>) -> Signed<'a> {
        Signed { path: "f", username: "user", signature: Some(sig), expiration: exp }
    }

    #[test]
    fn authorizes() {
        let none = HeaderMap::new();
        // No token configured: anything goes.
        assert!(authorize(None, &none, &Signed::default(), Operation::Read, 0).is_ok());
        // Token, neither header nor signature.
        assert!(authorize(Some("t"), &none, &Signed::default(), Operation::Read, 0).is_err());

        let mut good = HeaderMap::new();
        good.insert(ACCESS_TOKEN_HEADER, "t".parse().unwrap());
        assert!(authorize(Some("t"), &good, &Signed::default(), Operation::Write, 0).is_ok());
        let mut bad = HeaderMap::new();
        bad.insert(ACCESS_TOKEN_HEADER, "x".parse().unwrap());
        let valid = sign("f", Operation::Read, "user", "t", None);
        // A wrong header is not rescued by a valid signature.
        assert!(authorize(Some("t"), &bad, &signed(&valid, None), Operation::Read, 0).is_err());

        assert!(authorize(Some("t"), &none, &signed(&valid, None), Operation::Read, 0).is_ok());
        let mut empty = HeaderMap::new();
        empty.insert(ACCESS_TOKEN_HEADER, "".parse().unwrap());
        assert!(authorize(Some("t"), &empty, &signed(&valid, None), Operation::Read, 0).is_ok());
        assert!(authorize(Some("t"), &empty, &Signed::default(), Operation::Read, 0).is_err());
        // Signed for read, used for write.
        assert!(authorize(Some("t"), &none, &signed(&valid, None), Operation::Write, 0).is_err());
        // Signed for another user.
        let other = Signed { username: "", ..signed(&valid, None) };
        assert!(authorize(Some("t"), &none, &other, Operation::Read, 0).is_err());

        let timed = sign("f", Operation::Read, "user", "t", Some(100));
        assert!(authorize(Some("t"), &none, &signed(&timed, Some(100)), Operation::Read, 100).is_ok());
        let err = authorize(Some("t"), &none, &signed(&timed, Some(100)), Operation::Read, 101).unwrap_err();
        assert_eq!(err.to_string(), "signature is already expired");
        // The expiration is part of what is signed.
        assert!(authorize(Some("t"), &none, &signed(&timed, Some(200)), Operation::Read, 0).is_err());
    }
}

//! Request authentication: the sandbox's access token and the user a request
//! runs as.

use crate::error::{Error, Result};
use base64::Engine;
use http::HeaderMap;
use std::sync::RwLock;

/// Header carrying the sandbox's envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// The access token, if one is configured.
#[derive(Debug, Default)]
pub struct Auth {
    token: RwLock<Option<String>>,
}

impl Auth {
    /// Starts with `token` (or none).
    pub fn new(token: Option<String>) -> Self {
        Self { token: RwLock::new(token.filter(|t| !t.is_empty())) }
    }

    /// The configured token.
    pub fn token(&self) -> Option<String> {
        match self.token.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the token (from `/init`).
    pub fn set_token(&self, token: Option<String>) {
        let token = token.filter(|t| !t.is_empty());
        match self.token.write() {
            Ok(mut t) => *t = token,
            Err(p) => *p.into_inner() = token,
        }
    }

    /// Checks `X-Access-Token` against the configured token.
    pub fn check(&self, headers: &HeaderMap) -> Result<()> {
        let Some(expected) = self.token() else {
            return Ok(());
        };
        match headers.get(ACCESS_TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
            Some(got) if constant_time_eq(got.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Error::Unauthenticated("invalid access token".into())),
            None => Err(Error::Unauthenticated(
                "missing access token: send the sandbox's envdAccessToken in X-Access-Token".into(),
            )),
        }
    }
}

/// Compares secrets without an early exit, so timing does not leak a prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user named by `Authorization: Basic base64("<user>:")`, as the SDKs
/// send it on RPC calls.
pub fn basic_user(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || Error::Unauthenticated("malformed Authorization header; expected Basic base64(<user>:)".into());
    let value = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Err(bad());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split(':').next().unwrap_or_default();
    Ok((!user.is_empty()).then(|| user.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let auth = Auth::new(Some("secret".into()));
        let mut h = HeaderMap::new();
        assert!(auth.check(&h).is_err());
        h.insert(ACCESS_TOKEN_HEADER, "nope".parse().unwrap());
        assert!(auth.check(&h).is_err());
        h.insert(ACCESS_TOKEN_HEADER, "secret".parse().unwrap());
        assert!(auth.check(&h).is_ok());
        assert!(Auth::new(None).check(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn basic_user_header() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h).unwrap(), None);
        h.insert(http::header::AUTHORIZATION, "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(basic_user(&h).unwrap().as_deref(), Some("root"));
        h.insert(http::header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(basic_user(&h).is_err());
    }
}

//! `X-Access-Token` checks, delegated to envd.
//!
//! The sandbox's access token belongs to envd, and changes when a sandbox is
//! cloned or resumed (the host calls envd's `POST /init` with a new one).
//! Rather than keep a second copy, the interpreter asks envd: `GET /envs`
//! requires the token (200 with it, 401 without), and its answer, the
//! sandbox-wide environment variables, is what each execution needs anyway.
//!
//! Nothing is cached: a checkpoint keeps this process and its connections
//! (CRIU `--tcp-established`), so after a clone or resume nothing inside tells
//! it that envd got a new token; only asking envd every time is correct.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a request was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// envd refused the token (or its absence).
    #[error("{0}")]
    Unauthorized(String),
    /// envd could not be asked.
    #[error("cannot verify the access token with envd: {0}")]
    Unavailable(String),
}

/// What a successful check yields: the sandbox-wide env vars from envd.
pub type Globals = Arc<BTreeMap<String, String>>;

/// Checks tokens against envd.
#[derive(Debug)]
pub struct Auth {
    /// envd's base URL; `None` disables checks (host tests, no envd).
    envd: Option<String>,
    client: reqwest::Client,
}

impl Auth {
    /// Checks against envd at `envd` (e.g. `http://127.0.0.1:49983`), or not
    /// at all when `None`.
    pub fn new(envd: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Auth { envd: envd.map(|u| u.trim_end_matches('/').to_string()), client }
    }

    /// Lets the request in (returning the sandbox-wide env vars) or not.
    pub async fn check(&self, token: Option<&str>) -> Result<Globals, AuthError> {
        let Some(envd) = &self.envd else { return Ok(Globals::default()) };
        let token = token.filter(|t| !t.is_empty());
        let mut request = self.client.get(format!("{envd}/envs"));
        if let Some(token) = token {
            request = request.header("X-Access-Token", token);
        }
        let response = request.send().await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(AuthError::Unauthorized(envd_message(&body)));
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(format!("envd answered {status}")));
        }
        let globals = serde_json::from_slice(&body).map_err(|e| AuthError::Unavailable(format!("envd /envs: {e}")))?;
        Ok(Arc::new(globals))
    }
}

/// envd's error message from its `{"code", "message"}` body, or a default.
fn envd_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| "invalid or missing access token".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envd_messages_are_passed_on() {
        assert_eq!(envd_message(br#"{"code":401,"message":"invalid access token"}"#), "invalid access token");
        assert_eq!(envd_message(b"nope"), "invalid or missing access token");
    }

    #[tokio::test]
    async fn without_envd_everything_is_allowed() {
        let auth = Auth::new(None);
        assert!(auth.check(None).await.is_ok_and(|g| g.is_empty()));
    }

    #[tokio::test]
    async fn an_unreachable_envd_lets_nothing_in() {
        let auth = Auth::new(Some("http://127.0.0.1:9".into()));
        assert!(matches!(auth.check(Some("secret")).await, Err(AuthError::Unavailable(_))));
    }
}

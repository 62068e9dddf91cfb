//! `POST /init`: the orchestrator hands a started (or resumed) sandbox its
//! settings. The body is upstream envd's: `envVars`, `accessToken`,
//! `timestamp`, `defaultUser`, `defaultWorkdir`; other keys are ignored.

use crate::{error::Error, pid1, state::Envd};
use axum::{body::Bytes, extract::State, response::Response};
use serde::Deserialize;
use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

/// How far behind the host's clock the sandbox's may be before it is set.
const MAX_BEHIND: Duration = Duration::from_millis(50);
/// How far ahead of the host's clock the sandbox's may be before it is set.
const MAX_AHEAD: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitRequest {
    /// Merged into the variables every process gets.
    env_vars: Option<HashMap<String, String>>,
    /// Sets or replaces the access token; `""` removes it. Absent: unchanged.
    access_token: Option<String>,
    /// The host's time (RFC 3339); sets the clock of a sandbox's PID 1.
    timestamp: Option<pbjson_types::Timestamp>,
    /// Default user; empty means unchanged.
    default_user: Option<String>,
    /// Default working directory; empty means unchanged.
    default_workdir: Option<String>,
}

/// `POST /init`: applies the settings and answers 204.
pub async fn init(State(envd): State<Arc<Envd>>, body: Bytes) -> Response {
    let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return super::error_response(&Error::InvalidArgument(format!("invalid /init body: {e}"))),
        }
    };
    if let Some(ts) = req.timestamp {
        sync_clock(&ts);
    }
    {
        let mut defaults = match envd.defaults.write() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(envs) = req.env_vars {
            defaults.envs.extend(envs);
        }
        if let Some(user) = req.default_user.filter(|u| !u.is_empty()) {
            defaults.user = user;
        }
        if let Some(workdir) = req.default_workdir.filter(|w| !w.is_empty()) {
            defaults.workdir = Some(PathBuf::from(workdir));
        }
    }
    if let Some(token) = req.access_token {
        envd.auth.set_token(Some(token));
    }
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// Sets the system clock to the host's time when envd is a sandbox's PID 1
/// and the clock is off (a resumed snapshot keeps the time it was paused
/// at). On a host, envd must never touch the clock.
fn sync_clock(ts: &pbjson_types::Timestamp) {
    if !pid1::is_pid1() {
        return;
    }
    let Ok(nanos) = u32::try_from(ts.nanos) else {
        return;
    };
    let host = std::time::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(ts.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::from(nanos));
    let now = std::time::SystemTime::now();
    let behind = host.duration_since(now).is_ok_and(|d| d > MAX_BEHIND);
    let ahead = now.duration_since(host).is_ok_and(|d| d > MAX_AHEAD);
    if !(behind || ahead) {
        return;
    }
    let spec = nix::sys::time::TimeSpec::new(ts.seconds, i64::from(ts.nanos));
    match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, spec) {
        Ok(()) => tracing::info!("system clock set to the host's time ({}s)", ts.seconds),
        Err(e) => tracing::warn!("setting the system clock failed: {e}"),
    }
}

//! What the proxy asks of the control plane: where a sandbox's envd listens,
//! and a hook to record that the sandbox is in use.

use crate::{access::Access, error::ProxyError};
use async_trait::async_trait;
use std::net::SocketAddr;

/// How a request names its sandbox.
///
/// The SDKs send `Novita-Sandbox-Id` (or `E2b-Sandbox-Id`) on sandboxes made
/// by `create()`, but only `X-Access-Token` on sandboxes reached through
/// `Sandbox.connect(id)` in Python, so the token must identify a sandbox too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The id from `Novita-Sandbox-Id` or `E2b-Sandbox-Id`.
    Id(&'a str),
    /// The envd access token from `X-Access-Token` (no id header was sent).
    Token(&'a str),
}

/// Where to forward a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sandbox the request is for (passed back to [`Resolver::activity`]
    /// and named in error messages).
    pub sandbox_id: String,
    /// envd's address, e.g. `10.200.0.2:49983`.
    pub addr: SocketAddr,
    /// Which incarnation of envd's connections this is. Connections are
    /// pooled per (sandbox, generation, address); bump it when envd's
    /// earlier connections vanished without a FIN reaching the host (e.g. the
    /// sandbox was restored from a checkpoint), so no request is sent down a
    /// dead pooled connection. 0 is fine otherwise.
    pub generation: u64,
    /// The token requests to the sandbox's other ports (its public URLs)
    /// must carry; `None` when its public traffic is allowed.
    pub traffic_token: Option<String>,
}

impl Target {
    /// A target with generation 0 that allows public traffic.
    pub fn new(sandbox_id: impl Into<String>, addr: SocketAddr) -> Self {
        Self { sandbox_id: sandbox_id.into(), addr, generation: 0, traffic_token: None }
    }
}

/// The control plane's side of the proxy.
///
/// `resolve` is awaited for every request before anything is forwarded, so it
/// may do slow work such as resuming a paused sandbox.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// Finds the sandbox a request is for.
    ///
    /// A running sandbox is returned whatever `access` holds (envd and the
    /// proxy check credentials on the way). A sandbox that is not running
    /// may only be woken, or said to be paused, for a request whose `access`
    /// [`Access::allows`] it; for any other request it must look exactly
    /// like an unknown id.
    ///
    /// Return [`ProxyError::NotFound`] for an unknown id (or one `access`
    /// may not see), [`ProxyError::UnknownToken`] for a token no sandbox
    /// holds, [`ProxyError::Paused`] for a paused sandbox that may not be
    /// resumed, or [`ProxyError::Status`] for anything else the client
    /// should see (e.g. a resume that failed).
    async fn resolve(&self, lookup: Lookup<'_>, access: &Access<'_>) -> Result<Target, ProxyError>;

    /// Records that `sandbox_id` is in use, so idle timers restart.
    ///
    /// Called when a request is forwarded, when its response ends, and every
    /// [`crate::Proxy::activity_interval`] while a request or response body
    /// is still open (a ten-minute command stream keeps the sandbox alive).
    /// It runs on the I/O path: keep it cheap and non-blocking.
    fn activity(&self, sandbox_id: &str);
}

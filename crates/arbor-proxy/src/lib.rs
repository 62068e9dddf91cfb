//! The envd proxy of `arbor server`.
//!
//! The SDKs send envd traffic (Connect-RPC under `/process.Process/` and
//! `/filesystem.Filesystem/`, `/files`, `/health`, ...) to the same listener
//! as the REST API, naming the sandbox in `Novita-Sandbox-Id` (or
//! `E2b-Sandbox-Id`) or, failing that, by its envd access token in
//! `X-Access-Token`. This crate finds the sandbox through a [`Resolver`] the
//! control plane implements and streams the exchange to that sandbox's envd:
//! bodies flow through unbuffered both ways, hop-by-hop headers are dropped,
//! `Host` becomes envd's address, and everything else (including
//! `X-Access-Token`, which envd checks itself) passes unchanged.
//! Requests whose `Host` is a public URL (`<port>-<id>.<domain>`) go to that
//! port of that sandbox instead (any path, upgrades as
//! tunnels, traffic tokens). A request may wake a paused sandbox only with
//! the sandbox's credentials ([`Access`]). See `docs/proxy.md` and
//! `docs/public-urls.md`.
//!
//! External crates:
//! * `hyper` / `hyper-util`: the pooled HTTP/1.1 client to envd (keep-alive
//!   connections, `TCP_NODELAY`), streaming bodies without buffering.
//! * `http-body`: the body trait, to wrap bodies so open streams report
//!   activity.
//! * `axum`: the request/response types of the API server this plugs into.
//! * `arbor-proto`: Connect codes, content types and envelopes, for the
//!   proxy's own errors on Connect paths and to end a stream cleanly when
//!   envd dies in the middle of it.
//! * `async-trait`: an object-safe async [`Resolver`].
//! * `subtle`: constant-time comparison of tokens and signatures;
//!   `form_urlencoded`: the query of signed `/files` URLs.
//! * `serde_json`, `bytes`: error bodies; `thiserror`: [`ProxyError`];
//!   `tokio`: the activity timer; `tracing`: logs.

mod access;
mod body;
mod error;
mod host;
mod proxy;
mod resolver;
mod stream;

pub use access::{unix_now, Access, Service};
pub use error::ProxyError;
pub use host::{parse_host, Tunnels, TRAFFIC_TOKEN_HEADER};
pub use proxy::{Proxy, ACCESS_TOKEN_HEADER, DEFAULT_ACTIVITY_INTERVAL, E2B_SANDBOX_ID_HEADER, SANDBOX_ID_HEADER};
pub use resolver::{Lookup, Resolver, Target};

use std::sync::Arc;

/// Path prefixes of envd's Connect services.
const CONNECT_PREFIXES: [&str; 2] = ["/process.Process/", "/filesystem.Filesystem/"];
/// envd's plain HTTP endpoints.
const HTTP_PATHS: [&str; 4] = ["/files", "/health", "/envs", "/init"];

/// Whether `path` belongs to envd rather than to the REST API; the API
/// server dispatches these to the proxy.
pub fn is_envd_path(path: &str) -> bool {
    is_connect_path(path) || HTTP_PATHS.contains(&path)
}

/// Whether `path` is a Connect-RPC method of envd.
pub fn is_connect_path(path: &str) -> bool {
    CONNECT_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// An axum router proxying every request it gets, with default settings
/// (shorthand for `Arc::new(Proxy::new(resolver)).router()`).
pub fn router(resolver: Arc<dyn Resolver>) -> axum::Router {
    Arc::new(Proxy::new(resolver)).router()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envd_paths() {
        for p in ["/process.Process/Start", "/filesystem.Filesystem/Stat", "/files", "/health", "/envs", "/init"] {
            assert!(is_envd_path(p), "{p}");
        }
        for p in ["/sandboxes", "/v2/sandboxes", "/snapshots", "/templates/x", "/openapi.json", "/files/x", "/"] {
            assert!(!is_envd_path(p), "{p}");
        }
        assert!(is_connect_path("/process.Process/List"));
        assert!(!is_connect_path("/files"));
    }
}

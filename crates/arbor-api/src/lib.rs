//! `arbor-api`: the REST API of Arbor, compatible with the E2B / Novita
//! sandbox SDKs (protocol notes §2–§3), and the lifecycle timers behind it.
//!
//! Every route requires `X-API-KEY`; every error is `{"code", "message"}`.
//! A key belongs to a team and sees only its team's sandboxes, snapshots and
//! templates: another team's answer 404 exactly as missing ones do
//! ([`auth::Tenant`]).
//! Durable facts (sandboxes, deadlines, keys, metrics) live in
//! `arbor-store`; sandboxes run on an `arbor-node`; envd traffic on the same
//! port goes through `arbor-proxy`.
//!
//! External crates: `axum` (HTTP), `utoipa` (the OpenAPI document, derived
//! from the same types and handlers that serve the API, so it cannot drift),
//! `form_urlencoded` + `percent-encoding` (the SDKs' double-encoded metadata
//! filter), `sha2` (the key cache), `getrandom` (ids and tokens),
//! `humantime` (RFC 3339 times).
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod builtin;
pub mod config;
pub mod error;
pub mod handlers;
pub mod ids;
pub mod lifecycle;
pub mod locks;
pub mod model;
pub mod openapi;
pub mod persist;
pub mod proxy;
pub mod ratelimit;
pub mod registry;
mod routes;
pub mod templates;

pub use app::App;
pub use config::ApiConfig;
pub use error::ApiError;
pub use routes::router;

//! The user side of the `arbor` command: `arbor sandbox ...`, `arbor
//! template ...` and `arbor config ...`, talking to an Arbor server's REST API and envd proxy
//! exactly as the official SDKs do (see `docs/cli.md`).
//!
//! External crates and why:
//! * `clap` (derive) for the command tree and help text.
//! * `reqwest` (rustls, no OpenSSL) as the HTTP client, including the
//!   streamed body of `exec`; `futures` to read that stream.
//! * `tokio` as its runtime.
//! * `arbor-proto` for the envd process messages (pbjson, i.e. canonical
//!   protobuf JSON) and Connect envelope framing; `bytes`, `base64` with them.
//! * `serde`/`serde_json` for API bodies, `toml` for the config file.
//! * `percent-encoding` to build query strings byte-for-byte like the SDK.
//! * `comfy-table` for the human tables.
//! * `thiserror` for [`Error`].
//! * `arbor-dockerfile` to parse Dockerfiles and pack COPY files locally,
//!   `indicatif` for the build progress display on a terminal.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod config_cmd;
pub mod error;
pub mod exec;
pub mod follow;
pub mod opts;
pub mod output;
pub mod query;
pub mod sandbox;
pub mod snapshot;
pub mod template;
pub mod template_api;

pub use error::{Error, Result};

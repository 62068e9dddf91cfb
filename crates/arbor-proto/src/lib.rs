//! Protocol types shared by `arbor-envd`, the proxy and Rust clients.
//!
//! * [`process`] and [`filesystem`] are the envd services' messages, generated
//!   from `proto/` (the same package, field names and numbers as the official
//!   SDKs). `prost` gives the binary codec; `pbjson` gives serde impls that
//!   follow the canonical protobuf-JSON mapping, which is what both SDKs send.
//! * [`connect`] is Connect protocol v1: codecs, envelopes, error codes. It is
//!   small and transport-agnostic, so it is written here rather than pulled in
//!   with a whole RPC framework.
//! * [`signature`] is the `v1` signature of signed `/files` URLs, checked by
//!   envd and by the proxy (`sha2`, `base64`).
#![warn(missing_docs)]

pub mod connect;
pub mod signature;
pub mod stream;

/// Messages of the `process.Process` service.
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// Messages of the `filesystem.Filesystem` service.
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

/// The port envd listens on in every sandbox (the SDKs' `envd_port`).
pub const ENVD_PORT: u16 = 49983;

/// The envd version Arbor reports to SDKs. SDKs unlock features by version
/// (octet-stream uploads at 0.5.7, newer e2b features up to 0.6.4).
pub const ENVD_VERSION: &str = "0.6.4";

//! `arbor-envd`: the daemon inside every Arbor sandbox.
//!
//! It speaks the envd protocol of the official Novita/E2B SDKs: the
//! `process.Process` and `filesystem.Filesystem` Connect services, and the
//! plain HTTP endpoints `/health`, `/init`, `/envs` and `/files`. In a sandbox
//! it runs as PID 1 and reaps orphans; on a host it runs as an ordinary
//! process, which is how its test suite drives it.
//!
//! Crates it leans on, and why: `axum`/`hyper` for HTTP/1.1 and h2 with
//! unbuffered streaming bodies; `arbor-proto` (prost + pbjson) for messages;
//! `notify` for inotify-based directory watching (it re-arms watches on new
//! subdirectories for recursive watches); `nix` for the POSIX calls (pty,
//! signals, credentials); `flate2` to judge whether a download is worth gzipping;
//! `async-compression` for streaming gzip both ways. `/etc/passwd` parsing is written
//! here because the binary is static and cannot use NSS.
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod connect;
pub mod creds;
pub mod error;
pub mod filesystem;
pub mod http;
pub mod pid1;
pub mod process;
pub mod server;
pub mod state;
pub mod untar;
pub mod users;

//! TLS for `arbor server`.
//!
//! Sandbox ports are reached at `https://<port>-<sandboxID>.<domain>`, so the
//! server needs a certificate for `*.<domain>`. An operator may bring one
//! ([`Certs::from_files`]); otherwise Arbor keeps a local CA of its own and a
//! wildcard leaf signed by it ([`Certs::load_or_create`]), and prints the CA
//! path so clients can trust it. [`serve`] then runs an axum router behind
//! TLS with HTTP/1.1 and HTTP/2 chosen by ALPN; [`serve_plain`] runs it in
//! the clear, for `--listen`. Both bound every connection by [`Timeouts`]:
//! the TLS handshake, the request head, and idle keep-alive, never a request
//! in flight (see `conn.rs`).
#![warn(missing_docs)]

mod certs;
mod conn;
mod serve;

pub use certs::{host_of, Certs};
pub use conn::{Timeouts, HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_TIMEOUT};
pub use serve::{serve, serve_plain};

/// Errors of certificate handling and of the TLS listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed (shown in the message, so not a `source`).
        err: std::io::Error,
    },
    /// A file holds no PEM block of the kind needed.
    #[error("{path}: not a PEM {what}")]
    NotPem {
        /// The file.
        path: std::path::PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// The private key is not the key of the (first) certificate.
    #[error("{key}: this private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: std::path::PathBuf,
        /// The key file.
        key: std::path::PathBuf,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a key or a certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The domain is not usable as a DNS name.
    #[error("domain {0:?} is not a DNS name")]
    BadDomain(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The CLI's error type: every failure is one line a person can act on.

use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered at the API URL (refused, unresolvable, timed out).
    #[error("cannot reach Arbor at {url}: {reason}; is 'arbor server' running?")]
    Unreachable {
        /// The base URL that was tried.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        reason: String,
    },
    /// The API answered with an error status; `message` comes from its
    /// `{"code","message"}` body when there is one.
    #[error("{message} ({status}){hint}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Extra advice for the user (may be empty).
        hint: String,
    },
    /// A transport error after the connection was made (reset, bad TLS...).
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The request URL.
        url: String,
        /// The innermost cause.
        reason: String,
    },
    /// The server answered something this CLI cannot read.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The request URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The command stream of `exec` ended with a Connect error.
    #[error("command failed: {message} ({code})")]
    Rpc {
        /// Connect error code, e.g. `not_found`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A bad command-line value, such as `--metadata` without `=`.
    #[error("{0}")]
    Usage(String),
    /// The config file could not be read or written.
    #[error("config file {}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing the output failed (other than a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

/// Result alias for the CLI.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The innermost message of an error chain: reqwest's own message
/// ("error sending request for url ...") says less than its root cause.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

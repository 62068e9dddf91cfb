//! The interpreter's error type.

use axum::http::StatusCode;
use std::io;

/// Everything the interpreter can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Spawning, reading or writing a local file or process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The Jupyter/ZeroMQ layer failed (connect, send, receive, decode).
    #[error("kernel messaging: {0}")]
    Kernel(String),
    /// The kernel did not become ready or answer in time.
    #[error("kernel timed out: {0}")]
    Timeout(String),
    /// The kernel process exited.
    #[error("kernel died: {0}")]
    KernelDied(String),
    /// The command line or a kernel command is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such context.
    #[error("{0}")]
    NotFound(String),
    /// The access token was refused, or could not be checked.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// No kernel is installed for the language.
    #[error("no kernel for language \"{language}\" in this sandbox; available: {available}")]
    NoKernel {
        /// The normalised language asked for.
        language: String,
        /// The languages that have a kernel, comma-separated.
        available: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            // 404 is the one status whose body both SDKs show to the user
            // (NotFoundException / NotFoundError carry the text).
            Error::NotFound(_) | Error::NoKernel { .. } => StatusCode::NOT_FOUND,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Auth(crate::auth::AuthError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            Error::Auth(crate::auth::AuthError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Io { .. } | Error::Kernel(_) | Error::KernelDied(_) | Error::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<jupyter_zmq_client::RuntimeError> for Error {
    fn from(e: jupyter_zmq_client::RuntimeError) -> Self {
        Error::Kernel(e.to_string())
    }
}

/// The interpreter's result type.
pub type Result<T> = std::result::Result<T, Error>;

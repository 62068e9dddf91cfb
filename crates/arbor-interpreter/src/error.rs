//! The interpreter's error type.

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
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

impl From<jupyter_zmq_client::RuntimeError> for Error {
    fn from(e: jupyter_zmq_client::RuntimeError) -> Self {
        Error::Kernel(e.to_string())
    }
}

/// The interpreter's result type.
pub type Result<T> = std::result::Result<T, Error>;

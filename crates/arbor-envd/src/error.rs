//! envd's error type, and how it maps onto Connect codes and HTTP statuses.

use arbor_proto::connect::{Code, ConnectError};
use std::io;

/// Everything an envd request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named file, directory, process or watcher does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or names something of the wrong kind.
    #[error("{0}")]
    InvalidArgument(String),
    /// The target already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The requesting user may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Missing or wrong access token, signature or user.
    #[error("{0}")]
    Unauthenticated(String),
    /// The target is in the wrong state (e.g. stdin already closed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The disk is full.
    #[error("{0}")]
    NotEnoughSpace(String),
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The method or feature does not exist.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else; the message says what.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Classifies an I/O error; `what` says what was being done, for the message.
    pub fn io(what: impl std::fmt::Display, err: io::Error) -> Self {
        let msg = format!("{what}: {err}");
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound(msg),
            io::ErrorKind::PermissionDenied => Error::PermissionDenied(msg),
            io::ErrorKind::AlreadyExists => Error::AlreadyExists(msg),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::NotEnoughSpace(msg),
            io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::DirectoryNotEmpty => Error::InvalidArgument(msg),
            _ => Error::Internal(msg),
        }
    }

    /// The Connect code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NotEnoughSpace(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status for envd's plain HTTP endpoints (`/files`, `/init`).
    /// 507 is what the SDKs map to "not enough space".
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Error::NotEnoughSpace(_) => http::StatusCode::INSUFFICIENT_STORAGE,
            other => http::StatusCode::from_u16(other.code().http_status())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> Self {
        ConnectError::new(e.code(), e.to_string())
    }
}

/// Result alias for envd operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Errors of the disk quota manager.

use std::io;
use std::path::PathBuf;

/// What can go wrong while setting up or applying disk quotas.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No btrfs is available to hold the sandbox directories.
    #[error("disk quotas are not available on {}: {reason}", path.display())]
    Unsupported {
        /// The sandboxes directory.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The sandboxes directory holds entries but is not yet the quota file system; mounting the
    /// image over it would hide them (clean them up first).
    #[error("{} is not empty; remove its entries before the quota file system is mounted over it", .0.display())]
    NotEmpty(PathBuf),
    /// The directory is not a direct child of the sandboxes directory.
    #[error("{} is not an entry of the sandboxes directory", .0.display())]
    OutsideRoot(PathBuf),
    /// The directory exists but is a plain directory, not a limited one made by `limit`.
    #[error("{} exists and is not a limited sandbox directory", .0.display())]
    NotLimited(PathBuf),
    /// A value outside the accepted range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The value's name.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// An external command (`mkfs.btrfs`) failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command name.
        command: &'static str,
        /// Its exit status and standard error, or why it did not start.
        detail: String,
    },
    /// A system call or file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. "mount", "set the quota of".
        op: &'static str,
        /// The file, directory or device concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// A closure for `map_err` that wraps an io error with what was being done to which path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

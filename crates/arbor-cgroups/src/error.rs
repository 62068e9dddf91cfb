//! Errors of the cgroup manager.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while managing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cgroup layout this crate can drive was found (e.g. no memory controller anywhere).
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    /// A limit needs a controller that this host's hierarchy does not offer.
    #[error("cgroup controller `{0}` is not available on this host")]
    ControllerUnavailable(&'static str),
    /// A cgroup or parent name that would escape its parent or clash with cgroupfs files.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A limit outside the range the kernel (or this crate) accepts.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// `create` found the cgroup already there (a leftover: destroy it or use `open`).
    #[error("cgroup already exists: {}", .0.display())]
    AlreadyExists(PathBuf),
    /// A cgroupfs file or directory operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. "write", "rmdir".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A cgroupfs file had content this crate does not understand.
    #[error("cannot parse {}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The kernel did not reach the wanted state in time (freeze, empty, rmdir).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// Sending a signal to a member process failed for a reason other than it being gone.
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        /// The target process.
        pid: i32,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// True when the error is a missing cgroup file or directory (e.g. the cgroup is gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

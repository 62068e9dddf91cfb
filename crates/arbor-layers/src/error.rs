//! The one error type of the layer store.

use std::io;
use std::path::PathBuf;

use crate::LayerId;

/// Everything that can go wrong in the layer store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done, as a verb phrase ("read", "rename into place", ...).
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A string is not a layer id.
    #[error("invalid layer id {0:?}: expected sha256-<64 lowercase hex digits>")]
    InvalidId(String),
    /// A reference name has a bad shape.
    #[error("invalid reference name {0:?}: expected segments of [a-z0-9._-] separated by '/'")]
    InvalidRefName(String),
    /// The tree given to import is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The tree given to import lives on another filesystem than the store, so it cannot be moved
    /// in with a rename.
    #[error("{path} is on another filesystem than the store; build it under {tmp}")]
    CrossDevice {
        /// The tree.
        path: PathBuf,
        /// Where it should have been built.
        tmp: PathBuf,
    },
    /// No such layer in the store.
    #[error("layer {0} not found")]
    LayerNotFound(LayerId),
    /// No such reference.
    #[error("reference {0} not found")]
    RefNotFound(String),
    /// A layer's content no longer matches its name.
    #[error("layer {id} was modified: its content digest is now {actual}")]
    Tampered {
        /// The layer.
        id: LayerId,
        /// What its content hashes to now.
        actual: LayerId,
    },
    /// A layer cannot be removed while references name it.
    #[error("layer {id} is used by {}", refs.join(", "))]
    InUse {
        /// The layer.
        id: LayerId,
        /// The references that name it.
        refs: Vec<String>,
    },
    /// A tree to delete has a filesystem mounted inside it (a build killed half-way can leave
    /// one); deleting through it could destroy the mounted filesystem's files.
    #[error("{path} has a filesystem mounted at {mount}; unmount it first")]
    Mounted {
        /// The tree.
        path: PathBuf,
        /// The mount point inside it.
        mount: PathBuf,
    },
    /// A manifest could not be read or written.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A reference manifest is of a schema this code does not know.
    #[error("reference {name} has schema {found}; this build reads schema {expected}")]
    Schema {
        /// The reference.
        name: String,
        /// The schema it has.
        found: u32,
        /// The schema this build writes and reads.
        expected: u32,
    },
}

impl Error {
    /// Wraps an `io::Error` with what was being done to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { what, path: path.into(), source }
    }
}

/// Result with the store's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

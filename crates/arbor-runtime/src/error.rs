//! Runtime errors.

use std::path::PathBuf;

/// What creating, running or destroying a sandbox can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is unusable.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// A sandbox with this id exists already.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// No sandbox with this id.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// A file-system step failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// The cgroup layer failed.
    #[error(transparent)]
    Cgroup(#[from] arbor_cgroups::Error),
    /// The disk-quota layer failed.
    #[error(transparent)]
    Disk(#[from] arbor_disk::Error),
    /// The network layer failed.
    #[error(transparent)]
    Net(#[from] arbor_net::Error),
    /// A blocking step run on a worker thread panicked or was cancelled.
    #[error("{0} did not finish: {1}")]
    Task(&'static str, String),
    /// The sandbox's seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] crate::linux::seccomp::SeccompError),
    /// The sandbox's capabilities could not be dropped.
    #[error(transparent)]
    Caps(#[from] crate::linux::caps::CapsError),
    /// A checkpoint or a restore failed (CRIU's log says why).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// CRIU is not installed, so there are no checkpoints on this node.
    #[error("checkpoints need CRIU >= 4 (scripts/build-criu.sh); none found")]
    NoCriu,
    /// The sandbox holds FUSE mounts, which CRIU cannot save: it cannot be
    /// checkpointed (paused, cloned, snapshotted) until they are unmounted.
    #[error(
        "the sandbox has FUSE file systems mounted at {}; a sandbox can be paused, cloned or snapshotted only \
         after they are unmounted (fusermount3 -u)",
        .0.join(", ")
    )]
    FuseMounted(Vec<String>),
    /// The launcher failed before envd started; its message says where.
    #[error("launching the sandbox failed: {0}")]
    Launch(String),
}

impl Error {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// A failed system call.
    pub fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> Self {
        move |source| Error::Sys { what, source }
    }
}

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Checkpoints: a sandbox's memory (every process, with its open files and
//! sockets) and its file system, saved so that sandboxes can be restored from
//! them later, once (resume) or many times (clones, snapshots).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What becomes of a sandbox once its checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// It runs on (a snapshot, or the origin of a clone): it is stopped only
    /// while the checkpoint is taken.
    Continue,
    /// It stays frozen, resident, for the caller to thaw (a quick resume) or
    /// destroy later (a pause that releases its memory after a grace period).
    Frozen,
    /// It is destroyed: the checkpoint is all that is left of it.
    Stop,
}

/// A mount the sandbox has from the host (a device node, envd, a `/proc`
/// mask): CRIU records only its key, and the restore maps the key back to
/// the host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMount {
    /// CRIU's key for it.
    pub key: String,
    /// Its source on the host.
    pub source: PathBuf,
}

/// A complete checkpoint on the node's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its name (`[a-z0-9-]`, at most 64 characters).
    pub name: String,
    /// The root-filesystem layers under the saved upper dir, top first: a
    /// sandbox restored from it has these layers.
    pub layers: Vec<PathBuf>,
    /// The hostname the processes were saved with.
    pub hostname: String,
    /// The envd binary the processes map: it must be the same file at restore.
    pub envd: PathBuf,
    /// Host mounts declared external at the dump.
    pub externals: Vec<ExternalMount>,
    /// Bytes of memory image.
    pub image_bytes: u64,
    /// When it was taken (unix milliseconds).
    pub created_ms: u64,
    /// How long the sandbox was stopped for it, in milliseconds.
    pub stopped_ms: u64,
}

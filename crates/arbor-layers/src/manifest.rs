//! The JSON documents of the store: a layer's own record and named references.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::LayerId;

/// The reference schema this build writes and reads. Bump it on any incompatible change, and say so
/// in docs/templates-base.md: refs outlive binaries on a node.
pub const REF_SCHEMA: u32 = 1;

/// `layers/<id>/layer.json`: facts about one layer, written once at import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer's id (its content digest).
    pub id: LayerId,
    /// Number of entries in the tree, the root directory included.
    pub entries: u64,
    /// Sum of the sizes of its regular files.
    pub bytes: u64,
    /// When it was imported (RFC 3339, UTC).
    pub imported: String,
}

/// How envd is started on a template: what the runtime needs besides the layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvdConfig {
    /// The arbor-envd versions this template was built for, as a semver requirement (`>=0.1.0`).
    pub version_req: String,
    /// An empty regular file in the layer where the runtime bind-mounts the envd binary.
    pub mount_point: String,
    /// The user envd runs commands as when a request names none.
    pub default_user: String,
    /// The working directory of commands that name none.
    pub default_workdir: String,
}

/// A named reference (`refs/<name>.json`), e.g. the template `templates/base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefManifest {
    /// Always [`REF_SCHEMA`] when written by this build.
    pub schema: u32,
    /// Layers, bottom first: the first is the lowest overlayfs lower dir.
    pub layers: Vec<LayerId>,
    /// When the reference was made (RFC 3339, UTC).
    pub created: String,
    /// How to start envd on it.
    pub envd: EnvdConfig,
    /// Free-form facts (`suite`, `builder`, ...), for people and tools; the runtime ignores them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

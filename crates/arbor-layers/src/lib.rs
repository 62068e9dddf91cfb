//! `arbor-layers`: the node's store of immutable, content-addressed root-filesystem layers.
//!
//! A layer is a directory tree (a root filesystem, or the changes of a snapshot) that never changes
//! once imported. Its name is the SHA-256 digest of its content ([`digest`] says exactly what is
//! hashed), so two imports of the same tree are one layer, and [`LayerStore::verify`] can tell whether
//! a layer was modified after the fact. Sandboxes stack layers as overlayfs lower directories.
//! A reference (`templates/base`, ...) names an ordered list of layers plus how to start envd on them.
//!
//! On-disk layout under the data dir (default `/var/lib/arbor`):
//!
//! ```text
//! layers/sha256-<hex>/rootfs/      the tree; overlayfs lowerdir
//! layers/sha256-<hex>/layer.json   LayerInfo: id, entry count, bytes, import time
//! refs/<name>.json                 RefManifest, e.g. refs/templates/base.json
//! tmp/                             imports and removals in progress (same filesystem, for rename)
//! .lock                            flock: serialises ref writes against removals
//! ```
//!
//! Every change becomes visible through one `rename(2)`, so readers never see half a layer or half a
//! reference, and concurrent importers of the same tree race harmlessly.
//!
//! Crates used, and why: `sha2` for the digest, `walkdir` for a sorted, non-following walk,
//! `xattr` to read extended attributes without following symlinks, `serde_json` for manifests,
//! `nix` for `flock(2)`, `thiserror` for the error type.
#![warn(missing_docs)]

pub mod digest;
mod error;
mod id;
mod manifest;
mod store;
mod time;

pub use error::{Error, Result};
pub use id::LayerId;
pub use manifest::{EnvdConfig, LayerInfo, RefManifest, REF_SCHEMA};
pub use store::LayerStore;
pub use time::now_rfc3339;

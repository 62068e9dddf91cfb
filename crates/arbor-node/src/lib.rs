//! `arbor-node`: the node agent of one host.
//!
//! It owns the runtime driver and the host's layer store: it turns a
//! template name into the layers and defaults a sandbox starts from, and a
//! control-plane request into a [`arbor_runtime::SandboxSpec`]. The control
//! plane (`arbor-api`) holds every durable fact; a node holds only what runs
//! on it, and on start reconciles the host with the sandboxes the control
//! plane says it owns.
//!
//! It also keeps envd binaries by content (a checkpoint needs the exact
//! binary it was taken with) and hands a restored envd its new access token.
//!
//! [`capacity`] is its admission control: a create, resume or clone that
//! would overcommit the host is refused before anything starts.
//!
//! Crates: `sha2` (envd content hashes), `hyper`/`hyper-util` (the one HTTP
//! call to a restored envd's `/init`), `serde_json`, `thiserror`, `tracing`;
//! the rest of the work is in the runtime and layer crates.
#![warn(missing_docs)]

pub mod capacity;
mod envd;
mod error;
mod node;
mod persist;
mod template;

pub use arbor_runtime::{confined, linux::host_resolv_conf};
pub use capacity::CapacityConfig;
pub use error::{Error, Result};
pub use node::{hostname, Node, NodeConfig, StartSpec, Started};
pub use template::{env as template_env, Template, DEFAULT_CPU_COUNT, DEFAULT_DISK_MB, DEFAULT_MEMORY_MB, ENV_LABEL};

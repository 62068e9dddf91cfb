//! What a sandbox is made of.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf};

/// A sandbox as the node agent asks for it.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Sandbox id: `[a-z0-9-]`, at most 64 characters; names the cgroup and dirs.
    pub id: String,
    /// Immutable root-filesystem layers, top first (overlay `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Environment variables of every process envd starts.
    pub env: BTreeMap<String, String>,
    /// The envd access token.
    pub access_token: Option<String>,
    /// vCPUs (1–8).
    pub vcpus: u32,
    /// Memory limit in MiB.
    pub memory_mib: u64,
    /// Process limit.
    pub pids: u64,
    /// Disk limit of the sandbox's writable layer in MiB (`None`: unlimited).
    pub disk_mib: Option<u64>,
    /// A network with this egress policy (a veth to the host, reachable at
    /// its own host address), or `None` for only loopback.
    pub network: Option<arbor_net::Policy>,
}

/// What `arbor-launch` gets on stdin: the spec resolved to host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Lower layers, top first.
    pub layers: Vec<PathBuf>,
    /// The sandbox's writable upper dir.
    pub upper: PathBuf,
    /// overlayfs work dir (same file system as `upper`).
    pub work: PathBuf,
    /// Where the merged root is mounted (inside the sandbox's mount namespace only).
    pub rootfs: PathBuf,
    /// The static envd binary on the host, bind-mounted read-only.
    pub envd: PathBuf,
    /// Hostname.
    pub hostname: String,
    /// Environment variables of every process envd starts.
    pub env: BTreeMap<String, String>,
    /// envd's access token.
    pub access_token: Option<String>,
    /// `cgroup.procs` files the launcher joins before creating namespaces.
    pub cgroup_procs: Vec<PathBuf>,
    /// Network namespace to join; without one the sandbox gets a new one
    /// with only loopback.
    pub netns: Option<PathBuf>,
    /// `/etc/resolv.conf` to write (the host's reachable name servers).
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// Where envd sits inside every sandbox.
pub const ENVD_PATH: &str = "/.arbor/envd";

/// What `arbor-launch restore` gets on stdin: a checkpoint to restore into a
/// prepared cgroup and network namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// Lower layers, top first.
    pub layers: Vec<PathBuf>,
    /// The new sandbox's upper dir (a copy of the checkpoint's).
    pub upper: PathBuf,
    /// overlayfs work dir.
    pub work: PathBuf,
    /// Where the merged root is mounted (in the restorer's mount namespace).
    pub rootfs: PathBuf,
    /// The checkpoint's CRIU images.
    pub images: PathBuf,
    /// Where CRIU writes the restored PID 1's host pid.
    pub pidfile: PathBuf,
    /// The CRIU binary.
    pub criu: PathBuf,
    /// Host mounts to map the images' external mount keys to.
    pub externals: Vec<crate::checkpoint::ExternalMount>,
    /// `cgroup.procs` files the restorer joins first, so the restored tree
    /// starts inside the sandbox's limits.
    pub cgroup_procs: Vec<PathBuf>,
    /// The network namespace the restored tree gets.
    pub netns: PathBuf,
}

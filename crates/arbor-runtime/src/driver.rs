//! The interface between the node agent and an isolation technology.

use crate::{
    checkpoint::{After, Checkpoint},
    spec::SandboxSpec,
    Result,
};
use std::{collections::HashSet, net::Ipv4Addr};

/// A running sandbox, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// envd's pid as the host sees it (PID 1 inside).
    pub init_pid: u32,
    /// The address the host reaches the sandbox's ports at (envd on 49983),
    /// or `None` for a sandbox with only loopback.
    pub host_addr: Option<Ipv4Addr>,
}

/// A sandbox's health and resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Whether its PID 1 (envd) still runs.
    pub running: bool,
    /// How many processes the kernel's OOM killer ended inside the sandbox.
    pub oom_kills: u64,
    /// CPU time used by everything in it so far, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to it now, in bytes.
    pub memory_bytes: u64,
    /// Tasks (processes and threads) in it now.
    pub tasks: u64,
    /// Bytes its writable layer holds (as of the file system's last commit),
    /// where the node limits disks.
    pub disk_bytes: Option<u64>,
}

/// Creates and destroys sandboxes on one host.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Creates and starts a sandbox; returns once envd listens. A failed
    /// create leaves nothing behind.
    async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox>;
    /// Kills everything in the sandbox and removes all it used on the host.
    async fn destroy(&self, id: &str) -> Result<()>;
    /// Whether the sandbox still runs, and what it uses.
    async fn status(&self, id: &str) -> Result<Status>;
    /// Ids of the sandboxes this driver finds on the host.
    async fn list(&self) -> Result<Vec<String>>;
    /// Removes every sandbox (and every leftover of a crashed predecessor:
    /// processes, cgroups, network namespaces, veths, rules, directories)
    /// whose id is not in `keep`. Returns the ids removed.
    async fn reconcile(&self, keep: &HashSet<String>) -> Result<Vec<String>>;

    /// Stops every process of sandbox `id` where it is (the cgroup freezer):
    /// no CPU, memory kept. Idempotent.
    async fn freeze(&self, id: &str) -> Result<()>;
    /// Lets the processes of a frozen sandbox run on. Idempotent.
    async fn thaw(&self, id: &str) -> Result<()>;
    /// Saves sandbox `id` (memory and file system, consistent with each
    /// other) as checkpoint `name`, then lets it run on or destroys it. The
    /// checkpoint exists only once complete; a failure leaves none behind and
    /// the sandbox running.
    async fn checkpoint(&self, id: &str, name: &str, after: After) -> Result<Checkpoint>;
    /// Creates sandbox `spec.id` from checkpoint `name`: its file system and
    /// processes as they were saved, with the spec's own limits, network and
    /// hostname. `spec.layers` must be the checkpoint's. The checkpoint stays,
    /// for more restores. A failed restore leaves nothing behind.
    async fn restore(&self, spec: &SandboxSpec, name: &str) -> Result<Sandbox>;
    /// The complete checkpoint `name`.
    async fn checkpoint_info(&self, name: &str) -> Result<Checkpoint>;
    /// Copies checkpoint `from` as `to` (cheaply where the file system shares blocks).
    async fn copy_checkpoint(&self, from: &str, to: &str) -> Result<Checkpoint>;
    /// Deletes checkpoint `name`.
    async fn remove_checkpoint(&self, name: &str) -> Result<()>;
    /// Names of the complete checkpoints on this host. (Incomplete ones, left
    /// by a crash, are removed by [`Driver::reconcile`].)
    async fn checkpoints(&self) -> Result<Vec<String>>;
    /// Copies what sandbox `id` changed of its layers to `dst` (a directory
    /// that must not exist yet), in overlayfs upper-dir form: deletions as
    /// 0/0 character devices, replaced directories marked opaque. Template
    /// builds turn it into a layer. Freeze the sandbox first for a
    /// consistent copy.
    async fn export_changes(&self, id: &str, dst: &std::path::Path) -> Result<()>;
    /// [`Driver::export_changes`] of the sandbox as checkpoint `name` saved it.
    async fn export_checkpoint_changes(&self, name: &str, dst: &std::path::Path) -> Result<()>;
}

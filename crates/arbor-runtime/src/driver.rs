//! The interface between the node agent and an isolation technology.

use crate::{spec::SandboxSpec, Result};

/// A running sandbox, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// envd's pid as the host sees it (PID 1 inside).
    pub init_pid: u32,
}

/// Creates and destroys sandboxes on one host.
pub trait Driver: Send + Sync {
    /// Creates and starts a sandbox; returns once envd runs as its PID 1.
    fn create(&self, spec: &SandboxSpec) -> Result<Sandbox>;
    /// Kills everything in the sandbox and removes all it used on the host.
    fn destroy(&self, id: &str) -> Result<()>;
    /// Ids of the sandboxes this driver finds on the host.
    fn list(&self) -> Result<Vec<String>>;
}

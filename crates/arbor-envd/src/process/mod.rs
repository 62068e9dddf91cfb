//! The `process.Process` Connect service (scaffold).
pub mod rpc;

/// Processes started through the process service.
#[derive(Debug, Default)]
pub struct Processes {}

impl Processes {
    /// Installs the SIGCHLD loop.
    pub fn start_reaper(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// Signals every process.
    pub fn signal_all(&self, _sig: nix::sys::signal::Signal) {}
    /// Resolves once no process is left.
    pub async fn wait_all_exited(&self) {}
}

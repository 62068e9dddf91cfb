//! What PID 1 does last before it executes envd: the seccomp filter, then
//! the capability drop (docs/runtime.md, "Hardening").
//!
//! The order matters. Installing a filter without `no_new_privs` needs
//! `CAP_SYS_ADMIN`, which the drop removes; the filter allows the `capset`
//! and `prctl` calls the drop makes. `no_new_privs` is not set at all: it
//! would stop setuid binaries such as `sudo` from gaining root.

use super::{caps, seccomp};
use crate::error::Result;
use std::os::fd::OwnedFd;

/// Installs the seccomp filter and drops capabilities on the calling
/// (single-threaded) process; both are inherited by envd and everything it
/// starts. Returns the filter's listener, for the node's FUSE supervisor.
pub fn apply() -> Result<OwnedFd> {
    let listener = seccomp::install()?;
    caps::drop_to_kept()?;
    Ok(listener)
}

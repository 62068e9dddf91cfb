//! Cleaning up after a crashed predecessor.
//!
//! A sandbox leaves traces in four places: its directory, its cgroup (with
//! its processes), its network (pinned namespace, veth, nftables rules) and
//! its init's zombie. Mounts need no sweep: they exist only in sandbox mount
//! namespaces, which end with their processes.

use super::LinuxDriver;
use crate::{driver::Driver, error::Result};
use std::collections::{BTreeSet, HashSet};

/// Removes every sandbox whose id is not in `keep`, wherever a trace of it is.
pub async fn run(driver: &LinuxDriver, keep: &HashSet<String>) -> Result<Vec<String>> {
    let mut found: BTreeSet<String> = driver.list().await?.into_iter().collect();
    found.extend(driver.cgroups.list(&driver.cgroup_parent)?);
    if let Some(net) = &driver.net {
        found.extend(net.ids().await);
    }
    let mut removed = Vec::new();
    let mut first_err = None;
    for id in found.into_iter().filter(|id| !keep.contains(id)) {
        match driver.remove(&id).await {
            Ok(()) => removed.push(id),
            Err(e) => {
                tracing::warn!(%id, "reconcile: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    // A crash during a checkpoint leaves the sandbox frozen: thaw what stays.
    for id in keep {
        if let Ok(cgroup) = driver.cgroups.open(&driver.cgroup_parent, id) {
            if cgroup.exists() && cgroup.is_frozen().unwrap_or(false) {
                tracing::warn!(%id, "reconcile: thawing a sandbox a checkpoint left frozen");
                if let Err(e) = cgroup.thaw() {
                    first_err.get_or_insert(e.into());
                }
            }
        }
    }
    // Checkpoints a crash interrupted: never complete, never used.
    for name in driver.checkpoint_names(false)? {
        if let Err(e) = driver.remove_checkpoint(&name).await {
            tracing::warn!(%name, "reconcile: {e}");
        }
    }
    // Whatever carried no id we could read: cgroups with odd names, veths
    // and rules of namespaces that were never pinned.
    let stale = driver.cgroups.cleanup_stale(&driver.cgroup_parent, keep);
    let net = match &driver.net {
        Some(net) => net.reconcile(keep).await.map(drop).map_err(Into::into),
        None => Ok(()),
    };
    match first_err {
        Some(e) => Err(e),
        None => stale.map_err(Into::into).and(net).map(|()| removed),
    }
}

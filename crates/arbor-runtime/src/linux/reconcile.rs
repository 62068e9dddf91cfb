//! Cleaning up after a crashed predecessor.
//!
//! A sandbox leaves traces in four places: its directory, its cgroup (with
//! its processes), its network (pinned namespace, veth, nftables rules) and
//! its init's zombie. Mounts need no sweep: they exist only in sandbox mount
//! namespaces, which end with their processes.

use super::LinuxDriver;
use crate::{driver::Driver, error::Result};
use std::{
    collections::{BTreeSet, HashSet},
    path::Path,
    time::{Duration, Instant},
};

/// How long reconcile waits for a predecessor's CRIU to finish before killing it.
const CRIU_WAIT: Duration = Duration::from_secs(30);

/// Removes every sandbox whose id is not in `keep`, wherever a trace of it is.
pub async fn run(driver: &LinuxDriver, keep: &HashSet<String>) -> Result<Vec<String>> {
    // A crashed predecessor's `criu dump` or `criu restore` goes on without
    // it and holds sandbox processes (seized, half restored) until done:
    // nothing here can be judged before they end.
    let checkpoints = driver.checkpoints.clone();
    tokio::task::spawn_blocking(move || wait_for_criu(&checkpoints))
        .await
        .map_err(|e| crate::error::Error::Task("waiting for CRIU", e.to_string()))?;
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

/// Pids of the CRIU processes working on images under `checkpoints`.
fn criu_processes(checkpoints: &Path) -> Vec<i32> {
    let needle = format!("{}/", checkpoints.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            args.next().is_some_and(|argv0| argv0.ends_with("criu")) && args.any(|a| a.starts_with(&needle))
        })
        .collect()
}

/// Waits until no CRIU works on this node's checkpoints; kills what
/// outlasts [`CRIU_WAIT`].
fn wait_for_criu(checkpoints: &Path) {
    let start = Instant::now();
    loop {
        let pids = criu_processes(checkpoints);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > CRIU_WAIT {
            for pid in pids {
                tracing::warn!(pid, "reconcile: killing a CRIU left by a crash");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

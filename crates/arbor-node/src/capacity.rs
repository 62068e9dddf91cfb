//! Admission control: what this host can hold, and what its sandboxes have
//! claimed of it.
//!
//! Each sandbox has limits of its own (memory, tasks, disk), but limits
//! alone let N sandboxes together take more than the host has: eight fork
//! bombs at 4096 tasks each fill a 32768-pid host, and a 64 GiB sandbox
//! fits on no 24 GiB one. Two layers keep the node and its server alive:
//! the parent cgroup of every sandbox gets host-level caps (`host_limits`,
//! the kernel enforces them whatever runs inside), and this ledger refuses
//! a create, resume or clone whose limits, added to the claims of every
//! sandbox already here, would exceed the host's capacity times the
//! configured overcommit ratio, or that would start on a nearly full disk.
//! Limits are caps, not reservations (a sandbox rarely uses all of its
//! memory, and clones share pages through KSM), hence ratios above 1.

use crate::error::{Error, Result};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// How far the node may promise beyond what it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    /// Sum of sandbox memory limits over the memory sandboxes may use.
    pub memory_overcommit: f64,
    /// Sum of sandbox task limits over the tasks sandboxes may run.
    pub pids_overcommit: f64,
    /// Free space (MiB) the data disk keeps: no sandbox starts below it.
    pub disk_reserve_mib: u64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        // 4 × memory: 100 clones of a 512 MiB sandbox on a 24 GiB host (they
        // share most pages). 16 × tasks: 4096 per sandbox is a fork-bomb
        // fence, not a need; the parent cgroup's cap is what protects.
        CapacityConfig { memory_overcommit: 4.0, pids_overcommit: 16.0, disk_reserve_mib: 1024 }
    }
}

/// What one sandbox claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Its memory limit, MiB.
    pub memory_mib: u64,
    /// Its task limit.
    pub pids: u64,
}

/// The host's capacity for sandboxes and the claims on it.
#[derive(Debug)]
pub struct Capacity {
    /// Memory all sandboxes together may use (the parent cgroup's cap), MiB.
    memory_mib: u64,
    /// Tasks all sandboxes together may run (the parent cgroup's cap).
    pids: u64,
    cfg: CapacityConfig,
    /// Directories whose file systems must keep `disk_reserve_mib` free.
    disks: Vec<PathBuf>,
    claims: Mutex<HashMap<String, Claim>>,
}

impl Capacity {
    /// Capacity of a host with `memory_mib` and `pids` for sandboxes (see
    /// [`host_limits`]), whose sandboxes and checkpoints live on the file
    /// systems of `disks`.
    pub fn new(memory_mib: u64, pids: u64, cfg: CapacityConfig, disks: Vec<PathBuf>) -> Capacity {
        Capacity { memory_mib, pids, cfg, disks, claims: Mutex::new(HashMap::new()) }
    }

    /// Claims `claim` for sandbox `id`, or refuses: [`Error::Exhausted`]
    /// when memory or tasks would be overcommitted beyond the ratios (or the
    /// sandbox alone is larger than the host), [`Error::NoSpace`] when the
    /// data disk is below its reserve. A second claim for the same id
    /// replaces the first.
    pub fn admit(&self, id: &str, claim: Claim) -> Result<()> {
        if claim.memory_mib > self.memory_mib {
            return Err(Error::Exhausted(format!(
                "a sandbox of {} MiB cannot run on this node: sandboxes may use {} MiB of memory in all",
                claim.memory_mib, self.memory_mib
            )));
        }
        for disk in &self.disks {
            let free = free_mib(disk)?;
            if free < self.cfg.disk_reserve_mib {
                return Err(Error::NoSpace(format!(
                    "the node's disk has {free} MiB free, below its reserve of {} MiB: delete snapshots, \
                     templates or paused sandboxes",
                    self.cfg.disk_reserve_mib
                )));
            }
        }
        let mut claims = self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (memory, pids) = claims
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .fold((0u64, 0u64), |(m, p), (_, c)| (m.saturating_add(c.memory_mib), p.saturating_add(c.pids)));
        let memory_budget = scaled(self.memory_mib, self.cfg.memory_overcommit);
        if memory.saturating_add(claim.memory_mib) > memory_budget {
            return Err(Error::Exhausted(format!(
                "the node is full: its sandboxes have {memory} MiB of memory limits and another {} MiB would \
                 exceed {memory_budget} MiB ({} MiB × {}); try again later or ask for less memory",
                claim.memory_mib, self.memory_mib, self.cfg.memory_overcommit
            )));
        }
        let pids_budget = scaled(self.pids, self.cfg.pids_overcommit);
        if pids.saturating_add(claim.pids) > pids_budget {
            return Err(Error::Exhausted(format!(
                "the node is full: its sandboxes may run {pids} tasks and another {} would exceed {pids_budget}; \
                 try again later",
                claim.pids
            )));
        }
        claims.insert(id.to_string(), claim);
        Ok(())
    }

    /// Gives back sandbox `id`'s claim (it stopped, paused or failed to start).
    pub fn release(&self, id: &str) {
        self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }

    /// Replaces every claim (after a restart: the sandboxes still running).
    pub fn reset(&self, claims: HashMap<String, Claim>) {
        *self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = claims;
    }

    /// Memory limits claimed now, MiB, and what sandboxes may use in all.
    pub fn memory(&self) -> (u64, u64) {
        let claims = self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (claims.values().map(|c| c.memory_mib).sum(), self.memory_mib)
    }
}

fn scaled(n: u64, ratio: f64) -> u64 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = (n as f64 * ratio.max(0.0)) as u64;
    v
}

fn free_mib(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::Invalid(format!("reading the free space of {}: {e}", dir.display())))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()) >> 20)
}

/// What all sandboxes of a host together may use: its memory but a reserve
/// for the host and the server (a tenth, at least 1 GiB), and three
/// quarters of its task ids (`kernel.pid_max` or `threads-max`, the lower),
/// so that a tenant filling every sandbox leaves the host room to log in,
/// run the server and kill them. `(memory MiB, tasks)`.
pub fn host_limits() -> Result<(u64, u64)> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::Invalid(format!("reading /proc/meminfo: {e}")))?;
    let total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| Error::Invalid("no MemTotal in /proc/meminfo".into()))?;
    let total_mib = total_kib >> 10;
    let memory = total_mib.saturating_sub((total_mib / 10).max(1024));
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let ids = [read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")]
        .into_iter()
        .flatten()
        .min()
        .ok_or_else(|| Error::Invalid("no kernel.pid_max".into()))?;
    Ok((memory.max(256), (ids / 4 * 3).max(1024)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn capacity(memory: u64, pids: u64, cfg: CapacityConfig) -> Capacity {
        Capacity::new(memory, pids, cfg, vec![std::env::temp_dir()])
    }

    #[test]
    fn claims_add_up_to_the_ratio() {
        let cfg = CapacityConfig { memory_overcommit: 2.0, pids_overcommit: 1.0, disk_reserve_mib: 0 };
        let c = capacity(1000, 10_000, cfg);
        let claim = Claim { memory_mib: 500, pids: 100 };
        for id in ["a", "b", "c", "d"] {
            c.admit(id, claim).unwrap();
        }
        let e = c.admit("e", claim).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "{e}");
        assert!(e.to_string().contains("2000 MiB"), "{e}");
        // A second claim of a sandbox already here replaces its first.
        c.admit("d", claim).unwrap();
        c.release("a");
        c.admit("e", claim).unwrap();
        assert_eq!(c.memory(), (2000, 1000));
    }

    #[test]
    fn tasks_and_giant_sandboxes_are_refused() {
        let cfg = CapacityConfig { memory_overcommit: 100.0, pids_overcommit: 1.0, disk_reserve_mib: 0 };
        let c = capacity(1000, 8192, cfg);
        c.admit("a", Claim { memory_mib: 10, pids: 4096 }).unwrap();
        c.admit("b", Claim { memory_mib: 10, pids: 4096 }).unwrap();
        assert!(matches!(c.admit("c", Claim { memory_mib: 10, pids: 4096 }), Err(Error::Exhausted(_))));
        let giant = c.admit("d", Claim { memory_mib: 65536, pids: 1 }).unwrap_err();
        assert!(giant.to_string().contains("cannot run on this node"), "{giant}");
    }

    #[test]
    fn a_full_disk_refuses_with_no_space() {
        let cfg = CapacityConfig { disk_reserve_mib: u64::MAX, ..CapacityConfig::default() };
        let e = capacity(1000, 8192, cfg).admit("a", Claim { memory_mib: 1, pids: 1 }).unwrap_err();
        assert!(matches!(e, Error::NoSpace(_)), "{e}");
    }

    #[test]
    fn host_limits_leave_a_reserve() {
        let (memory, pids) = host_limits().unwrap();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(memory + 1024 <= total_kib >> 10, "{memory} MiB of {} MiB", total_kib >> 10);
        let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        assert!(pids <= pid_max / 4 * 3, "{pids} of {pid_max}");
    }
}

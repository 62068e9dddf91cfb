//! Memory of a group of sandboxes as the kernel accounts it: their memory
//! cgroups' charge, the proportional set size of their processes, and the
//! host's `MemAvailable`.

use std::path::{Path, PathBuf};

/// The memory cgroup dir of cgroup path `rel` (relative to the root) on a v1,
/// hybrid or v2 host.
pub fn memory_dir(rel: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let root = if v1.is_dir() { v1 } else { Path::new("/sys/fs/cgroup") };
    root.join(rel.trim_start_matches('/'))
}

/// What a set of sandboxes uses, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The sum of their memory cgroups' charge (v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`): page cache and kernel memory included; a
    /// page shared between cgroups is charged to one of them.
    pub charged: u64,
    /// The sum of `Pss` over all their processes: shared pages (same-page
    /// merging, page cache) split between their users.
    pub pss: u64,
    /// How many processes that is.
    pub procs: usize,
}

impl Usage {
    /// Reads the memory cgroup dirs `dirs` and the processes in them.
    pub fn of(dirs: &[PathBuf]) -> Self {
        let mut u = Self::default();
        for d in dirs {
            let charge = ["memory.usage_in_bytes", "memory.current"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok()?.trim().parse::<u64>().ok());
            u.charged += charge.unwrap_or(0);
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                if let Some(kib) = pss_kib(pid) {
                    u.pss += kib * 1024;
                    u.procs += 1;
                }
            }
        }
        u
    }
}

/// `Pss` of one process from `smaps_rollup`, in KiB.
fn pss_kib(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Pss:")?.split_whitespace().next()?.parse().ok())
}

/// The host's `MemAvailable`, in bytes.
pub fn available() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:")?.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

/// Whether the kernel's same-page merging daemon runs (`/sys/kernel/mm/ksm/run`).
pub fn ksm_state() -> String {
    match std::fs::read_to_string("/sys/kernel/mm/ksm/run").map(|s| s.trim().to_string()) {
        Ok(s) if s == "1" => "running".into(),
        Ok(s) if s == "0" => "stopped (run = 0)".into(),
        Ok(s) => format!("run = {s}"),
        Err(_) => "not available".into(),
    }
}

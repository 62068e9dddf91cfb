//! Host memory as the kernel reports it: `/proc/meminfo`, sandbox cgroups,
//! and one process's `smaps_rollup`.

use std::{collections::HashMap, path::Path};

/// The `/proc/meminfo` fields that move when sandboxes are added, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemInfo {
    /// `MemAvailable`: what the host could still give out.
    pub available: i64,
    /// Kernel memory that namespaces, mounts, sockets and veths cost:
    /// `Slab + KernelStack + PageTables`.
    pub kernel: i64,
}

impl MemInfo {
    /// Reads `/proc/meminfo`.
    pub fn read() -> anyhow::Result<Self> {
        let text = std::fs::read_to_string("/proc/meminfo")?;
        let fields: HashMap<&str, i64> = text
            .lines()
            .filter_map(|l| {
                let (k, rest) = l.split_once(':')?;
                Some((k, rest.split_whitespace().next()?.parse().ok()?))
            })
            .collect();
        let get = |k: &str| fields.get(k).copied().unwrap_or(0);
        Ok(Self { available: get("MemAvailable"), kernel: get("Slab") + get("KernelStack") + get("PageTables") })
    }
}

/// Memory charged to one sandbox's cgroup, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupMem {
    /// Everything charged (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: i64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub anon: i64,
    /// Page cache first touched from inside (v1 `total_cache`, v2 `file`).
    pub file: i64,
}

impl CgroupMem {
    /// Reads the memory cgroup `arbor/<id>` on a v1 or v2 host; zeros if it is not there.
    pub fn read(id: &str) -> Self {
        let v1 = Path::new("/sys/fs/cgroup/memory/arbor").join(id);
        let v2 = Path::new("/sys/fs/cgroup/arbor").join(id);
        let (dir, usage_file, anon_key, file_key) = if v1.is_dir() {
            (v1, "memory.usage_in_bytes", "total_rss", "total_cache")
        } else {
            (v2, "memory.current", "anon", "file")
        };
        let kib = |s: &str| s.trim().parse::<i64>().map(|b| b / 1024).unwrap_or(0);
        let usage = std::fs::read_to_string(dir.join(usage_file)).map(|s| kib(&s)).unwrap_or(0);
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let key = |k: &str| stat.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(' ').map(kib)).unwrap_or(0);
        Self { usage, anon: key(anon_key), file: key(file_key) }
    }
}

/// One process's memory from `/proc/<pid>/smaps_rollup`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcMem {
    /// Resident set.
    pub rss: i64,
    /// Proportional set: shared pages divided among their users.
    pub pss: i64,
    /// Pages only this process maps.
    pub private: i64,
}

impl ProcMem {
    /// Reads `pid`'s rollup; `None` if it is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let mut m = Self::default();
        for line in text.lines() {
            let Some((k, rest)) = line.split_once(':') else { continue };
            let v: i64 = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match k {
                "Rss" => m.rss = v,
                "Pss" => m.pss = v,
                "Private_Clean" | "Private_Dirty" => m.private += v,
                _ => {}
            }
        }
        Some(m)
    }
}

/// KiB as MiB.
pub fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// The host's IPv4 neighbour-table overflows so far (`table_fulls` of
/// `/proc/net/stat/arp_cache`, summed over CPUs): each is a neighbour entry
/// the kernel could not create, so a packet to that neighbour was dropped.
pub fn neigh_table_fulls() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/stat/arp_cache") else { return 0 };
    let mut lines = text.lines();
    let Some(col) = lines.next().and_then(|h| h.split_whitespace().position(|c| c == "table_fulls")) else {
        return 0;
    };
    lines.filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(col)?, 16).ok()).sum()
}

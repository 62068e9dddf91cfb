//! Memory of a group of sandboxes as the kernel accounts it: their memory
//! cgroups' charge and the proportional set size of their processes; and
//! the kernel's same-page merging (KSM), which can shrink both.

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

/// Whether the kernel's same-page merging daemon runs (`/sys/kernel/mm/ksm/run`).
pub fn ksm_state() -> String {
    match std::fs::read_to_string("/sys/kernel/mm/ksm/run").map(|s| s.trim().to_string()) {
        Ok(s) if s == "1" => "running".into(),
        Ok(s) if s == "0" => "stopped (run = 0)".into(),
        Ok(s) => format!("run = {s}"),
        Err(_) => "not available".into(),
    }
}

const KSM: &str = "/sys/kernel/mm/ksm";

fn ksm_read(file: &str) -> anyhow::Result<String> {
    let path = Path::new(KSM).join(file);
    Ok(std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        .trim()
        .to_string())
}

fn ksm_write(file: &str, value: &str) -> anyhow::Result<()> {
    let path = Path::new(KSM).join(file);
    std::fs::write(&path, value).map_err(|e| anyhow::anyhow!("writing {value} to {}: {e}", path.display()))
}

/// Same-page merging switched on (and scanning fast) for as long as it
/// lives; the host's previous settings come back when it is dropped.
#[derive(Debug)]
pub struct KsmOn {
    run: String,
    pages_to_scan: String,
}

impl KsmOn {
    /// Pages ksmd scans per wake-up (every 20 ms by default) while on:
    /// 5000 is about 1 GiB/s, so the clones of even 1 GiB are scanned in seconds.
    const PAGES_TO_SCAN: &'static str = "5000";

    /// Starts ksmd.
    pub fn start() -> anyhow::Result<Self> {
        let on = Self { run: ksm_read("run")?, pages_to_scan: ksm_read("pages_to_scan")? };
        ksm_write("pages_to_scan", Self::PAGES_TO_SCAN)?;
        ksm_write("run", "1")?;
        Ok(on)
    }

    /// Waits until merging has settled, at most `within`: three full scans
    /// (the scan running now may have started before the clones existed; a
    /// page is checksummed in one scan and merged in the next that finds it
    /// unchanged), then more until a full scan merged no more pages.
    pub fn settle(&self, within: std::time::Duration) -> anyhow::Result<u64> {
        let num = |f: &str| -> anyhow::Result<u64> { Ok(ksm_read(f)?.parse()?) };
        let start = std::time::Instant::now();
        let next_scan = || -> anyhow::Result<()> {
            let first = num("full_scans")?;
            while num("full_scans")? == first {
                if start.elapsed() > within {
                    anyhow::bail!("ksmd did not settle within {within:?}");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(())
        };
        for _ in 0..3 {
            next_scan()?;
        }
        let mut sharing = num("pages_sharing")?;
        loop {
            next_scan()?;
            let now = num("pages_sharing")?;
            if now <= sharing {
                return Ok(now);
            }
            sharing = now;
        }
    }
}

impl Drop for KsmOn {
    fn drop(&mut self) {
        // Back to the host's settings; merged pages stay merged until freed.
        if let Err(e) = ksm_write("run", &self.run).and_then(|()| ksm_write("pages_to_scan", &self.pages_to_scan)) {
            eprintln!("restoring the KSM settings: {e:#}");
        }
    }
}

/// Reads the memory of the sandboxes in cgroup dirs `dirs` after `settle`;
/// with `ksm`, after two more full scans of a running ksmd.
pub fn settled(dirs: &[PathBuf], settle: std::time::Duration, ksm: bool) -> anyhow::Result<Usage> {
    std::thread::sleep(settle);
    if ksm {
        let on = KsmOn::start()?;
        on.settle(std::time::Duration::from_secs(600))?;
        let u = Usage::of(dirs);
        drop(on);
        return Ok(u);
    }
    Ok(Usage::of(dirs))
}

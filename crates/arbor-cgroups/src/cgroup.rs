//! One sandbox's cgroup: membership, limits, stats, freeze, kill and removal.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::{Controller, LimitWrite, Limits, Version, CPU_PERIOD_US, V1_UNLIMITED_THRESHOLD};

/// How long freeze waits for every task to stop (a task in uninterruptible sleep delays it).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long kill_all keeps killing before giving up on an unkillable member.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;

/// Usage counters of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// CPU time consumed by all members, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged now, in bytes.
    pub memory_current: u64,
    /// Highest memory charged, in bytes (None on v2 kernels without `memory.peak`, < 5.19).
    pub memory_peak: Option<u64>,
    /// Tasks (processes and threads) now in the cgroup.
    pub pids_current: u64,
    /// Processes the OOM killer killed in this cgroup.
    pub oom_kills: u64,
}

/// A cgroup of one sandbox, spread over every hierarchy of the host. Dropping it leaves the
/// cgroup in place: call [`Cgroup::destroy`].
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: Version,
    name: String,
    /// v1: the directory in each controller's hierarchy (co-mounted controllers share one).
    v1: Vec<(Controller, PathBuf)>,
    /// The cgroup2 directory: the cgroup itself on v2, the controller-less twin on hybrid hosts.
    unified: Option<PathBuf>,
}

impl Cgroup {
    pub(crate) fn new(
        version: Version,
        name: String,
        v1: Vec<(Controller, PathBuf)>,
        unified: Option<PathBuf>,
    ) -> Self {
        Cgroup { version, name, v1, unified }
    }

    /// The cgroup's name (its last path component).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which version's controllers enforce this cgroup's limits.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Every distinct directory of this cgroup, v1 ones first.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, p) in &self.v1 {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        if let Some(u) = &self.unified {
            out.push(u);
        }
        out
    }

    pub(crate) fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The directory holding `ctl`'s files.
    fn dir(&self, ctl: Controller) -> Result<&Path> {
        let found = match self.version {
            Version::V2 => self.unified.as_deref(),
            Version::V1 => self.v1.iter().find(|(c, _)| *c == ctl).map(|(_, p)| p.as_path()),
        };
        found.ok_or(Error::ControllerUnavailable(ctl.name()))
    }

    /// The directory whose freezer stops this cgroup (the v1 freezer hierarchy's, or the cgroup2
    /// directory with `cgroup.freeze`): what CRIU's `--freeze-cgroup` wants.
    pub fn freezer_dir(&self) -> Result<&Path> {
        self.dir(Controller::Freezer)
    }

    fn file(&self, ctl: Controller, name: &str) -> Result<PathBuf> {
        Ok(self.dir(ctl)?.join(name))
    }

    /// The `cgroup.procs` file of every directory. A child that writes `0` into each of them
    /// (between fork and exec) joins the cgroup before running anything: no window where it
    /// runs unlimited. Open them before forking; the writes are async-signal-safe syscalls.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Opens every `cgroup.procs` file now, so that a child can join between fork and exec with
    /// [`ProcsFds::join_current`], which only calls `write(2)`.
    pub fn open_procs(&self) -> Result<ProcsFds> {
        let mut fds = Vec::new();
        for path in self.procs_paths() {
            let file = fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            fds.push(OwnedFd::from(file));
        }
        Ok(ProcsFds { fds })
    }

    /// A directory fd of the cgroup for `clone3(CLONE_INTO_CGROUP)`. Only on v2, where that one
    /// directory is the whole cgroup; on v1 (hybrid too) use [`Cgroup::procs_paths`] instead.
    pub fn clone_into_fd(&self) -> Result<Option<OwnedFd>> {
        match (&self.version, &self.unified) {
            (Version::V2, Some(dir)) => {
                let file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
                    .open(dir)
                    .map_err(|e| Error::io("open", dir, e))?;
                Ok(Some(OwnedFd::from(file)))
            }
            _ => Ok(None),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        let value = pid.to_string();
        for path in self.procs_paths() {
            fsutil::write(&path, &value)?;
        }
        Ok(())
    }

    /// Processes in the cgroup and below, sorted, without duplicates.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        for dir in self.dirs() {
            fsutil::pids_recursive(dir, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Changes limits of a live cgroup; `None` fields are left as they are.
    pub fn set_limits(&self, limits: &Limits) -> Result<()> {
        self.apply(&limits.writes(self.version)?)
    }

    pub(crate) fn apply(&self, writes: &[LimitWrite]) -> Result<()> {
        for w in writes {
            let path = self.file(w.controller, w.file)?;
            match fsutil::write(&path, &w.value) {
                Err(e) if w.optional && e.is_not_found() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Reads the limits back from the kernel (`None` = unlimited).
    pub fn limits(&self) -> Result<Limits> {
        let (quota, period, mem, pids) = match self.version {
            Version::V1 => {
                let q = fsutil::read(&self.file(Controller::Cpu, "cpu.cfs_quota_us")?)?;
                let quota = match q.trim() {
                    "-1" => None,
                    s => Some(fsutil::parse_u64(Path::new("cpu.cfs_quota_us"), s)?),
                };
                let period = fsutil::read_u64(&self.file(Controller::Cpu, "cpu.cfs_period_us")?)?;
                let mem = fsutil::read_u64(&self.file(Controller::Memory, "memory.limit_in_bytes")?)?;
                let mem = (mem < V1_UNLIMITED_THRESHOLD).then_some(mem);
                let pids = fsutil::read_max(&self.file(Controller::Pids, "pids.max")?)?;
                (quota, period, mem, pids)
            }
            Version::V2 => {
                let path = self.file(Controller::Cpu, "cpu.max")?;
                let (quota, period) = parse_cpu_max(&path, &fsutil::read(&path)?)?;
                let mem = fsutil::read_max(&self.file(Controller::Memory, "memory.max")?)?;
                let pids = fsutil::read_max(&self.file(Controller::Pids, "pids.max")?)?;
                (quota, period, mem, pids)
            }
        };
        #[allow(clippy::cast_precision_loss)] // quota and period are well below 2^52 µs
        let cpus = quota.map(|q| q as f64 / period.max(1) as f64);
        Ok(Limits { cpus, memory_mib: mem.map(|b| b / MIB), pids })
    }

    /// Usage counters.
    pub fn stats(&self) -> Result<Stats> {
        let oom_kills = self.oom_kills()?;
        match self.version {
            Version::V1 => Ok(Stats {
                cpu_usage_ns: fsutil::read_u64(&self.file(Controller::Cpuacct, "cpuacct.usage")?)?,
                memory_current: fsutil::read_u64(&self.file(Controller::Memory, "memory.usage_in_bytes")?)?,
                memory_peak: Some(fsutil::read_u64(&self.file(Controller::Memory, "memory.max_usage_in_bytes")?)?),
                pids_current: fsutil::read_u64(&self.file(Controller::Pids, "pids.current")?)?,
                oom_kills,
            }),
            Version::V2 => {
                let usec = fsutil::read_keyed(&self.file(Controller::Cpu, "cpu.stat")?, "usage_usec")?;
                let peak = match fsutil::read_u64(&self.file(Controller::Memory, "memory.peak")?) {
                    Ok(v) => Some(v),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e),
                };
                Ok(Stats {
                    cpu_usage_ns: usec.saturating_mul(1000),
                    memory_current: fsutil::read_u64(&self.file(Controller::Memory, "memory.current")?)?,
                    memory_peak: peak,
                    pids_current: fsutil::read_u64(&self.file(Controller::Pids, "pids.current")?)?,
                    oom_kills,
                })
            }
        }
    }

    /// How many processes the OOM killer has killed in this cgroup (and below): a sandbox whose
    /// count grew was "OOM-killed".
    pub fn oom_kills(&self) -> Result<u64> {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        fsutil::read_keyed(&self.file(Controller::Memory, file)?, key)
    }

    /// Stops every task of the cgroup and returns once all are stopped.
    pub fn freeze(&self) -> Result<()> {
        match self.version {
            Version::V1 => {
                let state = self.file(Controller::Freezer, "freezer.state")?;
                wait_until(FREEZE_TIMEOUT, "the cgroup to freeze", || {
                    // Re-asking is how a v1 freeze that stalled on a busy task gets retried.
                    fsutil::write(&state, "FROZEN")?;
                    Ok(fsutil::read(&state)?.trim() == "FROZEN")
                })
            }
            Version::V2 => {
                let dir = self.dir(Controller::Freezer)?;
                fsutil::write(&dir.join("cgroup.freeze"), "1")?;
                let events = dir.join("cgroup.events");
                wait_until(FREEZE_TIMEOUT, "the cgroup to freeze", || Ok(fsutil::read_keyed(&events, "frozen")? == 1))
            }
        }
    }

    /// Lets the tasks of a frozen cgroup run again.
    pub fn thaw(&self) -> Result<()> {
        match self.version {
            Version::V1 => fsutil::write(&self.file(Controller::Freezer, "freezer.state")?, "THAWED"),
            Version::V2 => fsutil::write(&self.file(Controller::Freezer, "cgroup.freeze")?, "0"),
        }
    }

    /// True while the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        match self.version {
            Version::V1 => Ok(fsutil::read(&self.file(Controller::Freezer, "freezer.state")?)?.trim() == "FROZEN"),
            Version::V2 => Ok(fsutil::read_keyed(&self.file(Controller::Freezer, "cgroup.events")?, "frozen")? == 1),
        }
    }

    /// SIGKILLs every process in the cgroup and below and returns once none is left.
    ///
    /// With `cgroup.kill` (v2 ≥ 5.14, also on the hybrid cgroup2 twin) the kernel kills them
    /// all at once, including ones forked meanwhile. Otherwise: freeze so nothing forks while we
    /// look, SIGKILL every member, thaw so the kills land (v1 frozen tasks do not die), repeat.
    pub fn kill_all(&self) -> Result<()> {
        let kill_file = self.unified.as_ref().map(|u| u.join("cgroup.kill")).filter(|p| p.exists());
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > KILL_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("{} process(es) of cgroup {} to die", pids.len(), self.name),
                    after: KILL_TIMEOUT,
                });
            }
            match &kill_file {
                Some(file) if self.unified_populated()? => {
                    fsutil::write(file, "1")?;
                    // A task stopped by the v1 freezer sits on its pending SIGKILL until thawed
                    // (v2-frozen tasks die anyway); the kill is queued first, so nothing runs.
                    if self.version == Version::V1 {
                        self.thaw_if_present()?;
                    }
                }
                _ => self.kill_frozen(&pids)?,
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn unified_populated(&self) -> Result<bool> {
        match &self.unified {
            Some(dir) => match fsutil::read_keyed(&dir.join("cgroup.events"), "populated") {
                Ok(v) => Ok(v == 1),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// One round of freeze → SIGKILL all → thaw.
    pub(crate) fn kill_frozen(&self, pids: &[i32]) -> Result<()> {
        // A freeze that times out (a task stuck in D state) still lets us signal the rest.
        let frozen = match self.freeze() {
            Ok(()) => true,
            Err(Error::Timeout { .. }) => false,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        // Re-read under freeze: nothing can fork now.
        let pids = if frozen { self.pids()? } else { pids.to_vec() };
        let mut result = Ok(());
        for pid in pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    result = Err(Error::Signal { pid, source });
                    break;
                }
            }
        }
        result.and(self.thaw_if_present())
    }

    /// Thaws, treating an already removed freezer directory as thawed.
    fn thaw_if_present(&self) -> Result<()> {
        match self.thaw() {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Kills everything inside, then removes the cgroup's directories (and any sub-cgroups) in
    /// every hierarchy. Idempotent: parts already gone are fine.
    pub fn destroy(&self) -> Result<()> {
        self.kill_all()?;
        for dir in self.dirs() {
            fsutil::rmdir_tree(dir)?;
        }
        Ok(())
    }

    /// True if any of the cgroup's directories exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }
}

/// The `cgroup.procs` files of one cgroup, opened ahead of a fork (see [`Cgroup::open_procs`]).
#[derive(Debug)]
pub struct ProcsFds {
    fds: Vec<OwnedFd>,
}

impl ProcsFds {
    /// Moves the calling process into the cgroup in every hierarchy (`0` names the writer).
    /// Async-signal-safe: no allocation, only `write(2)`, so it may run in a forked child of a
    /// multi-threaded parent (e.g. from `Command::pre_exec`).
    pub fn join_current(&self) -> std::result::Result<(), Errno> {
        for fd in &self.fds {
            nix::unistd::write(fd, b"0")?;
        }
        Ok(())
    }
}

/// Parses v2 `cpu.max`: `max 100000` or `50000 100000`.
pub(crate) fn parse_cpu_max(path: &Path, text: &str) -> Result<(Option<u64>, u64)> {
    let mut parts = text.split_whitespace();
    let bad =
        || Error::Parse { path: path.to_path_buf(), what: format!("expected `<quota|max> <period>`, got {text:?}") };
    let quota = match parts.next().ok_or_else(bad)? {
        "max" => None,
        q => Some(q.parse().map_err(|_| bad())?),
    };
    let period = match parts.next() {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => CPU_PERIOD_US,
    };
    Ok((quota, period))
}

/// Polls `done` with a growing pause until it holds or `timeout` passes.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_parses() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "max 100000\n").ok(), Some((None, 100_000)));
        assert_eq!(parse_cpu_max(p, "50000 100000\n").ok(), Some((Some(50_000), 100_000)));
        assert!(parse_cpu_max(p, "").is_err());
        assert!(parse_cpu_max(p, "x 1").is_err());
    }

    #[test]
    fn v2_files_live_in_the_unified_dir() {
        let cg = Cgroup::new(Version::V2, "sb".into(), Vec::new(), Some(PathBuf::from("/sys/fs/cgroup/arbor/sb")));
        assert_eq!(
            cg.file(Controller::Memory, "memory.max").ok(),
            Some(PathBuf::from("/sys/fs/cgroup/arbor/sb/memory.max"))
        );
        assert_eq!(cg.procs_paths(), vec![PathBuf::from("/sys/fs/cgroup/arbor/sb/cgroup.procs")]);
    }

    #[test]
    fn v1_dirs_are_deduplicated() {
        let cpu = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/arbor/sb");
        let cg = Cgroup::new(
            Version::V1,
            "sb".into(),
            vec![
                (Controller::Cpu, cpu.clone()),
                (Controller::Cpuacct, cpu.clone()),
                (Controller::Memory, PathBuf::from("/sys/fs/cgroup/memory/arbor/sb")),
            ],
            Some(PathBuf::from("/sys/fs/cgroup/unified/arbor/sb")),
        );
        assert_eq!(cg.dirs().len(), 3);
        assert_eq!(cg.file(Controller::Cpuacct, "cpuacct.usage").ok(), Some(cpu.join("cpuacct.usage")));
        assert!(matches!(cg.file(Controller::Pids, "pids.max"), Err(Error::ControllerUnavailable("pids"))));
        assert!(cg.clone_into_fd().is_ok_and(|fd| fd.is_none()));
    }
}

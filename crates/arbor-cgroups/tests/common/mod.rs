//! Shared helpers: unique names, a cleanup guard, spawning children inside a cgroup.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use arbor_cgroups::{Cgroup, Hierarchy, Limits};

/// The host hierarchy, or None (with a notice) when not root or no usable cgroups.
pub fn hierarchy(test: &str) -> Option<Hierarchy> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root to manage cgroups");
        return None;
    }
    match Hierarchy::detect() {
        Ok(h) => {
            static SWEEP: Once = Once::new();
            SWEEP.call_once(|| sweep_dead_runs(&h));
            Some(h)
        }
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

/// Removes test parents left by an earlier run that was killed before its guards ran (their
/// names carry the pid of a process that no longer exists).
fn sweep_dead_runs(h: &Hierarchy) {
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    let mut stale = BTreeSet::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
            let Some(rest) = name.strip_prefix("arbor-test-") else {
                continue;
            };
            let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                stale.insert(name);
            }
        }
    }
    for parent in stale {
        eprintln!("removing {parent}, left by a killed test run");
        if let Err(e) = h.cleanup_stale(&parent, &HashSet::new()) {
            eprintln!("cleanup of {parent}: {e}");
        }
        let _ = h.remove_parent(&parent);
    }
}

/// A parent of our own per test, so parallel tests and a crashed earlier run never collide.
pub fn unique_parent(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("arbor-test-{}-{}-{}", test.replace('_', "-"), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Owns what a test made; Drop kills the children, destroys the cgroups and the parent, even
/// when the test fails.
pub struct Guard {
    pub hierarchy: Hierarchy,
    pub parent: String,
    pub cgroups: Vec<Cgroup>,
    pub children: Vec<Child>,
}

impl Guard {
    pub fn new(hierarchy: Hierarchy, test: &str) -> Self {
        Guard { hierarchy, parent: unique_parent(test), cgroups: Vec::new(), children: Vec::new() }
    }

    pub fn create(&mut self, name: &str, limits: &Limits) -> Cgroup {
        let cg = self.hierarchy.create(&self.parent, name, limits).expect("create cgroup");
        self.cgroups.push(cg.clone());
        cg
    }

    /// Runs `sh -c script` inside `cg`: the shell waits on stdin until it has been moved in, so
    /// `script` never runs outside the cgroup.
    pub fn spawn_in(&mut self, cg: &Cgroup, script: &str) -> u32 {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        cg.add_process(pid).expect("add process");
        child.stdin.take().expect("stdin").write_all(b"go\n").expect("release child");
        self.children.push(child);
        pid
    }

    /// Waits for the child `pid` to exit (bounded).
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> bool {
        let start = Instant::now();
        let Some(child) = self.children.iter_mut().find(|c| c.id() == pid) else {
            return false;
        };
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for cg in &self.cgroups {
            if let Err(e) = cg.destroy() {
                eprintln!("cleanup: destroying {}: {e}", cg.name());
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.hierarchy.remove_parent(&self.parent) {
            eprintln!("cleanup: removing {}: {e}", self.parent);
        }
    }
}

/// Polls `f` until true or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}

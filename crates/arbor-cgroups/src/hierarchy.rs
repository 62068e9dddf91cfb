//! Detecting the host's cgroup layout and creating, finding and reaping cgroups in it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::{Controller, Limits, Version};
use crate::mountinfo::{self, CgroupMount};

/// The v2 controllers enabled for our subtree: what limits and stats need.
const V2_CONTROLLERS: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

/// The host's cgroup layout, as found by [`Hierarchy::detect`].
#[derive(Debug, Clone)]
pub struct Hierarchy {
    version: Version,
    /// v1: the mount point of each controller (co-mounted controllers share one).
    v1: BTreeMap<Controller, PathBuf>,
    /// The cgroup2 mount. On v2 it is the hierarchy; on a hybrid host it has no controllers and
    /// only serves `cgroup.kill` and `cgroup.events`, which work without any.
    unified: Option<PathBuf>,
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo` and picks the layout: v2 when a cgroup2 mount offers the
    /// memory controller, else v1 when every needed v1 controller is mounted (the hybrid layout,
    /// v1 controllers plus an empty cgroup2 mount, is v1).
    pub fn detect() -> Result<Self> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fsutil::read(path)?;
        Self::from_mounts(&mountinfo::cgroup_mounts(&text), |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).ok()
        })
    }

    /// Uses the cgroup2 mount at `root` as the only hierarchy, whatever else is mounted.
    pub fn v2(root: impl Into<PathBuf>) -> Self {
        Hierarchy { version: Version::V2, v1: BTreeMap::new(), unified: Some(root.into()) }
    }

    /// Decides the layout from the cgroup mounts; `controllers_of` reads a cgroup2 root's
    /// `cgroup.controllers` (a parameter so the rule can be tested without a host).
    pub(crate) fn from_mounts(
        mounts: &[CgroupMount],
        controllers_of: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self> {
        let v2_mounts: Vec<&Path> =
            mounts.iter().filter(|m| m.v1_controllers.is_none()).map(|m| m.mount_point.as_path()).collect();
        let full_v2 = v2_mounts.iter().find(|root| {
            controllers_of(root).is_some_and(|c| c.split_whitespace().any(|c| c == Controller::Memory.name()))
        });
        if let Some(root) = full_v2 {
            return Ok(Hierarchy::v2(*root));
        }
        let mut v1 = BTreeMap::new();
        for mount in mounts {
            let Some(names) = &mount.v1_controllers else {
                continue;
            };
            for ctl in Controller::ALL {
                if names.iter().any(|n| n == ctl.name()) {
                    v1.entry(ctl).or_insert_with(|| mount.mount_point.clone());
                }
            }
        }
        let missing: Vec<&str> =
            Controller::ALL.iter().filter(|c| c.required_v1() && !v1.contains_key(c)).map(|c| c.name()).collect();
        if !missing.is_empty() {
            return Err(Error::NoHierarchy(format!(
                "no cgroup2 mount with the memory controller, and v1 lacks {}",
                missing.join(", ")
            )));
        }
        Ok(Hierarchy { version: Version::V1, v1, unified: v2_mounts.first().map(|p| p.to_path_buf()) })
    }

    /// The same layout without the hybrid cgroup2 twin: for hosts where that tree is read-only
    /// or owned by someone else. Kills then always take the freeze → SIGKILL → thaw path.
    /// No effect on v2, where the cgroup2 tree is the hierarchy.
    pub fn without_unified_twin(mut self) -> Self {
        if self.version == Version::V1 {
            self.unified = None;
        }
        self
    }

    /// Which version's controllers enforce limits.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The cgroup2 mount, if any (on v1 hosts: the controller-less hybrid tree).
    pub fn unified_root(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// Every distinct hierarchy root we place cgroups in, v1 mounts first.
    fn roots(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for p in self.v1.values() {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        if let Some(u) = &self.unified {
            out.push(u);
        }
        out
    }

    /// A handle to `<root>/<parent>/<name>` in every hierarchy, whether or not it exists
    /// (e.g. to destroy what a crashed predecessor left, possibly only in some hierarchies).
    pub fn open(&self, parent: &str, name: &str) -> Result<Cgroup> {
        let rel = relative(parent, name)?;
        let v1 = self.v1.iter().map(|(ctl, root)| (*ctl, root.join(&rel))).collect();
        let unified = self.unified.as_ref().map(|u| u.join(&rel));
        Ok(Cgroup::new(self.version, name.to_owned(), v1, unified))
    }

    /// Creates the cgroup `<parent>/<name>` (absolute: under each hierarchy's root, not under the
    /// caller's own cgroup) with `limits` applied. Fails with [`Error::AlreadyExists`] if any part
    /// of it is already there; on failure nothing it made is left behind (the parent stays).
    pub fn create(&self, parent: &str, name: &str, limits: &Limits) -> Result<Cgroup> {
        let writes = limits.writes(self.version)?;
        let cgroup = self.open(parent, name)?;
        if self.version == Version::V2 {
            self.check_v2_controllers(limits)?;
        }
        for root in self.roots() {
            self.ensure_parent(root, parent)?;
        }
        let mut made: Vec<PathBuf> = Vec::new();
        let result = self.make_leaves(&cgroup, &mut made).and_then(|()| cgroup.apply(&writes));
        if let Err(e) = result {
            for dir in made.iter().rev() {
                // Best effort: the original error is the one worth reporting.
                let _ = fsutil::rmdir_tree(dir);
            }
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Applies `limits` to the parent `parent` itself (made if missing): a cap on all of its
    /// children together, which the kernel enforces however each child is limited.
    pub fn limit_parent(&self, parent: &str, limits: &Limits) -> Result<()> {
        check_parent(parent)?;
        let writes = limits.writes(self.version)?;
        if self.version == Version::V2 {
            self.check_v2_controllers(limits)?;
        }
        for root in self.roots() {
            self.ensure_parent(root, parent)?;
        }
        let v1 = self.v1.iter().map(|(ctl, root)| (*ctl, root.join(parent))).collect();
        let unified = self.unified.as_ref().map(|u| u.join(parent));
        Cgroup::new(self.version, parent.to_owned(), v1, unified).apply(&writes)
    }

    fn make_leaves(&self, cgroup: &Cgroup, made: &mut Vec<PathBuf>) -> Result<()> {
        for dir in cgroup.dirs() {
            let is_unified = Some(dir) == cgroup.unified_dir();
            match std::fs::create_dir(dir) {
                Ok(()) => made.push(dir.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::AlreadyExists(dir.to_path_buf()))
                }
                Err(e) => return Err(Error::io("mkdir", dir, e)),
            }
            if !is_unified && self.v1.get(&Controller::Cpuset).is_some_and(|r| dir.starts_with(r)) {
                copy_cpuset(dir)?;
            }
        }
        Ok(())
    }

    /// Makes each level of `parent` under `root`: v1 cpuset levels get their parent's CPUs and
    /// memory nodes (an empty cpuset cannot hold tasks); v2 levels get our controllers enabled.
    fn ensure_parent(&self, root: &Path, parent: &str) -> Result<()> {
        let is_v2_root = self.version == Version::V2 && Some(root) == self.unified.as_deref();
        let is_cpuset = self.v1.get(&Controller::Cpuset).is_some_and(|r| r == root);
        let mut dir = root.to_path_buf();
        if is_v2_root {
            enable_v2_controllers(&dir)?;
        }
        for part in parent.split('/') {
            dir.push(part);
            fsutil::mkdir_existing_ok(&dir)?;
            if is_cpuset {
                copy_cpuset(&dir)?;
            }
            if is_v2_root {
                enable_v2_controllers(&dir)?;
            }
        }
        Ok(())
    }

    fn check_v2_controllers(&self, limits: &Limits) -> Result<()> {
        let Some(root) = &self.unified else {
            return Err(Error::NoHierarchy("v2 without a cgroup2 mount".into()));
        };
        let path = root.join("cgroup.controllers");
        let available = fsutil::read(&path)?;
        for ctl in limits.controllers() {
            if !available.split_whitespace().any(|c| c == ctl.name()) {
                return Err(Error::ControllerUnavailable(ctl.name()));
            }
        }
        Ok(())
    }

    /// Names of the child cgroups of `parent` found in any hierarchy, sorted.
    pub fn list(&self, parent: &str) -> Result<Vec<String>> {
        check_parent(parent)?;
        let mut names = BTreeSet::new();
        for root in self.roots() {
            for dir in fsutil::child_dirs(&root.join(parent))? {
                if let Some(n) = dir.file_name().and_then(|n| n.to_str()) {
                    names.insert(n.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Destroys every child cgroup of `parent` whose name is not in `keep`, killing its
    /// processes: the reconcile step after a crash. Returns the names removed. Tries them all
    /// and reports the first failure, if any.
    pub fn cleanup_stale(&self, parent: &str, keep: &HashSet<String>) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut first_err = None;
        for name in self.list(parent)? {
            if keep.contains(&name) {
                continue;
            }
            let outcome = self.open(parent, &name).and_then(|cg| cg.destroy());
            match outcome {
                Ok(()) => removed.push(name),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Removes the (empty) `parent` cgroup itself from every hierarchy, e.g. when the node shuts
    /// down cleanly. Fails while it still has children.
    pub fn remove_parent(&self, parent: &str) -> Result<()> {
        check_parent(parent)?;
        for root in self.roots() {
            let dir = root.join(parent);
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("rmdir", dir, e)),
            }
        }
        Ok(())
    }
}

/// Copies `cpuset.cpus` and `cpuset.mems` from the parent when `dir`'s are empty.
fn copy_cpuset(dir: &Path) -> Result<()> {
    let Some(up) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(file);
        if fsutil::read(&mine)?.trim().is_empty() {
            let theirs = fsutil::read(&up.join(file))?;
            fsutil::write(&mine, theirs.trim())?;
        }
    }
    Ok(())
}

/// Enables in `dir`'s children whichever of our controllers `dir` has and has not enabled yet.
fn enable_v2_controllers(dir: &Path) -> Result<()> {
    let available = fsutil::read(&dir.join("cgroup.controllers"))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fsutil::read(&subtree)?;
    for ctl in V2_CONTROLLERS {
        let has = |text: &str| text.split_whitespace().any(|c| c == ctl.name());
        if has(&available) && !has(&enabled) {
            fsutil::write(&subtree, &format!("+{}", ctl.name()))?;
        }
    }
    Ok(())
}

/// `<parent>/<name>` after validating both.
fn relative(parent: &str, name: &str) -> Result<PathBuf> {
    check_parent(parent)?;
    check_component(name)?;
    Ok(Path::new(parent).join(name))
}

fn check_parent(parent: &str) -> Result<()> {
    if parent.is_empty() {
        return Err(Error::InvalidName {
            name: parent.to_owned(),
            reason: "a parent is required (cgroups are never made at the root)",
        });
    }
    parent.split('/').try_for_each(check_component)
}

/// A single path component: letters, digits, `_`, `-`, and `.` except first, so it can neither
/// climb out (`..`), nest, nor hide.
fn check_component(s: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidName { name: s.to_owned(), reason });
    if s.is_empty() || s.len() > 128 {
        return bad("must be 1 to 128 bytes");
    }
    if s.starts_with('.') {
        return bad("must not start with `.`");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return bad("only letters, digits, `_`, `-` and `.` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

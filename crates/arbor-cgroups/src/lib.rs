//! Per-sandbox cgroups for the Arbor runtime, on cgroup v1, v2 and the hybrid layout.
//!
//! [`Hierarchy::detect`] reads the host's cgroup mounts once. A pure v2 host (a cgroup2 mount
//! offering the memory controller) is driven through the unified tree; otherwise the v1
//! controllers (cpu, cpuacct, memory, pids, freezer, and cpuset when mounted) enforce limits. A
//! hybrid host (v1 controllers plus a controller-less cgroup2 mount, as on systemd's "hybrid"
//! setups and on the machines Arbor is developed on) is v1, and the cgroup also gets a twin in
//! the cgroup2 tree: core v2 files need no controller, so `cgroup.kill` there kills a whole
//! sandbox in one write.
//!
//! Placement is absolute: `<parent>/<name>` under each hierarchy's root, not under the cgroup the
//! node daemon runs in. The daemon may sit in a cgroup with its own limits (or one that holds
//! processes, which v2 forbids for a parent with controllers); sandboxes are accounted apart from it.
//!
//! # Why not `cgroups-rs`
//! The kata-containers `cgroups-rs` crate (0.5) was evaluated. It detects v2 only when
//! `/sys/fs/cgroup` itself is cgroup2, so the hybrid case lands on v1 as wanted, but: it has no
//! v1 kill (its `kill()` is v2-only, and we need freeze → SIGKILL → thaw loops anyway), it
//! reports the v2 freezer state from `cgroup.freeze` (the request) rather than `cgroup.events`
//! (the fact), it gives no cgroup fd for `CLONE_INTO_CGROUP`, and it unconditionally depends on
//! `zbus` (a D-Bus stack for systemd) plus older `nix` and `thiserror` majors than the
//! workspace. What Arbor needs is a few dozen files across both versions, so this crate is a
//! small typed layer over cgroupfs instead.
//!
//! External crates: `nix` (signals; already in the workspace) and `thiserror` (errors).

#![warn(missing_docs)]

mod cgroup;
mod error;
mod fsutil;
mod hierarchy;
mod limits;
mod mountinfo;

pub use cgroup::{Cgroup, ProcsFds, Stats};
pub use error::{Error, Result};
pub use hierarchy::Hierarchy;
pub use limits::{Limits, Version, CPU_PERIOD_US};

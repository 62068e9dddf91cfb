//! Resource limits and how they map to cgroupfs files on each version.

use crate::error::{Error, Result};

/// The CFS period used for CPU quotas: 100 ms, the kernel default, so `cpus × period` is the
/// runtime per period (0.5 CPU = 50 ms of every 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Bounds accepted for [`Limits::cpus`]: the kernel's minimum quota is 1 ms per period.
const CPUS_MIN: f64 = 0.01;
const CPUS_MAX: f64 = 1024.0;

/// Resource limits of one cgroup. `None` leaves the kernel default (unlimited) at creation, and
/// leaves the current value alone in [`crate::Cgroup::set_limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// CPU time as a number of CPUs (fractions allowed), enforced as a CFS quota per 100 ms.
    pub cpus: Option<f64>,
    /// Memory in MiB; swap is disallowed for the cgroup where the kernel accounts it.
    pub memory_mib: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

/// The cgroup version whose file names a limit is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Controllers this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Controller {
    Cpu,
    Cpuacct,
    Cpuset,
    Memory,
    Pids,
    Freezer,
}

impl Controller {
    /// Every controller, in the order directories are created (cpuset before anything that might
    /// need a process placed).
    pub(crate) const ALL: [Controller; 6] = [
        Controller::Cpuset,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
        Controller::Freezer,
    ];

    /// The kernel's name of the controller.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
        }
    }

    /// Without these a v1 layout is not usable (cpuset is optional).
    pub(crate) fn required_v1(self) -> bool {
        self != Controller::Cpuset
    }
}

/// One file write that applies a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitWrite {
    /// Whose directory holds the file (always the unified directory on v2).
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist (swap accounting is off, or an old kernel).
    pub optional: bool,
}

impl LimitWrite {
    fn new(controller: Controller, file: &'static str, value: String) -> Self {
        LimitWrite { controller, file, value, optional: false }
    }

    fn optional(controller: Controller, file: &'static str, value: String) -> Self {
        LimitWrite { controller, file, value, optional: true }
    }
}

impl Limits {
    /// Checks ranges; returns the CPU quota in µs per [`CPU_PERIOD_US`] and the memory in bytes.
    fn validate(&self) -> Result<(Option<u64>, Option<u64>)> {
        let quota = match self.cpus {
            None => None,
            Some(c) if c.is_finite() && (CPUS_MIN..=CPUS_MAX).contains(&c) => {
                // In range, so the product is a small positive integer-valued float.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let q = (c * CPU_PERIOD_US as f64).round() as u64;
                Some(q)
            }
            Some(c) => {
                return Err(Error::InvalidLimit(format!("cpus must be between {CPUS_MIN} and {CPUS_MAX}, got {c}")))
            }
        };
        let bytes = match self.memory_mib {
            None => None,
            Some(0) => return Err(Error::InvalidLimit("memory_mib must be at least 1".into())),
            Some(m) => Some(
                m.checked_mul(1 << 20).ok_or_else(|| Error::InvalidLimit(format!("memory_mib {m} is too large")))?,
            ),
        };
        if self.pids == Some(0) {
            return Err(Error::InvalidLimit("pids must be at least 1".into()));
        }
        Ok((quota, bytes))
    }

    /// The controllers these limits need.
    pub(crate) fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.cpus.is_some() {
            out.push(Controller::Cpu);
        }
        if self.memory_mib.is_some() {
            out.push(Controller::Memory);
        }
        if self.pids.is_some() {
            out.push(Controller::Pids);
        }
        out
    }

    /// The writes, in order, that apply these limits on `version`.
    pub(crate) fn writes(&self, version: Version) -> Result<Vec<LimitWrite>> {
        let (quota, bytes) = self.validate()?;
        let mut out = Vec::new();
        if let Some(q) = quota {
            match version {
                Version::V1 => {
                    out.push(LimitWrite::new(Controller::Cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                    out.push(LimitWrite::new(Controller::Cpu, "cpu.cfs_quota_us", q.to_string()));
                }
                Version::V2 => out.push(LimitWrite::new(Controller::Cpu, "cpu.max", format!("{q} {CPU_PERIOD_US}"))),
            }
        }
        if let Some(b) = bytes {
            match version {
                Version::V1 => {
                    // The kernel keeps limit <= memsw at every step: lift memsw first so that
                    // raising a live limit works too, then pin memsw to the limit (no swap).
                    out.push(LimitWrite::optional(Controller::Memory, "memory.memsw.limit_in_bytes", "-1".into()));
                    out.push(LimitWrite::new(Controller::Memory, "memory.limit_in_bytes", b.to_string()));
                    out.push(LimitWrite::optional(Controller::Memory, "memory.memsw.limit_in_bytes", b.to_string()));
                    // Without swap accounting memsw is absent; at least tell reclaim not to swap.
                    out.push(LimitWrite::optional(Controller::Memory, "memory.swappiness", "0".into()));
                }
                Version::V2 => {
                    out.push(LimitWrite::new(Controller::Memory, "memory.max", b.to_string()));
                    out.push(LimitWrite::optional(Controller::Memory, "memory.swap.max", "0".into()));
                }
            }
        }
        if let Some(p) = self.pids {
            out.push(LimitWrite::new(Controller::Pids, "pids.max", p.to_string()));
        }
        Ok(out)
    }
}

/// v1 reports "no limit" as a huge page-aligned number rather than `max`.
pub(crate) const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;

    fn files(w: &[LimitWrite]) -> Vec<(&str, &str)> {
        w.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn v1_writes() {
        let l = Limits { cpus: Some(2.0), memory_mib: Some(512), pids: Some(100) };
        let w = l.writes(Version::V1).unwrap_or_default();
        assert_eq!(
            files(&w),
            vec![
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "200000"),
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", "536870912"),
                ("memory.memsw.limit_in_bytes", "536870912"),
                ("memory.swappiness", "0"),
                ("pids.max", "100"),
            ]
        );
        assert!(w[2].optional && !w[3].optional);
    }

    #[test]
    fn v2_writes() {
        let l = Limits { cpus: Some(0.5), memory_mib: Some(64), pids: Some(10) };
        let w = l.writes(Version::V2).unwrap_or_default();
        assert_eq!(
            files(&w),
            vec![("cpu.max", "50000 100000"), ("memory.max", "67108864"), ("memory.swap.max", "0"), ("pids.max", "10"),]
        );
        assert!(w.iter().all(|w| w.controller != Controller::Cpuacct));
    }

    #[test]
    fn none_writes_nothing() {
        assert_eq!(Limits::default().writes(Version::V2).ok(), Some(vec![]));
        assert!(Limits::default().controllers().is_empty());
    }

    #[test]
    fn rejects_bad_values() {
        for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY, 2000.0] {
            let l = Limits { cpus: Some(cpus), ..Limits::default() };
            assert!(matches!(l.writes(Version::V1), Err(Error::InvalidLimit(_))));
        }
        let l = Limits { memory_mib: Some(u64::MAX), ..Limits::default() };
        assert!(l.writes(Version::V2).is_err());
        let l = Limits { pids: Some(0), ..Limits::default() };
        assert!(l.writes(Version::V2).is_err());
    }
}

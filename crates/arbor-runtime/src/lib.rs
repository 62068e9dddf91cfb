//! `arbor-runtime`: one sandbox on one host.
//!
//! A sandbox is an overlay root (immutable lower layers, a private upper
//! dir) in fresh mount, PID, UTS, IPC, network and cgroup namespaces, with
//! limits from its own cgroup and `arbor-envd` as PID 1. The [`Driver`]
//! trait is what the node agent talks to; [`linux::LinuxDriver`] implements
//! it with namespaces (a microVM driver can implement it on hosts with KVM).
//!
//! The namespace and mount work happens in `arbor-launch`, a small
//! single-threaded helper the driver executes: after `fork` only a
//! single-threaded process may safely allocate, mount and exec, and the
//! driver lives in a multi-threaded server.
//!
//! Crates: `nix` for the system calls (mount, unshare, setns, pivot_root),
//! `arbor-cgroups` for limits, `serde_json` for the launch spec, `caps` for
//! the capability sets, and (at build time) `seccompiler`'s system call
//! tables to compile the seccomp profile.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod confined;
pub mod driver;
pub mod error;
pub mod linux;
pub mod spec;

pub use checkpoint::{After, Checkpoint};
pub use driver::{Driver, Sandbox, Status};
pub use error::{Error, Result};
pub use spec::{LaunchSpec, RestoreSpec, SandboxSpec};

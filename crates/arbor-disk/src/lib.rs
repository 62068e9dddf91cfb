//! Per-sandbox disk quotas for the Arbor runtime.
//!
//! Each sandbox's directory (`<data>/sandboxes/<id>`, holding its overlay `upper` and `work`)
//! gets its own project id with `FS_XFLAG_PROJINHERIT`, so everything created below it carries
//! the id, and a project quota caps the bytes and inodes that id may use: the kernel refuses the
//! write that would go past it with `EDQUOT`. This is what Docker and CRI-O do for overlay upper
//! dirs; it costs a few system calls per sandbox and nothing per write.
//!
//! Project quotas need a file system that enforces them (ext4 with the `quota` and `project`
//! features mounted `prjquota`, or XFS mounted `pquota`). When the host's is one,
//! [`Quotas::open`] uses it directly. Otherwise (the usual case: a root ext4 without those
//! features, which cannot be changed while mounted) the node keeps a sparse ext4 image formatted
//! with them, loop-mounted over the sandboxes directory; see `docs/disk.md`.
//!
//! External crates: `libc` (system calls and ioctls; the loop, fsxattr and quota structures are
//! declared here from the kernel UAPI, which `libc` lacks) and `thiserror` (errors).
//! `mkfs.ext4` (e2fsprogs) is run once to format a new image.
//!
//! # Why not `loopdev`
//! `loopdev` (0.4, unreleased since 2022) and its maintained fork `loopdev-3` (Stratis) were
//! considered. Both generate their bindings with `bindgen` at build time (a libclang build
//! dependency for a handful of ioctls), attach in two steps (`LOOP_SET_FD`, then
//! `LOOP_SET_STATUS64` for auto-clear), so a crash in between leaves a device attached for good,
//! and cannot find the device already attached to a file, which recovery after a crash needs.
//! `LOOP_CONFIGURE` (Linux ≥ 5.8) attaches with auto-clear in one call; that and the lookup are
//! a hundred lines here.

#![warn(missing_docs)]

mod btrfs;
mod error;
mod loopdev;
mod mount;
mod quotas;

pub use error::{Error, Result};
pub use quotas::{Backing, Config, QuotaId, Quotas, Usage};

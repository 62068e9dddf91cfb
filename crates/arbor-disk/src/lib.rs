//! Per-sandbox disk limits for the Arbor runtime.
//!
//! Each sandbox's directory (`<data>/sandboxes/<id>`, holding its overlay `upper` and `work`)
//! is a btrfs subvolume whose quota group caps the bytes (data and metadata) it may reference:
//! the write that would go past the limit fails with `EDQUOT`, including writes and copy-ups
//! through the sandbox's overlay. Creating one is two ioctls (subvolume, limit), about 0.1 ms;
//! deleting one, whatever it holds, is one ioctl, the kernel freeing the blocks in the background.
//!
//! [`Quotas::open`] uses the host's btrfs when the sandboxes directory is on one with quotas
//! enabled. Otherwise (the usual case, e.g. a root ext4) the node keeps a sparse btrfs image,
//! `<data>/sandboxes.img`, loop-mounted over the sandboxes directory: made once, kept across
//! restarts, found again after a crash. See `docs/disk.md`.
//!
//! # Why btrfs and not project quotas
//! Project quotas (a project id per upper dir, as Docker and CRI-O do on XFS or ext4) need
//! `CONFIG_QFMT_V2` for ext4 or `CONFIG_XFS_QUOTA` for XFS; the kernels Arbor is developed on
//! have neither, while btrfs quota groups are always built in with btrfs. Subvolumes also give
//! O(1) deletion and, later, O(1) snapshots of a sandbox's upper dir. And quota groups hold for
//! root with all capabilities, as overlayfs writes are (they carry the mounter's credentials),
//! whereas the generic quota code behind ext4 lets `CAP_SYS_RESOURCE` ignore hard limits.
//!
//! External crates: `libc` (system calls and ioctls; the loop and btrfs structures are declared
//! here from the kernel UAPI, which `libc` lacks) and `thiserror` (errors). `mkfs.btrfs`
//! (btrfs-progs) is run once to format a new image.
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

//! The btrfs ioctls this crate needs: subvolumes, quota groups, the file system id.
//!
//! Structures and request numbers are the kernel's UAPI (`linux/btrfs.h`), which `libc` does
//! not carry; they are stable ABI. All calls take an open directory on the file system.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `BTRFS_SUPER_MAGIC`, the `f_type` of a btrfs `statfs`.
pub const SUPER_MAGIC: i64 = 0x9123_683E;
/// The id of the top-level subvolume (`BTRFS_FS_TREE_OBJECTID`).
pub const TOP_LEVEL: u64 = 5;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOL_ROOT_INO: u64 = 256;

const NAME_MAX: usize = 4087;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_qgroup_limit`.
#[repr(C)]
#[derive(Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_fs_info_args`, of which only the fsid is read.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

const fn ioc(dir: u64, nr: u64, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | (0x94 << 8) | nr) as libc::c_ulong
}
const W: u64 = 1;
const R: u64 = 2;
const SYNC: libc::c_ulong = ioc(0, 8, 0);
const SNAP_CREATE: libc::c_ulong = ioc(W, 1, size_of::<VolArgs>());
const SUBVOL_CREATE: libc::c_ulong = ioc(W, 14, size_of::<VolArgs>());
const SNAP_DESTROY: libc::c_ulong = ioc(W, 15, size_of::<VolArgs>());
const INO_LOOKUP: libc::c_ulong = ioc(R | W, 18, size_of::<InoLookupArgs>());
const FS_INFO: libc::c_ulong = ioc(R, 31, size_of::<FsInfoArgs>());
const QUOTA_CTL: libc::c_ulong = ioc(R | W, 40, size_of::<QuotaCtlArgs>());
const QGROUP_CREATE: libc::c_ulong = ioc(W, 42, size_of::<QgroupCreateArgs>());
// The kernel declares this one _IOR although it only reads the argument.
const QGROUP_LIMIT: libc::c_ulong = ioc(R, 43, size_of::<QgroupLimitArgs>());

const QUOTA_CTL_ENABLE: u64 = 1;
const LIMIT_MAX_RFER: u64 = 1;
/// `max_rfer` value that removes the limit.
const LIMIT_NONE: u64 = u64::MAX;

/// Runs `ioctl(fd, req, arg)`.
///
/// # Safety
/// `arg` must point to the structure `req` expects, valid (and writable if the kernel writes
/// it) for the duration of the call.
unsafe fn ioctl<T>(fd: &File, req: libc::c_ulong, arg: *mut T) -> io::Result<()> {
    // SAFETY: `fd` is open; the caller vouches for `arg`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn vol_args(name: &[u8]) -> io::Result<Box<VolArgs>> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut args = Box::new(VolArgs { fd: 0, name: [0; NAME_MAX + 1] });
    args.name[..name.len()].copy_from_slice(name);
    Ok(args)
}

/// Commits the file system and wakes the cleaner thread (which frees deleted subvolumes).
pub fn sync(fs: &File) -> io::Result<()> {
    // SAFETY: BTRFS_IOC_SYNC takes no argument.
    unsafe { ioctl(fs, SYNC, std::ptr::null_mut::<u8>()) }
}

/// Creates the subvolume `name` in the directory `parent`.
pub fn create_subvolume(parent: &File, name: &[u8]) -> io::Result<()> {
    let mut args = vol_args(name)?;
    // SAFETY: `args` is a NUL-terminated `btrfs_ioctl_vol_args` living across the call.
    unsafe { ioctl(parent, SUBVOL_CREATE, &mut *args) }
}

/// Creates `name` in the directory `parent` as a writable snapshot of the subvolume open as
/// `source` (on the same file system): it shares every block with the source until either
/// changes, whatever it holds.
pub fn snapshot_subvolume(source: &File, parent: &File, name: &[u8]) -> io::Result<()> {
    let mut args = vol_args(name)?;
    args.fd = i64::from(source.as_raw_fd());
    // SAFETY: `args` is a NUL-terminated `btrfs_ioctl_vol_args` naming an open subvolume, living
    // across the call.
    unsafe { ioctl(parent, SNAP_CREATE, &mut *args) }
}

/// Deletes the subvolume `name` in `parent` with everything in it. It vanishes at once; the
/// kernel frees its blocks in the background.
pub fn destroy_subvolume(parent: &File, name: &[u8]) -> io::Result<()> {
    let mut args = vol_args(name)?;
    // SAFETY: as in `create_subvolume`.
    unsafe { ioctl(parent, SNAP_DESTROY, &mut *args) }
}

/// The id of the subvolume holding the open file `fd`.
pub fn subvolume_id(fd: &File) -> io::Result<u64> {
    let mut args = Box::new(InoLookupArgs { treeid: 0, objectid: SUBVOL_ROOT_INO, name: [0; 4080] });
    // SAFETY: `args` is a writable `btrfs_ioctl_ino_lookup_args` living across the call.
    unsafe { ioctl(fd, INO_LOOKUP, &mut *args)? };
    Ok(args.treeid)
}

/// Limits the bytes referenced by subvolume `id` (data and metadata); `None` removes the limit.
pub fn set_limit(fs: &File, id: u64, bytes: Option<u64>) -> io::Result<()> {
    let lim = QgroupLimit { flags: LIMIT_MAX_RFER, max_rfer: bytes.unwrap_or(LIMIT_NONE), ..Default::default() };
    let mut args = QgroupLimitArgs { qgroupid: id, lim };
    // SAFETY: `args` is a `btrfs_ioctl_qgroup_limit_args` living across the call.
    unsafe { ioctl(fs, QGROUP_LIMIT, &mut args) }
}

/// Removes the quota group of a deleted subvolume (`EBUSY` while its blocks are being freed).
pub fn remove_qgroup(fs: &File, id: u64) -> io::Result<()> {
    let mut args = QgroupCreateArgs { create: 0, qgroupid: id };
    // SAFETY: `args` is a `btrfs_ioctl_qgroup_create_args` living across the call.
    unsafe { ioctl(fs, QGROUP_CREATE, &mut args) }
}

/// Turns quota groups on (returns once accounting is consistent for an empty file system).
pub fn enable_quota(fs: &File) -> io::Result<()> {
    let mut args = QuotaCtlArgs { cmd: QUOTA_CTL_ENABLE, status: 0 };
    // SAFETY: `args` is a `btrfs_ioctl_quota_ctl_args` living across the call.
    unsafe { ioctl(fs, QUOTA_CTL, &mut args) }
}

/// The file system's id as sysfs names it (`/sys/fs/btrfs/<fsid>`).
pub fn fsid(fs: &File) -> io::Result<String> {
    let mut args = Box::new(FsInfoArgs { max_id: 0, num_devices: 0, fsid: [0; 16], rest: [0; 1024 - 32] });
    // SAFETY: `args` is a writable `btrfs_ioctl_fs_info_args` living across the call.
    unsafe { ioctl(fs, FS_INFO, &mut *args)? };
    let h: String = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// Whether the open file `fd` is on btrfs.
pub fn is_btrfs(fd: &File) -> io::Result<bool> {
    // SAFETY: an all-zero `statfs` is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable for the call.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_request_numbers() {
        // As the kernel headers compute them.
        assert_eq!(SYNC, 0x9408);
        assert_eq!(SUBVOL_CREATE, 0x5000_940E);
        assert_eq!(SNAP_CREATE, 0x5000_9401);
        assert_eq!(SNAP_DESTROY, 0x5000_940F);
        assert_eq!(INO_LOOKUP, 0xD000_9412);
        assert_eq!(FS_INFO, 0x8400_941F);
        assert_eq!(QUOTA_CTL, 0xC010_9428);
        assert_eq!(QGROUP_CREATE, 0x4010_942A);
        assert_eq!(QGROUP_LIMIT, 0x8030_942B);
    }
}

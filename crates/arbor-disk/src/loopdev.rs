//! Loop devices for the image file: find one already attached to it, or attach a free one.
//!
//! Devices are attached with `LO_FLAGS_AUTOCLEAR`, so the kernel detaches them by itself when the
//! last user goes away: if this process dies before the mount, the device vanishes with its
//! descriptor; once mounted, the unmount releases it. A device found attached without the flag
//! (e.g. by `losetup` after a crash) gets it, so [`crate::Quotas::teardown`] leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LOOP_MAJOR: u64 = 7;

/// `struct loop_info64` from `linux/loop.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from `linux/loop.h` (for `LOOP_CONFIGURE`, Linux ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: 0,
            file_name: [0; 64],
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        }
    }
}

/// The status of an attached loop device, or `ENXIO` when it is free.
fn status(dev: &File) -> io::Result<LoopInfo64> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `dev` is an open loop device and `info` a writable `struct loop_info64`.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// Finds a loop device attached to `image` (same device and inode, offset 0), making sure it
/// detaches itself once unused. Devices are listed from sysfs, which shows only attached ones.
///
/// The returned descriptor may be the device's last user (a device attached but not mounted):
/// keep it until the device is mounted, or auto-clear detaches it on close.
pub fn find(image: &Path) -> Result<Option<(PathBuf, File)>> {
    let meta = fs::metadata(image).map_err(Error::io("stat", image))?;
    let entries = match fs::read_dir("/sys/block") {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", "/sys/block")(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        // Only attached devices have a backing file; checking it first avoids opening every device.
        if !entry.path().join("loop/backing_file").exists() {
            continue;
        }
        let path = PathBuf::from("/dev").join(name);
        let Ok(dev) = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&path) else {
            continue;
        };
        let Ok(mut info) = status(&dev) else {
            continue;
        };
        if info.device != meta.dev() || info.inode != meta.ino() || info.offset != 0 || info.sizelimit != 0 {
            continue;
        }
        if info.flags & LO_FLAGS_AUTOCLEAR == 0 {
            info.flags |= LO_FLAGS_AUTOCLEAR;
            // SAFETY: `dev` is an open loop device and `info` a valid `struct loop_info64`, read only.
            let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info as *const LoopInfo64) };
            if rc < 0 {
                return Err(Error::io("set autoclear on", &path)(io::Error::last_os_error()));
            }
        }
        return Ok(Some((path, dev)));
    }
    Ok(None)
}

/// Attaches `image` to a free loop device. The returned descriptor keeps the device attached
/// until it is closed; mount the device before dropping it.
pub fn attach(image: &Path) -> Result<(PathBuf, File)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(Error::io("open", image))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(Error::io("open", "/dev/loop-control"))?;
    // Another process may take the free device between the two calls: retry a few times.
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    // Direct I/O keeps the image's pages out of the host page cache (the btrfs inside caches
    // them already). It needs the device's block size to be a multiple of the host file
    // system's (4 KiB, as btrfs uses anyway); where the host cannot do it, attach without.
    let mut direct_io = true;
    loop {
        attempt += 1;
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::io("find a free loop device via", "/dev/loop-control")(io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_node(&path, n as u64)?;
        let mut config =
            LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info: LoopInfo64::zeroed(), reserved: [0; 8] };
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        if direct_io {
            config.block_size = 4096;
            config.info.flags |= LO_FLAGS_DIRECT_IO;
        }
        // SAFETY: `dev` is an open loop device, `config` a valid `struct loop_config` read by the
        // kernel, and `backing` stays open for the call (the kernel takes its own reference).
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        if rc == 0 {
            return Ok((path, dev));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) if attempt < ATTEMPTS => {}
            Some(libc::EINVAL) if direct_io => direct_io = false,
            _ => return Err(Error::io("attach the image to", &path)(err)),
        }
    }
}

/// Opens `/dev/loopN`, creating the node when the host's `/dev` lacks it (e.g. a static `/dev`).
fn open_node(path: &Path, n: u64) -> Result<File> {
    let open = || OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path);
    match open() {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("open", path)(e)),
        Err(_) => {}
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Invalid { what: "loop device path", reason: "contains a NUL byte".into() })?;
    // SAFETY: `cpath` is a NUL-terminated path; mknod only reads it.
    let rc = unsafe { libc::mknod(cpath.as_ptr(), libc::S_IFBLK | 0o660, libc::makedev(LOOP_MAJOR as u32, n as u32)) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(Error::io("create the device node", path)(err));
        }
    }
    let f = open().map_err(Error::io("open", path))?;
    let is_block = f.metadata().map(|m| m.file_type().is_block_device()).unwrap_or(false);
    if !is_block {
        return Err(Error::Invalid {
            what: "loop device",
            reason: format!("{} is not a block device", path.display()),
        });
    }
    Ok(f)
}

//! The quota file system's image, its mount, and what `/proc/self/mountinfo` says about both.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Data options of the image's mount: pass freed space down to the image file as holes (in the
/// background), so what a destroyed sandbox used goes back to the host.
pub const MOUNT_DATA: &str = "discard=async";

/// One line of `/proc/self/mountinfo`, reduced to what is needed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// The file system type.
    pub fstype: String,
    /// The mount source (the block device, for a btrfs mount).
    pub source: String,
}

/// The topmost mount at exactly `target` (a canonical path), if any.
pub fn mount_at(target: &Path) -> Result<Option<MountEntry>> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(Error::io("read", "/proc/self/mountinfo"))?;
    Ok(text.lines().rev().filter_map(parse_line).find(|m| m.target == target))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let target = pre.split(' ').nth(4)?;
    let mut post = post.split(' ');
    let fstype = post.next()?.to_string();
    let source = unescape(post.next()?);
    Some(MountEntry { target: PathBuf::from(unescape(target)), fstype, source })
}

/// Undoes the octal escapes (`\040` for a space, ...) of mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cstring(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid { what: "path", reason: format!("{} contains a NUL byte", path.display()) })
}

/// Mounts the btrfs on `device` at `target`.
pub fn mount_btrfs(device: &Path, target: &Path) -> Result<()> {
    let (src, dst) = (cstring(device)?, cstring(target)?);
    let data =
        std::ffi::CString::new(MOUNT_DATA).map_err(|_| Error::Invalid { what: "mount data", reason: "NUL".into() })?;
    // SAFETY: all pointers are NUL-terminated strings that live across the call.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), c"btrfs".as_ptr(), 0, data.as_ptr().cast()) };
    if rc < 0 {
        return Err(Error::io("mount", target)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Unmounts `target` (which must not be busy).
pub fn unmount(target: &Path) -> Result<()> {
    let dst = cstring(target)?;
    // SAFETY: `dst` is a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::umount2(dst.as_ptr(), libc::UMOUNT_NOFOLLOW) };
    if rc < 0 {
        return Err(Error::io("unmount", target)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Creates the image: a sparse file of `size` bytes formatted as btrfs.
///
/// It is formatted under a temporary name and renamed into place, so an image that exists is
/// always complete, whatever crash happened while making it.
pub fn create_image(image: &Path, size: u64) -> Result<()> {
    let mut tmp = image.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash during an earlier creation.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("remove", &tmp)(e)),
        _ => {}
    }
    let file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(Error::io("create", &tmp))?;
    file.set_len(size).map_err(Error::io("size", &tmp))?;
    drop(file);
    // One copy of metadata: the image sits on one host disk, where a second copy protects
    // against little and doubles metadata writes.
    let out = Command::new("mkfs.btrfs")
        .args(["-q", "-f", "-m", "single", "-d", "single", "-L", "arbor-sandboxes"])
        .arg(&tmp)
        .env("PATH", "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin")
        .output();
    let failure = match out {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("cannot run it ({e}); it comes with btrfs-progs")),
    };
    if let Some(detail) = failure {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Command { command: "mkfs.btrfs", detail });
    }
    fs::rename(&tmp, image).map_err(Error::io("rename into place", image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = "36 35 98:0 / /var/lib/a\\040b rw,noatime master:1 - btrfs /dev/loop3 rw,discard=async";
        let m = parse_line(line);
        assert_eq!(
            m,
            Some(MountEntry { target: "/var/lib/a b".into(), fstype: "btrfs".into(), source: "/dev/loop3".into() })
        );
        assert_eq!(parse_line("garbage"), None);
    }
}

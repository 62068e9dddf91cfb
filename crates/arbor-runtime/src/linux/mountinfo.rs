//! Reading a mount table (`/proc/<pid>/mountinfo`): the FUSE supervisor
//! looks up the type of a mount, and checkpoints refuse a sandbox that holds
//! a FUSE mount (CRIU cannot dump one).

use crate::error::{Error, Result};

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// The mount id (first field).
    pub id: String,
    /// Where it is mounted, as the table's owner sees it.
    pub mount_point: String,
    /// The file system type (first field after ` - `).
    pub fstype: String,
}

/// Parses a mount table; malformed lines are skipped.
pub(super) fn parse(table: &str) -> Vec<Mount> {
    table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut fields = left.split(' ');
            let id = fields.next()?.to_string();
            let mount_point = unescape(fields.nth(3)?);
            let fstype = right.split(' ').next()?.to_string();
            Some(Mount { id, mount_point, fstype })
        })
        .collect()
}

/// The mount points of the FUSE mounts in the mount namespace of `pid`.
pub(super) fn fuse_mounts(pid: u32) -> std::io::Result<Vec<String>> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(parse(&table)
        .into_iter()
        .filter(|m| m.fstype == "fuse" || m.fstype == "fuseblk" || m.fstype.starts_with("fuse."))
        .map(|m| m.mount_point)
        .collect())
}

/// [`Error::FuseMounted`] if the sandbox of `init_pid` holds FUSE mounts:
/// CRIU cannot dump them, and freezing a task that waits on a FUSE daemon
/// may never finish.
pub(super) fn refuse_fuse(init_pid: u32) -> Result<()> {
    let mounts = fuse_mounts(init_pid).map_err(Error::io("reading the mounts of", format!("/proc/{init_pid}")))?;
    if mounts.is_empty() {
        Ok(())
    } else {
        Err(Error::FuseMounted(mounts))
    }
}

/// Undoes the table's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_mount_points_and_types() {
        let table = "22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/a\n\
                     40 22 0:45 / /mnt/my\\040dir rw,nosuid,nodev,relatime shared:1 - fuse.bindfs bindfs rw,user_id=0\n\
                     bad line\n";
        let mounts = parse(table);
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[1],
            Mount { id: "40".into(), mount_point: "/mnt/my dir".into(), fstype: "fuse.bindfs".into() }
        );
        assert_eq!(mounts[0].fstype, "overlay");
    }
}

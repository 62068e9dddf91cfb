//! Finding cgroup mounts in `/proc/self/mountinfo`.

use std::path::PathBuf;

/// A cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `None` for cgroup2; for v1, the controllers (and `name=` options) bound to this hierarchy.
    pub v1_controllers: Option<Vec<String>>,
}

/// Parses the cgroup and cgroup2 mounts out of a mountinfo text, in mount order.
///
/// A line is `id parent maj:min root mount_point opts [optional...] - fstype source super_opts`.
pub(crate) fn cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CgroupMount> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = unescape(left.split(' ').nth(4)?);
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_opts = right.next().unwrap_or("");
    match fstype {
        "cgroup2" => Some(CgroupMount { mount_point: PathBuf::from(mount_point), v1_controllers: None }),
        "cgroup" => Some(CgroupMount {
            mount_point: PathBuf::from(mount_point),
            v1_controllers: Some(
                super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("release_agent"))
                    .map(str::to_owned)
                    .collect(),
            ),
        }),
        _ => None,
    }
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash in paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_hybrid() {
        let m = cgroup_mounts(HYBRID);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m[0].v1_controllers, Some(vec!["cpu".to_owned()]));
        assert_eq!(m[3].v1_controllers, Some(vec!["name=systemd".to_owned()]));
        assert_eq!(m[4].v1_controllers, None);
    }

    #[test]
    fn parses_comounted_and_optional_fields() {
        let line = "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,cpu,cpuacct";
        let m = cgroup_mounts(line);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[0].v1_controllers, Some(vec!["cpu".to_owned(), "cpuacct".to_owned()]));
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        assert_eq!(cgroup_mounts(v2)[0].v1_controllers, None);
    }

    #[test]
    fn unescapes_paths() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}

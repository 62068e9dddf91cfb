use super::*;
use crate::mountinfo::cgroup_mounts;

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const PURE_V2: &str =
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";

const COMOUNTED_V1: &str = "\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids
28 24 0:25 / /sys/fs/cgroup/freezer rw shared:12 - cgroup cgroup rw,freezer
";

fn hybrid_controllers(_: &Path) -> Option<String> {
    Some("hugetlb\n".into())
}

fn v2_controllers(_: &Path) -> Option<String> {
    Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
}

#[test]
fn hybrid_is_v1_with_a_unified_twin() {
    let h = Hierarchy::from_mounts(&cgroup_mounts(HYBRID), hybrid_controllers);
    let Ok(h) = h else {
        panic!("hybrid rejected: {h:?}");
    };
    assert_eq!(h.version(), Version::V1);
    assert_eq!(h.unified_root(), Some(Path::new("/sys/fs/cgroup/unified")));
    assert_eq!(h.v1.get(&Controller::Cpuset), Some(&PathBuf::from("/sys/fs/cgroup/cpuset")));
    let cg = h.open("arbor", "sb1").map_err(|e| e.to_string());
    let Ok(cg) = cg else {
        panic!("{cg:?}");
    };
    let dirs: Vec<PathBuf> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
    assert_eq!(dirs.len(), 7, "{dirs:?}");
    assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/memory/arbor/sb1")));
    assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/unified/arbor/sb1")));
    assert!(cg.procs_paths().iter().all(|p| p.ends_with("sb1/cgroup.procs")));
}

#[test]
fn pure_v2() {
    let h = Hierarchy::from_mounts(&cgroup_mounts(PURE_V2), v2_controllers);
    let Ok(h) = h else {
        panic!("v2 rejected: {h:?}");
    };
    assert_eq!(h.version(), Version::V2);
    let Ok(cg) = h.open("arbor", "x") else {
        panic!("open failed");
    };
    assert_eq!(cg.dirs(), vec![Path::new("/sys/fs/cgroup/arbor/x")]);
}

#[test]
fn comounted_v1_shares_one_dir() {
    let h = Hierarchy::from_mounts(&cgroup_mounts(COMOUNTED_V1), |_| None);
    let Ok(h) = h else {
        panic!("v1 rejected: {h:?}");
    };
    assert_eq!(h.version(), Version::V1);
    assert_eq!(h.unified_root(), None);
    let Ok(cg) = h.open("arbor", "x") else {
        panic!("open failed");
    };
    // cpu and cpuacct share one directory; no cpuset mounted.
    assert_eq!(cg.dirs().len(), 4);
}

#[test]
fn missing_controllers_are_named() {
    let text = "26 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
    match Hierarchy::from_mounts(&cgroup_mounts(text), |_| None) {
        Err(Error::NoHierarchy(msg)) => assert!(msg.contains("pids") && msg.contains("freezer")),
        other => panic!("unexpected {other:?}"),
    }
    // A controller-less cgroup2 alone is not enough either.
    let text = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
    assert!(Hierarchy::from_mounts(&cgroup_mounts(text), hybrid_controllers).is_err());
}

#[test]
fn names_are_checked() {
    let h = Hierarchy::v2("/nonexistent");
    for (parent, name) in [
        ("arbor", ".."),
        ("arbor", "a/b"),
        ("arbor", ""),
        ("arbor", ".hidden"),
        ("", "x"),
        ("arbor/../etc", "x"),
        ("/arbor", "x"),
        ("arbor", "sp ace"),
    ] {
        assert!(matches!(h.open(parent, name), Err(Error::InvalidName { .. })), "{parent:?}/{name:?} accepted");
    }
    assert!(h.open("arbor/nested", "sb-1.a_b").is_ok());
}

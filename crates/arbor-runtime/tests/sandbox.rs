//! Real sandboxes from a tiny busybox layer: envd runs as PID 1 in its own
//! namespaces and cgroup, sees none of the host, and destroy leaves nothing.
//! Needs root, overlayfs, Debian's busybox-static and the static envd
//! (scripts/setup.sh builds it); skipped with a notice otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{linux::LinuxDriver, Driver, SandboxSpec};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

struct Setup {
    _tmp: tempfile::TempDir,
    driver: LinuxDriver,
    layer: PathBuf,
}

async fn setup() -> Option<Setup> {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = common::busybox_layer(tmp.path());
    let driver = common::driver(tmp.path(), false).await;
    Some(Setup { _tmp: tmp, driver, layer })
}

fn spec(id: &str, layer: &Path) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers: vec![layer.to_path_buf()],
        hostname: format!("sbx-{id}"),
        env: BTreeMap::from([("SANDBOX_VAR".to_string(), "from-spec".to_string())]),
        access_token: None,
        vcpus: 1,
        memory_mib: 256,
        pids: 128,
        disk_mib: None,
        network: None,
    }
}

fn run(init_pid: u32, script: &str) -> String {
    let out = common::exec_in(init_pid, "root", "/bin/sh", script);
    format!("{out:?}")
}

#[tokio::test]
async fn sandbox_isolation_and_cleanup() {
    let Some(s) = setup().await else { return };
    let sbx = s.driver.create(&spec("iso-1", &s.layer)).await.unwrap();
    let root = PathBuf::from(format!("/proc/{}/root", sbx.init_pid));

    let script = "hostname > /r.host; cat /proc/1/cmdline > /r.init; ls /proc | grep -c '^[0-9]' > /r.pids; \
                  ls /work > /r.work 2>&1; id -u > /r.uid; echo $SANDBOX_VAR > /r.env; echo ok > /r.done";
    let resp = run(sbx.init_pid, script);
    assert!(resp.contains("exit status 0"), "{resp}");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_default().trim().to_string();
    assert_eq!(read("r.done"), "ok", "{resp}");
    assert_eq!(read("r.host"), "sbx-iso-1");
    assert!(read("r.init").starts_with("arbor-envd"), "PID 1 is {:?}", read("r.init"));
    let pids: u32 = read("r.pids").parse().unwrap();
    assert!(pids <= 4, "the sandbox sees {pids} processes");
    assert!(read("r.work").contains("No such file"), "host files visible: {}", read("r.work"));
    assert_eq!(read("r.uid"), "0");
    assert_eq!(read("r.env"), "from-spec");
    // The overlay and everything else mounted for it stay inside its mount namespace.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains("iso-1"), "a sandbox mount leaked to the host");
    // Writes land in the sandbox's upper dir, never in the shared layer.
    assert!(!s.layer.join("r.done").exists());

    let list = s.driver.list().await.unwrap();
    assert_eq!(list, vec!["iso-1".to_string()]);
    s.driver.destroy("iso-1").await.unwrap();
    // envd is dead and reaped: the driver's process is the sub-reaper of sandbox inits.
    assert!(!Path::new(&format!("/proc/{}", sbx.init_pid)).exists(), "envd survived destroy");
    assert!(s.driver.list().await.unwrap().is_empty());
    assert!(
        !Path::new("/sys/fs/cgroup/memory/arbor/iso-1").exists() && !Path::new("/sys/fs/cgroup/arbor/iso-1").exists()
    );
    assert!(matches!(s.driver.destroy("iso-1").await, Err(arbor_runtime::Error::NotFound(_))));
}

#[tokio::test]
async fn two_sandboxes_do_not_see_each_other() {
    let Some(s) = setup().await else { return };
    let a = s.driver.create(&spec("pair-a", &s.layer)).await.unwrap();
    let b = s.driver.create(&spec("pair-b", &s.layer)).await.unwrap();
    run(a.init_pid, "echo secret-a > /tmp/mine");
    run(b.init_pid, "ls /tmp > /r.tmp; ps > /r.ps");
    let seen = std::fs::read_to_string(format!("/proc/{}/root/r.tmp", b.init_pid)).unwrap();
    assert!(!seen.contains("mine"), "b sees a's files: {seen}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{}/ns/net", a.init_pid)).unwrap(),
        std::fs::read_link(format!("/proc/{}/ns/net", b.init_pid)).unwrap()
    );
    s.driver.destroy("pair-a").await.unwrap();
    s.driver.destroy("pair-b").await.unwrap();
}

#[tokio::test]
async fn bad_specs_are_refused_and_leave_nothing() {
    let Some(s) = setup().await else { return };
    let mut bad = spec("Bad_Id", &s.layer);
    assert!(matches!(s.driver.create(&bad).await, Err(arbor_runtime::Error::InvalidSpec(_))));
    bad = spec("nolayer", &s.layer);
    bad.layers = vec![PathBuf::from("/nonexistent-layer")];
    let err = s.driver.create(&bad).await.unwrap_err();
    assert!(matches!(err, arbor_runtime::Error::Launch(_)), "{err}");
    assert!(err.to_string().contains("overlay"), "{err}");
    assert!(s.driver.list().await.unwrap().is_empty(), "a failed create left its dir");
    assert!(!Path::new("/sys/fs/cgroup/memory/arbor/nolayer").exists());
    let mut cpus = spec("cpus", &s.layer);
    cpus.vcpus = 9;
    assert!(matches!(s.driver.create(&cpus).await, Err(arbor_runtime::Error::InvalidSpec(_))));
}

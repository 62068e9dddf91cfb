//! What a sandbox can learn of, or reach through, the host's file system
//! from its own mount table (issue 14, item 8): its root's mount options
//! name no host path, and a device node a layer carries (an OCI image may
//! carry any, the host's disk included) opens nothing. (envd's bind mount
//! still shows where the host keeps envd: see docs/security.md.)
//! Needs root, busybox-static and the static envd; skipped with a notice
//! otherwise (and fails under CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{Driver, SandboxSpec};
use std::collections::BTreeMap;

#[tokio::test]
async fn mounts_show_no_host_path_and_layer_devices_are_inert() {
    if let Some(what) = common::missing() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run this test; it needs {what}");
        eprintln!("SKIPPED mounts_show_no_host_path_and_layer_devices_are_inert: needs {what}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = common::busybox_layer(tmp.path());
    // The character device of /dev/null, as an image's tar could carry it.
    nix::sys::stat::mknod(
        &layer.join("devnode"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let driver = common::driver(tmp.path(), false).await;
    let spec = SandboxSpec {
        id: "hostpaths".into(),
        layers: vec![layer.clone()],
        hostname: "sbx-hostpaths".into(),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 128,
        pids: 64,
        disk_mib: None,
        network: None,
    };
    let sbx = driver.create(&spec).await.unwrap();
    let out = common::exec_in(sbx.init_pid, "root", "/bin/sh", "cat /proc/self/mountinfo");
    let host = tmp.path().to_string_lossy().into_owned();
    assert!(out.stdout.contains(" / / ") && out.stdout.contains("overlay"), "{out:?}");
    assert!(!out.stdout.contains(&host), "the sandbox's mount table shows host paths:\n{}", out.stdout);
    let root_line = out.stdout.lines().find(|l| l.split(' ').nth(4) == Some("/")).unwrap();
    assert!(root_line.contains("lowerdir=0,upperdir=s/upper,workdir=s/work"), "{root_line}");
    assert!(root_line.split(' ').nth(5).unwrap().contains("nodev"), "{root_line}");

    let dev = common::exec_in(sbx.init_pid, "root", "/bin/sh", "echo x > /devnode && echo opened");
    assert!(!dev.stdout.contains("opened"), "a layer's device node opened: {dev:?}");
    assert!(dev.stderr.contains("ermission denied"), "{dev:?}");
    // The sandbox's own /dev still works.
    let null = common::exec_in(sbx.init_pid, "root", "/bin/sh", "echo x > /dev/null && echo fine");
    assert_eq!(null.stdout, "fine\n", "{null:?}");
    driver.destroy("hostpaths").await.unwrap();
}

//! Checkpoints of real sandboxes through the driver: pause (checkpoint and
//! stop) and resume (restore under the same id), and clones (a checkpoint of
//! a running sandbox restored three times at once). A busybox sandbox with
//! envd as PID 1 runs a counting loop; after every restore the loop must
//! count on with the same pid from where the checkpoint left it, and files
//! must be those of the checkpoint, diverging afterwards.
//!
//! Runs on a test host (a fresh network namespace), with and without disk
//! limits (a btrfs snapshot or a file copy of the sandbox's directory).
//! Needs root, busybox-static, the static envd and CRIU >= 4
//! (scripts/build-criu.sh); skipped with a notice when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{After, Driver, SandboxSpec};
use common::{exec_at, Output};
use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

fn spec(id: &str, layer: &Path, disk: bool) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers: vec![layer.to_path_buf()],
        hostname: format!("sbx-{id}"),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 256,
        pids: 128,
        disk_mib: disk.then_some(256),
        network: Some(arbor_net::Policy::default()),
    }
}

fn criu_ok() -> bool {
    ["/usr/local/sbin/criu", "/usr/sbin/criu"]
        .iter()
        .any(|c| std::process::Command::new(c).arg("check").output().is_ok_and(|o| o.status.success()))
}

fn sh(sbx: &arbor_runtime::Sandbox, script: &str) -> Output {
    exec_at(SocketAddr::from((sbx.host_addr.unwrap(), 49983)), "root", "/bin/sh", script)
}

fn counter(sbx: &arbor_runtime::Sandbox) -> u64 {
    sh(sbx, "cat /tmp/counter").stdout.trim().parse().unwrap_or(0)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the counting loop (its pid in /tmp/loop.pid) and a file written
/// before the checkpoint.
fn start_counter(sbx: &arbor_runtime::Sandbox) {
    let out = sh(
        sbx,
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done) </dev/null >/dev/null 2>&1 & \
         echo $! > /tmp/loop.pid; echo before > /before",
    );
    assert_eq!(out.code, 0, "{out:?}");
    wait_for("the loop to count", || counter(sbx) >= 3);
}

/// The loop of the restored `sbx` counts on from at most `from` with pid `pid`.
fn counts_on(sbx: &arbor_runtime::Sandbox, from: u64, pid: &str) {
    let now = counter(sbx);
    assert!(now >= from.saturating_sub(1) && now < from + 40, "counter {now} after a checkpoint at {from}");
    wait_for("the loop to count on", || counter(sbx) > now + 2);
    let out = sh(sbx, "cat /tmp/loop.pid; cat /before; hostname");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], [pid, "before"], "{out:?}");
}

async fn pause_resume_and_clone(disk: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let layer: PathBuf = common::busybox_layer(tmp.path());
    let _parent = common::ParentCleanup(common::test_cgroup_parent(tmp.path()));
    let driver = common::driver_full(tmp.path(), true, disk).await;
    let origin = driver.create(&spec("ck-origin", &layer, disk)).await.unwrap();
    start_counter(&origin);
    let loop_pid = sh(&origin, "cat /tmp/loop.pid").stdout.trim().to_string();

    // Pause: checkpoint and stop. Nothing of the sandbox runs or remains but
    // the checkpoint.
    let paused = driver.checkpoint("ck-origin", "pause-origin", After::Stop).await.unwrap();
    let at_pause = sh_free_counter(&driver, "pause-origin");
    assert!(driver.status("ck-origin").await.is_err(), "the paused sandbox still exists");
    assert!(paused.image_bytes > 0 && paused.layers == vec![layer.clone()]);
    eprintln!("pause: stopped {} ms, {} KiB of images", paused.stopped_ms, paused.image_bytes / 1024);

    // Resume under the same id: the same processes count on.
    let started = Instant::now();
    let origin = driver.restore(&spec("ck-origin", &layer, disk), "pause-origin").await.unwrap();
    eprintln!("resume: {} ms", started.elapsed().as_millis());
    counts_on(&origin, at_pause, &loop_pid);
    driver.remove_checkpoint("pause-origin").await.unwrap();

    // Clone three times from a checkpoint of the running origin.
    let snap = driver.checkpoint("ck-origin", "snap", After::Continue).await.unwrap();
    eprintln!("snapshot: stopped {} ms", snap.stopped_ms);
    let at_snap = counter(&origin);
    let started = Instant::now();
    let clones = futures::future::join_all((0..3).map(|i| {
        let spec = spec(&format!("ck-clone-{i}"), &layer, disk);
        let driver = &driver;
        async move { driver.restore(&spec, "snap").await.unwrap() }
    }))
    .await;
    eprintln!("3 clones: {} ms", started.elapsed().as_millis());
    for (i, clone) in clones.iter().enumerate() {
        counts_on(clone, at_snap, &loop_pid);
        assert_eq!(sh(clone, "hostname").stdout.trim(), format!("sbx-ck-clone-{i}"));
        assert_eq!(sh(clone, &format!("echo {i} > /mine; ls /mine* ; cat /mine")).stdout, format!("/mine\n{i}\n"));
    }
    assert_eq!(sh(&origin, "cat /mine 2>&1 || echo none").stdout.trim().lines().last(), Some("none"));

    // A snapshot of a paused sandbox is a copy of its checkpoint.
    driver.copy_checkpoint("snap", "snap-copy").await.unwrap();
    assert_eq!(driver.checkpoints().await.unwrap(), ["snap", "snap-copy"]);

    // Reconcile keeps nothing but the checkpoints, which go one by one.
    let removed = driver.reconcile(&HashSet::new()).await.unwrap();
    assert_eq!(removed.len(), 4, "{removed:?}");
    for name in ["snap", "snap-copy"] {
        driver.remove_checkpoint(name).await.unwrap();
    }
    assert!(driver.checkpoints().await.unwrap().is_empty());
    assert!(driver.checkpoint_info("snap").await.is_err());
    driver.decommission().await.unwrap();
}

/// The counter as the checkpoint `name` holds it, read from its files.
fn sh_free_counter(driver: &arbor_runtime::linux::LinuxDriver, name: &str) -> u64 {
    let dir = driver.checkpoint_path(name);
    std::fs::read_to_string(dir.join("upper/tmp/counter")).unwrap().trim().parse().unwrap()
}

#[test]
fn checkpoints_without_disk_limits() {
    if let Some(what) = common::missing().or((!criu_ok()).then_some("criu >= 4 (scripts/build-criu.sh)")) {
        eprintln!("skipping: needs {what}");
        return;
    }
    common::on_test_host(|| pause_resume_and_clone(false));
}

#[test]
fn checkpoints_with_disk_limits() {
    if let Some(what) = common::missing().or((!criu_ok()).then_some("criu >= 4 (scripts/build-criu.sh)")) {
        eprintln!("skipping: needs {what}");
        return;
    }
    common::on_test_host(|| pause_resume_and_clone(true));
}

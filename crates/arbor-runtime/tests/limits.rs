//! Limits on real sandboxes of the `base` template: memory (OOM kill inside
//! the sandbox's own cgroup), processes, CPU quota. Skipped with a notice
//! where the base template or root is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{Driver, SandboxSpec};
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

/// The tests measure resource use: one at a time, so a fork bomb does not
/// take the CPU a quota test measures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn base() -> Option<Vec<PathBuf>> {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return None;
    }
    let layers = common::base_layers();
    if layers.is_none() {
        eprintln!("skipping: needs the base template (scripts/setup.sh --no-start)");
    }
    layers
}

fn spec(id: &str, layers: Vec<PathBuf>) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers,
        hostname: id.into(),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 128,
        pids: 64,
        disk_mib: None,
        network: None,
    }
}

#[tokio::test]
async fn memory_bomb_is_oom_killed_inside_the_sandbox() {
    let Some(layers) = base() else { return };
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = common::Cleanup { ids: vec!["oom-1".into()], mount: None };
    let driver = common::driver(tmp.path(), false).await;
    let sbx = driver.create(&spec("oom-1", layers)).await.unwrap();
    let bomb = "a = []\nwhile True: a.append(bytearray(1 << 20))";
    let out = common::exec_in(sbx.init_pid, "user", "/bin/bash", &format!("python3 -c '{bomb}'"));
    assert_eq!(out.status, "signal: killed", "{out:?}");
    let status = driver.status("oom-1").await.unwrap();
    assert!(status.oom_kills >= 1, "{status:?}");
    // Only the bomb died: envd (PID 1) still serves the sandbox.
    assert!(status.running, "{status:?}");
    let after = common::exec_in(sbx.init_pid, "user", "/bin/bash", "echo alive");
    assert_eq!(after.stdout.trim(), "alive", "{after:?}");
    driver.destroy("oom-1").await.unwrap();
}

#[tokio::test]
async fn fork_bomb_stops_at_the_pids_limit() {
    let Some(layers) = base() else { return };
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = common::Cleanup { ids: vec!["forkbomb-1".into()], mount: None };
    let driver = common::driver(tmp.path(), false).await;
    let sbx = driver.create(&spec("forkbomb-1", layers)).await.unwrap();
    let out = common::exec_in(
        sbx.init_pid,
        "user",
        "/bin/bash",
        "bomb() { bomb | bomb & }; (bomb) >/dev/null 2>&1 & echo started",
    );
    assert_eq!(out.stdout.trim(), "started", "{out:?}");
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(driver.status("forkbomb-1").await.unwrap().tasks);
    }
    assert!(peak <= 64, "the sandbox ran {peak} tasks with a limit of 64");
    assert!(peak >= 48, "the bomb did not reach the limit ({peak} tasks)");
    // Destroy ends the bomb, however many times it forked meanwhile.
    driver.destroy("forkbomb-1").await.unwrap();
    assert!(driver.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn cpu_quota_holds() {
    let Some(layers) = base() else { return };
    let _serial = SERIAL.lock().await;
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("skipping: a 1-vCPU quota is only visible with 2+ host CPUs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = common::Cleanup { ids: vec!["cpu-1".into()], mount: None };
    let driver = common::driver(tmp.path(), false).await;
    let sbx = driver.create(&spec("cpu-1", layers)).await.unwrap();
    // Two busy loops would use two CPUs; the sandbox has one.
    let out = common::exec_in(
        sbx.init_pid,
        "user",
        "/bin/bash",
        "for i in 1 2; do (timeout 4 bash -c 'while :; do :; done' &) ; done; echo started",
    );
    assert_eq!(out.stdout.trim(), "started", "{out:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (t0, c0) = (std::time::Instant::now(), driver.status("cpu-1").await.unwrap().cpu_usage_ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t1, c1) = (std::time::Instant::now(), driver.status("cpu-1").await.unwrap().cpu_usage_ns);
    let cpus = (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("two busy loops under a 1-vCPU quota used {cpus:.2} CPUs");
    assert!(cpus <= 1.15, "quota exceeded: {cpus:.2} CPUs");
    // A loaded machine may give them less, never more.
    assert!(cpus >= 0.1, "the loops did not run: {cpus:.2} CPUs");
    driver.destroy("cpu-1").await.unwrap();
}

#[tokio::test]
async fn disk_limit_holds() {
    let Some(layers) = base() else { return };
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup =
        common::Cleanup { ids: vec!["disk-1".into(), "disk-2".into()], mount: Some(tmp.path().join("data/sandboxes")) };
    let driver = common::driver_with_disk(tmp.path()).await;
    let mut limited = spec("disk-1", layers.clone());
    limited.disk_mib = Some(64);
    let sbx = driver.create(&limited).await.unwrap();
    let free = driver.create(&spec("disk-2", layers)).await.unwrap();
    let fill = "dd if=/dev/zero of=/home/user/big bs=1M count=200 2>/dev/null; echo $?; stat -c %s /home/user/big";
    let out = common::exec_in(sbx.init_pid, "user", "/bin/bash", fill);
    assert_eq!(out.stdout.lines().next(), Some("1"), "dd did not fail: {out:?}");
    let written: u64 = out.stdout.lines().last().unwrap().trim().parse().unwrap();
    assert!(written <= 64 << 20, "wrote {written} bytes past a 64 MiB limit");
    // A sandbox without a limit is not held to its neighbour's.
    let other = common::exec_in(free.init_pid, "user", "/bin/bash", fill);
    assert_eq!(other.stdout, format!("0\n{}\n", 200u64 << 20), "{other:?}");
    // Deleting frees the quota: the sandbox can write again.
    let again = common::exec_in(
        sbx.init_pid,
        "user",
        "/bin/bash",
        "rm /home/user/big && sync && echo hi > /home/user/small && cat /home/user/small",
    );
    assert_eq!(again.stdout.trim(), "hi", "{again:?}");
    let usage = driver.status("disk-1").await.unwrap().disk_bytes;
    assert!(usage.is_some(), "no disk usage reported");
    driver.decommission().await.unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*tmp.path().to_string_lossy()), "the disk image stayed mounted");
}

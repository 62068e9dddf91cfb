//! Limits on real sandboxes of the `base` template: memory (OOM kill inside
//! the sandbox's own cgroup), processes, CPU quota. Skipped with a notice
//! where the base template or root is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{Driver, SandboxSpec};
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

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
    let tmp = tempfile::tempdir().unwrap();
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
    let tmp = tempfile::tempdir().unwrap();
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
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("skipping: a 1-vCPU quota is only visible with 2+ host CPUs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
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
    assert!(cpus >= 0.6, "the loops barely ran: {cpus:.2} CPUs");
    driver.destroy("cpu-1").await.unwrap();
}

//! Nothing is lost: 50 sandboxes created and destroyed concurrently, then the
//! owning process killed with SIGKILL while it creates 10 more, and a new
//! one started over the same state: no mount, cgroup, network namespace,
//! veth, nftables entry, process or directory may be left.
//!
//! The owning process is this test binary run again in a "node" role; the
//! test acts as the host's init (a sub-reaper reaping what the killed node
//! orphaned), all inside a network namespace of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_net::Policy;
use arbor_runtime::{Driver, SandboxSpec};
use common::sh;
use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

const ROLE: &str = "ARBOR_LEAK_ROLE";
const DIR: &str = "ARBOR_LEAK_DIR";

fn spec(id: String, layers: &[PathBuf]) -> SandboxSpec {
    SandboxSpec {
        id,
        layers: layers.to_vec(),
        hostname: "leak".into(),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 128,
        pids: 64,
        disk_mib: None,
        network: Some(Policy::default()),
    }
}

/// The node's side, run in a child process by `nothing_is_left_after_churn_and_a_crash`.
#[test]
#[ignore = "a role of the leak test, run by it in a child process"]
fn node_role() {
    let (Ok(role), Some(dir)) = (std::env::var(ROLE), std::env::var_os(DIR)) else { return };
    let dir = PathBuf::from(dir);
    let layer = dir.join("layer");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let driver = std::sync::Arc::new(common::driver(&dir, true).await);
        let layers = [layer];
        match role.as_str() {
            "churn" => {
                let creates = (0..50).map(|i| {
                    let (driver, spec) = (driver.clone(), spec(format!("churn-{i}"), &layers));
                    tokio::spawn(async move { driver.create(&spec).await.map(|_| spec.id) })
                });
                let ids: Vec<String> =
                    futures::future::join_all(creates).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
                let destroys = ids.into_iter().map(|id| {
                    let driver = driver.clone();
                    tokio::spawn(async move { driver.destroy(&id).await })
                });
                for r in futures::future::join_all(destroys).await {
                    r.unwrap().unwrap();
                }
                println!("churned");
            }
            "crash" => {
                let creates: Vec<_> = (0..10)
                    .map(|i| {
                        let (driver, spec) = (driver.clone(), spec(format!("crash-{i}"), &layers));
                        tokio::spawn(async move {
                            if driver.create(&spec).await.is_ok() {
                                println!("created {}", spec.id);
                            }
                        })
                    })
                    .collect();
                println!("creating");
                futures::future::join_all(creates).await;
                println!("all created");
            }
            "restart" => {
                let removed = driver.reconcile(&HashSet::new()).await.unwrap();
                println!("reconciled {}", removed.len());
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// Runs this binary in `role`; returns its stdout lines as they come (the
/// harness may print a test's name on the line of its first output, so
/// callers look for words, not whole lines).
fn node(role: &str, dir: &Path) -> (std::process::Child, impl Iterator<Item = String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "node_role", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    (child, lines)
}

/// Reaps whatever died among our children (orphans of the killed node).
fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Host pids of processes that belong to a sandbox: envd started by a
/// launcher (it alone carries `--ready-fd`) and launchers themselves.
fn sandbox_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if cmdline.contains("--ready-fd")
            || comm.starts_with("arbor-launch")
            || (zombie && comm.starts_with("arbor-envd"))
        {
            found.push(format!("{name} {} {cmdline}", comm.trim()));
        }
    }
    found
}

#[test]
fn nothing_is_left_after_churn_and_a_crash() {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    common::on_test_host(|| async {
        let tmp = tempfile::tempdir().unwrap();
        common::busybox_layer(tmp.path());
        let before = sandbox_processes();

        let (mut churn, mut lines) = node("churn", tmp.path());
        assert!(lines.any(|l| l.contains("churned")), "the churn role failed");
        assert!(churn.wait().unwrap().success());

        let (mut crash, mut lines) = node("crash", tmp.path());
        assert!(lines.any(|l| l.contains("created crash-")), "no create finished");
        crash.kill().unwrap();
        crash.wait().unwrap();
        // Sandboxes the crash left (finished or half-made) are there now...
        let left = std::fs::read_dir(tmp.path().join("data/sandboxes")).unwrap().count();
        assert!(left >= 1, "nothing to clean up; the test proves nothing");

        // ...and a new node process cleans them up.
        let (mut restart, mut lines) = node("restart", tmp.path());
        let reconciled = lines.find(|l| l.contains("reconciled")).expect("the restart role failed");
        assert!(restart.wait().unwrap().success());
        eprintln!("{left} sandbox dirs after the crash; {reconciled}");
        reap_orphans();

        let ids = |prefix: &str| -> Vec<String> {
            arbor_cgroups::Hierarchy::detect()
                .unwrap()
                .list(arbor_runtime::linux::CGROUP_PARENT)
                .unwrap()
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect()
        };
        assert!(ids("churn-").is_empty() && ids("crash-").is_empty(), "cgroups left: {:?}", ids(""));
        let dirs: Vec<_> = std::fs::read_dir(tmp.path().join("data/sandboxes")).unwrap().flatten().collect();
        assert!(dirs.is_empty(), "directories left: {dirs:?}");
        let pins: Vec<_> = std::fs::read_dir(tmp.path().join("netns")).unwrap().flatten().collect();
        assert!(pins.is_empty(), "namespace pins left: {pins:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let tmp_path = tmp.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&tmp_path), "mounts left:\n{mounts}");
        let links = sh("ip -o link show");
        assert!(links.lines().all(|l| !l.contains(": arb")), "veths left:\n{links}");
        let table = sh("nft list table inet arbor");
        // The base chains name veths by the pattern "arb*"; a sandbox's entries by "arb<slot>".
        let entry = table.match_indices("\"arb").any(|(i, _)| table[i + 4..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(!table.contains("sb_") && !entry, "nftables entries left:\n{table}");
        let procs: Vec<String> = sandbox_processes().into_iter().filter(|p| !before.contains(p)).collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
    });
}

//! envd as PID 1 of its own PID namespace (as in a sandbox): it reaps
//! orphans, and on SIGTERM it forwards the signal to its processes before
//! exiting. Needs root and util-linux's `unshare`; skipped (with a notice)
//! otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Pid1Envd {
    unshare: Child,
    /// envd's pid as the host sees it.
    host_pid: u32,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Pid1Envd {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Children of every thread of `pid` (a child belongs to the thread that
/// forked it; re-parented orphans to the main thread).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

async fn start() -> Option<Pid1Envd> {
    if !common::is_root() || Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("skipping: needs root and unshare");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let etc = common::user_db(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_arbor-envd"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--default-user", "root"])
        .arg("--etc-dir")
        .arg(&etc)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if reqwest::get(format!("{base}/health")).await.is_ok_and(|r| r.status() == 204) {
            break;
        }
        assert!(Instant::now() < deadline, "envd did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let host_pid = *children_of(unshare.id()).first().expect("unshare has no child");
    Some(Pid1Envd { unshare, host_pid, base, dir })
}

impl Pid1Envd {
    /// Starts `script` under bash and returns the whole response stream.
    async fn run(&self, script: &str, wait: bool) -> String {
        let msg = serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}, "stdin": false});
        let payload = msg.to_string();
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        body.extend_from_slice(payload.as_bytes());
        let resp = reqwest::Client::new()
            .post(format!("{}/process.Process/Start", self.base))
            .header("content-type", "application/connect+json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        if !wait {
            return String::new();
        }
        String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned()
    }
}

#[tokio::test]
async fn pid1_reaps_orphans() {
    let Some(envd) = start().await else { return };
    // bash exits at once; its two sleeps are re-parented to envd (PID 1).
    let out = envd.run("sleep 0.3 & sleep 0.4 & exit 0", true).await;
    assert!(out.contains("exit status 0"), "{out}");
    // They are envd's now (bash is gone), and still running.
    assert_eq!(children_of(envd.host_pid).len(), 2, "orphans not re-parented to envd");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let zombies: Vec<u32> = children_of(envd.host_pid).into_iter().filter(|p| state_of(*p) == Some('Z')).collect();
    assert!(zombies.is_empty(), "unreaped children of envd: {zombies:?}");
    assert!(children_of(envd.host_pid).is_empty(), "orphans still running: {:?}", children_of(envd.host_pid));
}

#[tokio::test]
async fn pid1_forwards_sigterm_before_exiting() {
    let Some(mut envd) = start().await else { return };
    let marker = envd.dir.path().join("got-term");
    let script = format!("trap 'echo term > {}; exit 0' TERM; while true; do sleep 0.05; done", marker.display());
    envd.run(&script, false).await;
    // Wait until the job is running, then stop envd the way a runtime does.
    let deadline = Instant::now() + Duration::from_secs(5);
    while children_of(envd.host_pid).is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(envd.host_pid as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = envd.unshare.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "envd did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "envd exited with {status}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap_or_default().trim(), "term", "SIGTERM was not forwarded");
}

//! Shared test harness: real sandboxes, driven through envd's own API.
//!
//! Tests that give sandboxes a network run on a thread inside a fresh network
//! namespace (the test's "host"), so veths, nftables rules and any fake
//! internet host vanish with it and no packet reaches the machine's real
//! interfaces.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use arbor_runtime::linux::{Config, LinuxDriver};
use base64::Engine;
use std::{
    future::Future,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Duration,
};

pub fn envd_bin() -> PathBuf {
    std::env::var_os("ARBOR_ENVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/x86_64-unknown-linux-gnu/release/arbor-envd")
    })
}

/// Why these tests cannot run here, if they cannot.
pub fn missing() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("root")
    } else if !Path::new("/bin/busybox").exists() {
        Some("/bin/busybox (busybox-static)")
    } else if !envd_bin().exists() {
        Some("the static envd (scripts/setup.sh --no-start)")
    } else {
        None
    }
}

/// A one-layer root file system: busybox and a passwd with root.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    for d in ["bin", "etc", "tmp", "root", "mnt"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ls", "cat", "echo", "hostname", "ps", "grep", "wc", "sleep", "id", "head", "dd", "df", "unshare",
        "mount", "mknod", "true",
    ] {
        symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\n").unwrap();
    layer
}

/// The layers of the `base` template (top first), if setup built it.
pub fn base_layers() -> Option<Vec<PathBuf>> {
    let data = std::env::var_os("ARBOR_DATA_DIR").map_or_else(|| PathBuf::from("/var/lib/arbor"), PathBuf::from);
    let manifest = std::fs::read_to_string(data.join("refs/templates/base.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    let layers: Vec<PathBuf> = manifest["layers"]
        .as_array()?
        .iter()
        .rev()
        .filter_map(|l| Some(data.join("layers").join(l.as_str()?).join("rootfs")))
        .collect();
    layers.iter().all(|l| l.is_dir()).then_some(layers)
}

/// A driver whose state lives in `dir`, with sandbox networking if asked.
pub async fn driver(dir: &Path, network: bool) -> LinuxDriver {
    build_driver(dir, network, None).await
}

/// A driver with disk limits on a small image of its own in `dir`; call
/// `decommission` at the end to unmount it.
pub async fn driver_with_disk(dir: &Path) -> LinuxDriver {
    let disk = arbor_disk::Config { image: Some(dir.join("sandboxes.img")), image_size: 1 << 30 };
    build_driver(dir, false, Some(disk)).await
}

/// A driver with networking and, if asked, disk limits (an image in `dir`),
/// under a cgroup parent of its own (see [`test_cgroup_parent`]) so that its
/// reconcile never touches another test's sandboxes. Call `decommission` at
/// the end.
pub async fn driver_full(dir: &Path, network: bool, disk: bool) -> LinuxDriver {
    let disk = disk.then(|| arbor_disk::Config { image: Some(dir.join("sandboxes.img")), image_size: 1 << 30 });
    build_driver(dir, network, disk).await.with_cgroup_parent(&test_cgroup_parent(dir))
}

/// The cgroup parent of [`driver_full`]'s sandboxes for the test dir `dir`.
pub fn test_cgroup_parent(dir: &Path) -> String {
    format!("arbor-test-{}", dir.file_name().unwrap().to_string_lossy().to_lowercase())
}

/// Removes the (empty) cgroup parent `parent` from every hierarchy when
/// dropped, however the test ends: the driver creates it and, as a node's
/// parent, never removes it.
pub struct ParentCleanup(pub String);

impl Drop for ParentCleanup {
    fn drop(&mut self) {
        for ctrl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(ctrl.path().join(&self.0));
        }
    }
}

async fn build_driver(dir: &Path, network: bool, disk: Option<arbor_disk::Config>) -> LinuxDriver {
    let network = network.then(|| arbor_net::Config { netns_dir: dir.join("netns"), ..arbor_net::Config::default() });
    LinuxDriver::new(Config {
        data_dir: dir.join("data"),
        envd: envd_bin(),
        launcher: env!("CARGO_BIN_EXE_arbor-launch").into(),
        network,
        disk,
    })
    .await
    .unwrap()
}

/// Runs `body` on a thread inside a fresh network namespace with its own
/// tokio runtime; panics propagate.
pub fn on_test_host<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let outcome = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        sh("ip link set lo up");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(body());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command run through envd produced.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Exit code, or -1 when a signal ended it.
    pub code: i32,
    /// envd's end status, e.g. `exit status 0` or `signal: killed`.
    pub status: String,
}

/// Runs `script` with `bash`/`sh -c` as `user` through envd's Start at `addr`
/// (HTTP/1.0, so the stream ends at close).
pub fn exec_at(addr: SocketAddr, user: &str, shell: &str, script: &str) -> Output {
    let msg = serde_json::json!({"process": {"cmd": shell, "args": ["-c", script]}, "stdin": false}).to_string();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    body.extend_from_slice(msg.as_bytes());
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    write!(
        s,
        "POST /process.Process/Start HTTP/1.0\r\nContent-Type: application/connect+json\r\n\
         Authorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_stream(&raw)
}

/// Decodes a Connect server stream of process events.
fn parse_stream(raw: &[u8]) -> Output {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response") + 4;
    let mut rest = &raw[split..];
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| {
                String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(s).unwrap()).into_owned()
            })
            .unwrap_or_default()
    };
    let mut out = Output { code: i32::MIN, ..Output::default() };
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let msg: serde_json::Value = serde_json::from_slice(&rest[5..5 + len]).unwrap();
        rest = &rest[5 + len..];
        let event = &msg["event"];
        out.stdout += &b64(&event["data"]["stdout"]);
        out.stderr += &b64(&event["data"]["stderr"]);
        if let Some(end) = event.get("end") {
            out.code = i32::try_from(end["exitCode"].as_i64().unwrap_or(0)).unwrap();
            out.status = end["status"].as_str().unwrap_or_default().to_string();
            if !end["exited"].as_bool().unwrap_or(false) {
                out.code = -1;
            }
        }
        if msg.get("error").is_some() {
            out.stderr += &msg["error"].to_string();
        }
    }
    out
}

/// Runs `script` in the network namespace of `init_pid` (a sandbox without
/// a network of its own) against envd on its loopback.
pub fn exec_in(init_pid: u32, user: &str, shell: &str, script: &str) -> Output {
    let ns = std::fs::File::open(format!("/proc/{init_pid}/ns/net")).unwrap();
    let (user, shell, script) = (user.to_string(), shell.to_string(), script.to_string());
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        exec_at("127.0.0.1:49983".parse().unwrap(), &user, &shell, &script)
    })
    .join()
    .unwrap()
}

/// Cleans up after a test that failed half-way (a passing test has
/// destroyed everything already): kills and removes the cgroups of `ids`
/// (with them every sandbox process) and lazily unmounts `mount`.
pub struct Cleanup {
    pub ids: Vec<String>,
    pub mount: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(h) = arbor_cgroups::Hierarchy::detect() {
            for id in &self.ids {
                if let Ok(cg) = h.open(arbor_runtime::linux::CGROUP_PARENT, id) {
                    let _ = cg.destroy();
                }
            }
        }
        if let Some(mount) = &self.mount {
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

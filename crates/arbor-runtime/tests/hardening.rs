//! Sandbox hardening on real sandboxes: what capabilities envd and its
//! processes hold, that the seccomp filter is on and refuses what it must,
//! and that ordinary userland (sudo, python3, node, git...) still works.
//! Needs root, overlayfs, busybox-static and the static envd; the userland
//! checks also need the base template (scripts/setup.sh builds both).
//! Skipped with a notice otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{
    linux::{caps::kept_mask, LinuxDriver},
    Driver, SandboxSpec,
};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

struct Setup {
    tmp: tempfile::TempDir,
    driver: LinuxDriver,
}

async fn setup() -> Option<Setup> {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let driver = common::driver(tmp.path(), false).await;
    Some(Setup { tmp, driver })
}

fn spec(id: &str, layers: Vec<PathBuf>) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers,
        hostname: format!("sbx-{id}"),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 512,
        pids: 256,
        disk_mib: None,
        network: None,
    }
}

/// A sandbox whose processes run as `user`; its cgroup (and with it every
/// process) goes even when an assertion fails.
struct Running {
    pid: u32,
    user: &'static str,
    _cleanup: common::Cleanup,
}

impl Running {
    async fn start(driver: &LinuxDriver, spec: &SandboxSpec, user: &'static str) -> Self {
        let cleanup = common::Cleanup { ids: vec![spec.id.clone()], mount: None };
        let sbx = driver.create(spec).await.unwrap();
        Running { pid: sbx.init_pid, user, _cleanup: cleanup }
    }

    /// Runs `script` with `sh -c` through envd's Start.
    fn run(&self, script: &str) -> String {
        format!("{:?}", common::exec_in(self.pid, self.user, "/bin/sh", script))
    }

    /// A file in the sandbox, read from the host.
    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/root{path}", self.pid)).unwrap_or_default()
    }
}

/// The value of `field` in a `/proc/<pid>/status` text.
fn status_field<'s>(status: &'s str, field: &str) -> &'s str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in {status:?}"))
}

fn mask(status: &str, field: &str) -> u64 {
    u64::from_str_radix(status_field(status, field), 16).unwrap()
}

#[tokio::test]
async fn envd_and_its_processes_keep_only_the_sandbox_capabilities() {
    let Some(s) = setup().await else { return };
    let layer = common::busybox_layer(s.tmp.path());
    let sbx = Running::start(&s.driver, &spec("caps-1", vec![layer]), "root").await;

    let init = std::fs::read_to_string(format!("/proc/{}/status", sbx.pid)).unwrap();
    for field in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(mask(&init, field), kept_mask(), "envd's {field}");
    }
    assert_eq!(mask(&init, "CapInh"), 0);
    assert_eq!(mask(&init, "CapAmb"), 0);
    assert_eq!(status_field(&init, "Seccomp"), "2", "envd runs without a seccomp filter");
    assert_eq!(status_field(&init, "Seccomp_filters"), "1");
    assert_eq!(status_field(&init, "NoNewPrivs"), "0", "no_new_privs would break sudo");

    let resp = sbx.run("cat /proc/self/status > /r.status; echo done > /r.done");
    assert_eq!(sbx.read("/r.done").trim(), "done", "{resp}");
    let child = sbx.read("/r.status");
    assert_eq!(mask(&child, "CapBnd"), kept_mask());
    assert_eq!(mask(&child, "CapEff"), kept_mask(), "a root process of envd's");
    assert_eq!(status_field(&child, "Seccomp"), "2");
    // Not SYS_ADMIN, not MKNOD (no device cgroup backs it), not SYS_PTRACE...
    for cap in [21, 27, 19, 16, 2] {
        assert_eq!(kept_mask() & (1 << cap), 0, "capability {cap} is kept");
    }
}

#[tokio::test]
async fn the_filter_refuses_namespaces_mounts_and_device_nodes() {
    let Some(s) = setup().await else { return };
    let layer = common::busybox_layer(s.tmp.path());
    let sbx = Running::start(&s.driver, &spec("seccomp-1", vec![layer]), "root").await;

    // A user namespace needs no capability: only the filter stops it.
    let script = "unshare -U true 2> /r.userns; unshare -m true 2> /r.mntns; unshare -n true 2> /r.netns; \
                  mount -t tmpfs none /mnt 2> /r.mount; mknod /r.blk b 8 0 2> /r.mknod; \
                  mknod /r.fifo p && echo ok > /r.fifo-ok; echo done > /r.done";
    let resp = sbx.run(script);
    assert_eq!(sbx.read("/r.done").trim(), "done", "{resp}");
    for file in ["/r.userns", "/r.mntns", "/r.netns", "/r.mount", "/r.mknod"] {
        let err = sbx.read(file);
        // busybox's mount words EPERM its own way.
        assert!(err.contains("Operation not permitted") || err.contains("permission denied"), "{file}: {err:?}");
    }
    assert_eq!(sbx.read("/r.fifo-ok").trim(), "ok", "mkfifo must keep working");
    assert!(!Path::new(&format!("/proc/{}/root/r.blk", sbx.pid)).exists());
}

/// Userland checks: they need the base template.
async fn base(s: &Setup, id: &str) -> Option<Running> {
    let Some(layers) = common::base_layers() else {
        eprintln!("skipping: needs the base template (scripts/setup.sh builds it under /var/lib/arbor)");
        return None;
    };
    Some(Running::start(&s.driver, &spec(id, layers), "user").await)
}

#[tokio::test]
async fn sudo_works_for_user_and_gets_only_the_kept_set() {
    let Some(s) = setup().await else { return };
    let Some(sbx) = base(&s, "sudo-1").await else { return };
    let resp = sbx.run(
        "id -u > /tmp/r.uid; sudo -n id -u > /tmp/r.sudo 2>&1; \
         sudo -n cat /proc/self/status > /tmp/r.status 2>&1; echo done > /tmp/r.done",
    );
    assert_eq!(sbx.read("/tmp/r.done").trim(), "done", "{resp}");
    assert_eq!(sbx.read("/tmp/r.uid").trim(), "1000");
    // sudo may first warn that it cannot resolve the sandbox's hostname.
    let sudo = sbx.read("/tmp/r.sudo");
    assert_eq!(sudo.lines().last(), Some("0"), "sudo failed: {sudo}");
    let status = sbx.read("/tmp/r.status");
    assert_eq!(mask(&status, "CapEff"), kept_mask(), "root through sudo");
    assert_eq!(mask(&status, "CapBnd"), kept_mask());
    assert_eq!(status_field(&status, "Seccomp"), "2");
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn blocked_calls_fail_with_eperm_and_clone3_with_enosys() {
    let Some(s) = setup().await else { return };
    let Some(sbx) = base(&s, "errno-1").await else { return };
    // x86_64 numbers; null arguments are fine: the filter answers first.
    // 463 is setxattrat (Linux 6.13), newer than the profile: ENOSYS, not EPERM.
    let py = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"bpf": 321, "keyctl": 250, "add_key": 248, "io_uring_setup": 425, "perf_event_open": 298,
         "kexec_load": 246, "init_module": 175, "mount": 165, "swapon": 167, "reboot": 169,
         "setns": 308, "unshare_user": 272, "fsopen": 430, "userfaultfd": 323, "clone3": 435,
         "setxattrat": 463}
args = {"unshare_user": (0x10000000,)}
out = []
for name, nr in calls.items():
    rc = libc.syscall(nr, *args.get(name, (0, 0, 0)))
    out.append(f"{name} {errno.errorcode.get(ctypes.get_errno(), rc)}")
open("/tmp/r.errno", "w").write("\n".join(out) + "\n")
"#;
    std::fs::write(format!("/proc/{}/root/tmp/errno.py", sbx.pid), py).unwrap();
    let resp = sbx.run("python3 /tmp/errno.py 2> /tmp/r.err; echo done > /tmp/r.done");
    assert_eq!(sbx.read("/tmp/r.done").trim(), "done", "{resp}");
    let got = sbx.read("/tmp/r.errno");
    assert!(!got.is_empty(), "python failed: {}", sbx.read("/tmp/r.err"));
    for line in got.lines() {
        let (name, err) = line.split_once(' ').unwrap();
        let want = if matches!(name, "clone3" | "setxattrat") { "ENOSYS" } else { "EPERM" };
        assert_eq!(err, want, "{name}");
    }
}

#[tokio::test]
async fn ordinary_userland_works_under_the_filter() {
    let Some(s) = setup().await else { return };
    let Some(sbx) = base(&s, "userland-1").await else { return };
    // Threads (clone3 falls back to clone), subprocesses, ptys, sockets,
    // setuid, package tools: each writes its name on success.
    let checks = [
        ("bash", "bash -c 'echo $((6*7))' | grep -q 42"),
        ("python", "python3 -c 'import threading, subprocess, ssl, sqlite3, socket, pty, os; t = threading.Thread(target=lambda: None); t.start(); t.join(); subprocess.run([\"true\"], check=True); s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); pid, fd = pty.fork(); os._exit(0) if pid == 0 else os.waitpid(pid, 0)'"),
        ("asyncio", "python3 -c 'import asyncio; asyncio.run(asyncio.sleep(0.01))'"),
        ("node", "node -e 'require(\"child_process\").execSync(\"true\"); require(\"fs\").readFileSync(\"/etc/passwd\"); new (require(\"worker_threads\").Worker)(\"1\", {eval: true})'"),
        ("pip", "pip --version >/dev/null"),
        ("git", "git init -q /tmp/g && git -C /tmp/g -c user.name=a -c user.email=a@b commit -q --allow-empty -m x"),
        ("curl", "curl -s -o /dev/null file:///etc/hostname"),
        ("apt", "sudo -n apt-get check -qq"),
        ("ps", "ps aux >/dev/null"),
        ("venv", "python3 -m venv --without-pip /tmp/v && /tmp/v/bin/python -c 'import sys; assert sys.prefix == \"/tmp/v\"'"),
        ("npm", "cd /tmp && mkdir np && cd np && export npm_config_update_notifier=false && npm init -y >/dev/null && npm --version"),
        ("http", "cd /tmp && (python3 -m http.server 8123 --bind 127.0.0.1 & echo $! > /tmp/h.pid; sleep 1; curl -sf http://127.0.0.1:8123/ >/dev/null; r=$?; kill $(cat /tmp/h.pid); exit $r)"),
        ("clone", "git clone -q /tmp/g /tmp/g2"),
        ("top", "top -bn1 >/dev/null"),
        ("script", "script -qc 'tty' /dev/null | grep -q /dev/pts"),
        ("fswatch", "node -e 'const w = require(\"fs\").watch(\"/tmp\"); w.close()'"),
        ("su", "sudo -n su - user -c true"),
        ("dpkg", "dpkg -l >/dev/null && sudo -n apt-get install -s -qq bash >/dev/null"),
        ("ulimit", "ulimit -n 1024"),
        ("sudo-user", "sudo -n -u user id"),
        ("chown", "touch /tmp/o && sudo -n chown root /tmp/o && sudo -n chmod u+s /tmp/o"),
        ("ping-socket", "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)' 2>/dev/null || sudo -n python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'"),
    ];
    let script: String = checks
        .iter()
        .map(|(name, cmd)| format!("({cmd}) >/tmp/{name}.log 2>&1 && echo {name} >> /tmp/r.ok; "))
        .collect();
    let resp = sbx.run(&format!("{script} echo done > /tmp/r.done"));
    assert_eq!(sbx.read("/tmp/r.done").trim(), "done", "{resp}");
    let ok = sbx.read("/tmp/r.ok");
    let failed: Vec<String> = checks
        .iter()
        .filter(|(name, _)| !ok.lines().any(|l| l == *name))
        .map(|(name, _)| format!("{name}: {}", sbx.read(&format!("/tmp/{name}.log"))))
        .collect();
    assert!(failed.is_empty(), "failed under the filter:\n{}", failed.join("\n"));
}

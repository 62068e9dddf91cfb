//! Sandbox hardening on real sandboxes: what capabilities envd and its
//! processes hold, that the seccomp filter is on and refuses what it must,
//! and that ordinary userland (sudo, python3, node, git...) still works.
//! Needs root, overlayfs, busybox-static and the static envd; the userland
//! checks also need the base template (scripts/setup.sh builds both).
//! Skipped with a notice otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_runtime::{
    linux::{caps::kept_mask, LinuxDriver},
    Driver, SandboxSpec,
};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Duration,
};

fn envd_bin() -> PathBuf {
    std::env::var_os("ARBOR_ENVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/x86_64-unknown-linux-gnu/release/arbor-envd")
    })
}

/// A one-layer root file system: busybox and a passwd with root.
fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    for d in ["bin", "etc", "tmp", "root", "mnt"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "grep", "unshare", "mount", "mknod", "true"] {
        symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\n").unwrap();
    layer
}

/// The base template's layers, top first, if setup.sh built it.
fn base_layers() -> Option<Vec<PathBuf>> {
    let store = Path::new("/var/lib/arbor");
    let json = std::fs::read_to_string(store.join("refs/templates/base.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&json).ok()?;
    let layers: Vec<PathBuf> = doc["layers"]
        .as_array()?
        .iter()
        .rev()
        .map(|l| store.join("layers").join(l.as_str().unwrap_or_default()).join("rootfs"))
        .collect();
    (!layers.is_empty() && layers.iter().all(|l| l.is_dir())).then_some(layers)
}

struct Setup {
    tmp: tempfile::TempDir,
    driver: LinuxDriver,
}

fn setup() -> Option<Setup> {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("root")
    } else if !Path::new("/bin/busybox").exists() {
        Some("/bin/busybox (busybox-static)")
    } else if !envd_bin().exists() {
        Some("the static envd (scripts/setup.sh --no-start)")
    } else {
        None
    };
    if let Some(what) = missing {
        eprintln!("skipping: needs {what}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let driver =
        LinuxDriver::new(&tmp.path().join("data"), envd_bin(), env!("CARGO_BIN_EXE_arbor-launch").into()).unwrap();
    Some(Setup { tmp, driver })
}

fn spec(id: &str, layers: Vec<PathBuf>, user: &str) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers,
        hostname: format!("sbx-{id}"),
        env: BTreeMap::from([("ARBOR_ENVD_DEFAULT_USER".to_string(), user.to_string())]),
        access_token: None,
        vcpus: 1,
        memory_mib: 512,
        pids: 256,
        netns: None,
    }
}

/// Destroys the sandbox even when an assertion fails.
struct Running<'a> {
    driver: &'a LinuxDriver,
    id: String,
    pid: u32,
}

impl<'a> Running<'a> {
    fn start(driver: &'a LinuxDriver, spec: &SandboxSpec) -> Self {
        let sbx = driver.create(spec).unwrap();
        Running { driver, id: sbx.id, pid: sbx.init_pid }
    }

    /// Runs `script` with `sh -c` through envd's Start (HTTP/1.0, so the
    /// response ends when the process does) as envd's default user.
    fn run(&self, script: &str) -> String {
        let msg =
            serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false}).to_string();
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        body.extend_from_slice(msg.as_bytes());
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid)).unwrap();
        // Only loopback exists in the sandbox's network namespace: connect from there.
        let mut s = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpStream::connect("127.0.0.1:49983").unwrap()
        })
        .join()
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /process.Process/Start HTTP/1.0\r\nContent-Type: application/connect+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A file in the sandbox, read from the host.
    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/root{path}", self.pid)).unwrap_or_default()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.driver.destroy(&self.id) {
            eprintln!("destroying {}: {e}", self.id);
        }
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

#[test]
fn envd_and_its_processes_keep_only_the_sandbox_capabilities() {
    let Some(s) = setup() else { return };
    let layer = busybox_layer(s.tmp.path());
    let sbx = Running::start(&s.driver, &spec("caps-1", vec![layer], "root"));

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

#[test]
fn the_filter_refuses_namespaces_mounts_and_device_nodes() {
    let Some(s) = setup() else { return };
    let layer = busybox_layer(s.tmp.path());
    let sbx = Running::start(&s.driver, &spec("seccomp-1", vec![layer], "root"));

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
fn base<'a>(s: &'a Setup, id: &str) -> Option<Running<'a>> {
    let Some(layers) = base_layers() else {
        eprintln!("skipping: needs the base template (scripts/setup.sh builds it under /var/lib/arbor)");
        return None;
    };
    Some(Running::start(&s.driver, &spec(id, layers, "user")))
}

#[test]
fn sudo_works_for_user_and_gets_only_the_kept_set() {
    let Some(s) = setup() else { return };
    let Some(sbx) = base(&s, "sudo-1") else { return };
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
#[test]
fn blocked_calls_fail_with_eperm_and_clone3_with_enosys() {
    let Some(s) = setup() else { return };
    let Some(sbx) = base(&s, "errno-1") else { return };
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

#[test]
fn ordinary_userland_works_under_the_filter() {
    let Some(s) = setup() else { return };
    let Some(sbx) = base(&s, "userland-1") else { return };
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

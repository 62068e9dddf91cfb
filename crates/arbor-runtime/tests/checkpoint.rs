//! Checkpoint and restore of a real sandbox with the CRIU command line: the
//! recipe of docs/checkpoint.md, proven end to end. A busybox sandbox with
//! envd as PID 1 and a counting background loop is dumped (which ends it),
//! then restored into a fresh overlay mount of the same upper dir, in the same
//! cgroup and network namespace; envd must answer again and the loop must go
//! on counting with the same pid.
//!
//! A second test clones a running sandbox from its images into a copy of its
//! upper dir, a new cgroup and a new network namespace.
//!
//! Needs root, overlayfs, busybox-static, the static envd and a CRIU >= 4 that
//! can dump TCP sockets on this kernel (scripts/build-criu.sh), on a kernel
//! that passes `criu check`; skipped with a notice when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{
    linux::{Config, LinuxDriver},
    Driver, SandboxSpec,
};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const ENVD_PORT: u16 = 49983;

/// One checkpoint at a time: CRIU's cgroup helper walks the sandboxes'
/// parent cgroup, and a sibling test's cgroup vanishing under it failed a
/// restore ("cgroupd: recv req error: No such file or directory").
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn criu_bin() -> Option<PathBuf> {
    ["/usr/local/sbin/criu", "/usr/sbin/criu"].iter().map(PathBuf::from).find(|p| p.is_file())
}

fn spec(id: &str, layer: &Path) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers: vec![layer.to_path_buf()],
        hostname: format!("sbx-{id}"),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 256,
        pids: 128,
        disk_mib: None,
        network: None,
    }
}

/// Runs `script` as root through envd's Start in the network namespace
/// `netns` (HTTP/1.0, so the body ends at close); returns the raw response.
fn run(netns: &std::fs::File, script: &str) -> String {
    let msg = serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false}).to_string();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    body.extend_from_slice(msg.as_bytes());
    let ns = netns.try_clone().unwrap();
    let mut s = std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpStream::connect(("127.0.0.1", ENVD_PORT)).unwrap()
    })
    .join()
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /process.Process/Start HTTP/1.0\r\nContent-Type: application/connect+json\r\n\
         Authorization: Basic cm9vdDo=\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the network namespace of `pid` has a TCP socket listening on `port`.
fn listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X} ");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .map(|t| t.lines().skip(1).any(|l| l.contains(&want) && l.split_whitespace().nth(3) == Some("0A")))
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount of `/proc/<pid>/mountinfo`: (mount id, major:minor, root in its
/// file system, mount point).
fn mounts(pid: &str) -> Vec<(String, String, String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), f[2].to_string(), unescape(f[3]), unescape(f[4]))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The sandbox's bind mounts whose source lies outside it (devices, envd,
/// the `/proc` masks): CRIU cannot recreate them from its images, so they are
/// declared external. A mount is internal when its file system is mounted
/// whole (root `/`) somewhere in the sandbox, as the overlay, `/proc` and the
/// tmpfs are. Returns (mount point in the sandbox, key, source on the host).
fn external_mounts(init_pid: u32) -> Vec<(String, String, PathBuf)> {
    let sandbox = mounts(&init_pid.to_string());
    let host = mounts("self");
    let whole: Vec<&String> = sandbox.iter().filter(|m| m.2 == "/").map(|m| &m.1).collect();
    sandbox
        .iter()
        .filter(|m| !whole.contains(&&m.1))
        .map(|(_, dev, root, point)| {
            // The host path of the source: where the host mounts that file
            // system whole, joined with the mount's root.
            let (_, _, _, host_point) =
                host.iter().find(|h| &h.1 == dev && h.2 == "/").unwrap_or_else(|| panic!("no host mount of {dev}"));
            let source = Path::new(host_point).join(root.trim_start_matches('/'));
            let key = format!("ext{}", point.replace('/', "-"));
            (point.clone(), key, source)
        })
        .collect()
}

/// The restore, as the node agent would run it: join the sandbox's cgroup,
/// then in new mount and cgroup namespaces (so the overlay never shows on the
/// host and the restored tree keeps a cgroup namespace rooted at its cgroup)
/// mount a fresh overlay at the sandbox's rootfs, open the network namespace
/// as fd 9 and exec CRIU with the arguments given.
const RESTORE_SH: &str = r#"
set -e
for procs in $CGROUP_PROCS; do echo $$ > "$procs"; done
exec unshare --mount --cgroup --propagation private sh -c '
    mount -t overlay overlay -o "$OVERLAY" "$ROOTFS"
    exec 9<"$NETNS"
    exec "$@"' sh "$@"
"#;

/// Bytes of the images in `dir` (CRIU's log left out).
fn images_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The end of a CRIU log (written at -v4, so that a failure shows what led to it).
fn log_tail(images: &Path, name: &str) -> String {
    let log = std::fs::read_to_string(images.join(name)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
}

/// `criu dump` of the tree under `init_pid` into `images`; returns the
/// externals declared (for the restore) and the time taken.
fn dump(criu: &Path, init_pid: u32, netns: &std::fs::File, images: &Path, leave_running: bool) -> (Externals, u128) {
    std::fs::create_dir(images).unwrap();
    let externals = external_mounts(init_pid);
    let net_inode = std::os::unix::fs::MetadataExt::ino(&netns.metadata().unwrap());
    let mut cmd = Command::new(criu);
    cmd.args(["dump", "--tree", &init_pid.to_string(), "--images-dir"])
        .arg(images)
        .args(["--log-file", "dump.log", "-v4", "--network-lock", "skip", "--manage-cgroups=ignore"])
        .arg(format!("--external=net[{net_inode}]:net"));
    if leave_running {
        cmd.arg("--leave-running");
    }
    for (point, key, _) in &externals {
        cmd.arg(format!("--external=mnt[{point}]:{key}"));
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let ms = started.elapsed().as_millis();
    assert!(
        out.status.success(),
        "criu dump failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(images, "dump.log")
    );
    (externals, ms)
}

type Externals = Vec<(String, String, PathBuf)>;

/// Where a restored sandbox goes: its overlay, cgroup and network namespace.
struct Target<'a> {
    layer: &'a Path,
    dir: &'a Path,
    cgroup: &'a arbor_cgroups::Cgroup,
    netns: &'a std::fs::File,
}

/// `criu restore` of `images` into a fresh overlay mount of `target`'s upper
/// dir; returns the restored PID 1 as the host sees it and the time taken.
fn restore(criu: &Path, images: &Path, externals: &Externals, target: &Target) -> (u32, u128) {
    let (upper, work, rootfs) = (target.dir.join("upper"), target.dir.join("work"), target.dir.join("rootfs"));
    let overlay =
        format!("lowerdir={},upperdir={},workdir={}", target.layer.display(), upper.display(), work.display());
    let procs: Vec<String> = target.cgroup.procs_paths().iter().map(|p| p.display().to_string()).collect();
    let pidfile = images.join("restored.pid");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", RESTORE_SH, "sh"])
        .env("CGROUP_PROCS", procs.join(" "))
        .env("OVERLAY", &overlay)
        .env("ROOTFS", &rootfs)
        .env("NETNS", format!("/proc/{}/fd/{}", std::process::id(), target.netns.as_raw_fd()))
        .arg(criu)
        .args(["restore", "--images-dir"])
        .arg(images)
        .args(["--log-file", "restore.log", "-v4", "--restore-detached", "--manage-cgroups=ignore", "--pidfile"])
        .arg(&pidfile)
        .arg("--root")
        .arg(&rootfs)
        .arg("--inherit-fd=fd[9]:net");
    for (_, key, source) in externals {
        cmd.arg(format!("--external=mnt[{key}]:{}", source.display()));
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let ms = started.elapsed().as_millis();
    assert!(
        out.status.success(),
        "criu restore failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tail(images, "restore.log")
    );
    (std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap(), ms)
}

/// A new network namespace with loopback up, held by the returned file (as
/// the network layer would provide one for a clone).
fn new_netns() -> std::fs::File {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // SAFETY: plain socket and ioctl calls on an ifreq we own; the fd is
        // closed when `sock` drops.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let sock = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            assert!(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) >= 0);
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            assert!(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) >= 0);
        }
        std::fs::File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap()
}

/// What stops a test early: root, busybox, envd or CRIU missing.
fn missing() -> Option<&'static str> {
    if let Some(what) = common::missing() {
        Some(what)
    } else if criu_bin().is_none() {
        Some("criu (scripts/build-criu.sh)")
    } else if !criu_bin().is_some_and(|c| Command::new(c).arg("check").output().is_ok_and(|o| o.status.success())) {
        Some("a kernel that passes `criu check`")
    } else {
        None
    }
}

/// Starts a loop in the sandbox that counts in /tmp/counter (its pid in
/// /tmp/loop.pid) and waits until it has counted a little.
fn start_counter(netns: &std::fs::File, upper: &Path) {
    let resp = run(
        netns,
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done) </dev/null >/dev/null 2>&1 & \
         echo $! > /tmp/loop.pid",
    );
    assert!(resp.contains("exit status"), "{resp}");
    wait_for("the loop to count", Duration::from_secs(5), || counter(upper) >= 3);
}

fn read(upper: &Path, file: &str) -> String {
    std::fs::read_to_string(upper.join(file)).unwrap_or_default().trim().to_string()
}

fn counter(upper: &Path) -> u64 {
    read(upper, "tmp/counter").parse().unwrap_or(0)
}

/// Kills the sandbox's cgroup however the test ends: the restored tree
/// lives in it, so this ends it too (a passing test destroys it properly).
struct Cleanup<'a> {
    id: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(cgroup) = arbor_cgroups::Hierarchy::detect().and_then(|h| h.open("arbor", self.id)) {
            let _ = cgroup.destroy();
        }
    }
}

async fn driver(data: &Path) -> LinuxDriver {
    LinuxDriver::new(Config {
        data_dir: data.to_path_buf(),
        envd: common::envd_bin(),
        launcher: env!("CARGO_BIN_EXE_arbor-launch").into(),
        network: None,
        disk: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn pause_and_resume_into_a_fresh_overlay() {
    if let Some(what) = missing() {
        eprintln!("skipping: needs {what}");
        return;
    }
    let _serial = SERIAL.lock().await;
    let criu = criu_bin().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layer = common::busybox_layer(tmp.path());
    let data = tmp.path().join("data");
    let driver = driver(&data).await;
    let id = "ckpt-1";
    let sbx = driver.create(&spec(id, &layer)).await.unwrap();
    let _cleanup = Cleanup { id };
    let dir = data.join("sandboxes").join(id);
    let upper = dir.join("upper");
    // The network namespace outlives the dump because we hold it, as the
    // network layer will for a paused sandbox.
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", sbx.init_pid)).unwrap();
    start_counter(&netns, &upper);
    let loop_pid = read(&upper, "tmp/loop.pid");
    let cgroup_before = std::fs::read_to_string(format!("/proc/{}/cgroup", sbx.init_pid)).unwrap();

    // Pause: the tree is frozen, written out and killed.
    let images = tmp.path().join("images");
    let (externals, dump_ms) = dump(&criu, sbx.init_pid, &netns, &images, false);
    let image_bytes = images_size(&images);
    wait_for("the dumped envd to end", Duration::from_secs(5), || is_gone(sbx.init_pid));
    let frozen = counter(&upper);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter(&upper), frozen, "the loop still runs after the dump");

    // Resume into a fresh overlay mount of the same upper dir, same cgroup, same network.
    let cgroup = arbor_cgroups::Hierarchy::detect().unwrap().open("arbor", id).unwrap();
    let target = Target { layer: &layer, dir: &dir, cgroup: &cgroup, netns: &netns };
    let (new_pid, restore_ms) = restore(&criu, &images, &externals, &target);
    eprintln!(
        "checkpoint of an idle sandbox: dump {dump_ms} ms, restore {restore_ms} ms, images {} KiB",
        image_bytes / 1024
    );

    // envd answers again, in the same cgroup, and the loop counts on with its pid.
    assert!(listening(new_pid, ENVD_PORT), "restored envd does not listen");
    wait_for("the loop to count on", Duration::from_secs(5), || counter(&upper) > frozen + 2);
    let resp = run(&netns, "cat /proc/$(cat /tmp/loop.pid)/cmdline > /r.loop; cat /proc/1/cmdline > /r.init");
    assert!(resp.contains("exit status"), "{resp}");
    assert_eq!(read(&upper, "tmp/loop.pid"), loop_pid);
    assert!(read(&upper, "r.loop").contains("while true"), "pid {loop_pid} is now {:?}", read(&upper, "r.loop"));
    assert!(read(&upper, "r.init").starts_with("arbor-envd"));
    assert_eq!(std::fs::read_to_string(format!("/proc/{new_pid}/cgroup")).unwrap(), cgroup_before);
    assert_ne!(
        std::fs::read_link(format!("/proc/{new_pid}/ns/cgroup")).unwrap(),
        std::fs::read_link("/proc/self/ns/cgroup").unwrap(),
        "the restored tree lost its cgroup namespace"
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(id), "a restore mount leaked to the host");

    driver.destroy(id).await.unwrap();
    wait_for("the restored tree to end", Duration::from_secs(5), || is_gone(new_pid));
}

/// Removes the clone's cgroup (killing what runs in it) however the test ends.
struct CgroupCleanup(arbor_cgroups::Cgroup);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

#[tokio::test]
async fn clone_a_running_sandbox() {
    if let Some(what) = missing() {
        eprintln!("skipping: needs {what}");
        return;
    }
    let _serial = SERIAL.lock().await;
    let criu = criu_bin().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layer = common::busybox_layer(tmp.path());
    let data = tmp.path().join("data");
    let driver = driver(&data).await;
    let id = "ckpt-src";
    let sbx = driver.create(&spec(id, &layer)).await.unwrap();
    let _cleanup = Cleanup { id };
    let upper = data.join("sandboxes").join(id).join("upper");
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", sbx.init_pid)).unwrap();
    start_counter(&netns, &upper);

    // The clone: its own copy of the upper dir, cgroup and network namespace.
    // The source keeps running (--leave-running); the upper dir is copied
    // right after the dump, so the copy may be a little ahead of the memory.
    let images = tmp.path().join("images");
    let (externals, _) = dump(&criu, sbx.init_pid, &netns, &images, true);
    let clone_dir = tmp.path().join("clone");
    for d in ["work", "rootfs"] {
        std::fs::create_dir_all(clone_dir.join(d)).unwrap();
    }
    let cp = Command::new("cp").arg("-a").arg(&upper).arg(clone_dir.join("upper")).status().unwrap();
    assert!(cp.success());
    let limits = arbor_cgroups::Limits { cpus: Some(1.0), memory_mib: Some(256), pids: Some(128) };
    let cgroup = arbor_cgroups::Hierarchy::detect().unwrap().create("arbor", "ckpt-clone", &limits).unwrap();
    let cgroup = CgroupCleanup(cgroup);
    let clone_netns = new_netns();
    let target = Target { layer: &layer, dir: &clone_dir, cgroup: &cgroup.0, netns: &clone_netns };
    let (clone_pid, restore_ms) = restore(&criu, &images, &externals, &target);
    eprintln!("clone restored in {restore_ms} ms");

    // Both answer, each in its own namespace, and both loops count on, each
    // in its own upper dir, with the same pid inside.
    assert!(listening(sbx.init_pid, ENVD_PORT) && listening(clone_pid, ENVD_PORT));
    let clone_upper = clone_dir.join("upper");
    for dir in [&upper, &clone_upper] {
        let now = counter(dir);
        wait_for("both loops to count on", Duration::from_secs(5), || counter(dir) > now + 2);
    }
    run(&clone_netns, "echo clone > /r.who");
    assert_eq!(read(&clone_upper, "r.who"), "clone");
    assert!(!upper.join("r.who").exists(), "the clone writes into the source's upper dir");
    assert_eq!(read(&clone_upper, "tmp/loop.pid"), read(&upper, "tmp/loop.pid"));
    assert!(std::fs::read_to_string(format!("/proc/{clone_pid}/cgroup")).unwrap().contains("/arbor/ckpt-clone"));

    drop(cgroup);
    wait_for("the clone to end", Duration::from_secs(5), || is_gone(clone_pid));
}

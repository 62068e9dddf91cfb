//! FUSE inside a `base`-template sandbox (docs/fuse.md): Debian's `fuse3`
//! and `bindfs` installed with apt, a bind file system mounted by root and
//! by `user` (through the setuid `fusermount3`), read through, unmounted;
//! every other mount still refused; a pause refused while a FUSE mount
//! exists and taken once it is gone; destroy with a mount in place leaves
//! nothing behind.
//!
//! The packages come from the Debian archive through the host's apt (`apt-get
//! download`), as a layer on top of the template, and the sandbox installs
//! them with `apt-get install`: the sandboxes of the test have no internet.
//! Needs root, the static envd, the base template and CRIU; skipped with a
//! notice when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbor_runtime::{After, Driver, Error, SandboxSpec};
use common::{exec_at, Output};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// bindfs (1.14 in bookworm) is built on libfuse2; fuse3 gives it its `fusermount`.
const PACKAGES: [&str; 4] = ["fuse3", "libfuse3-3", "libfuse2", "bindfs"];

fn spec(id: &str, layers: &[PathBuf]) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        layers: layers.to_vec(),
        hostname: id.into(),
        env: BTreeMap::new(),
        access_token: None,
        vcpus: 1,
        memory_mib: 512,
        pids: 256,
        disk_mib: None,
        network: Some(arbor_net::Policy::default()),
    }
}

fn run(sbx: &arbor_runtime::Sandbox, user: &str, script: &str) -> Output {
    exec_at(SocketAddr::from((sbx.host_addr.unwrap(), 49983)), user, "/bin/bash", script)
}

fn ok(sbx: &arbor_runtime::Sandbox, user: &str, script: &str) -> String {
    let out = run(sbx, user, script);
    assert_eq!(out.code, 0, "{user}: {script}: {out:?}");
    out.stdout
}

/// A layer holding the packages' .deb files in /opt/fuse-debs, fetched by
/// the host's apt.
fn deb_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("debs");
    let debs = layer.join("opt/fuse-debs");
    std::fs::create_dir_all(&debs).unwrap();
    let out = std::process::Command::new("apt-get").arg("download").args(PACKAGES).current_dir(&debs).output().unwrap();
    assert!(out.status.success(), "apt-get download {PACKAGES:?}: {}", String::from_utf8_lossy(&out.stderr));
    layer
}

fn criu_ok() -> bool {
    ["/usr/local/sbin/criu", "/usr/sbin/criu"]
        .iter()
        .any(|c| std::process::Command::new(c).arg("check").output().is_ok_and(|o| o.status.success()))
}

/// Names of this process's threads that serve sandbox `id`'s listener.
fn supervisors(id: &str) -> usize {
    let name = format!("fuse-{id}");
    let name = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn fuse_in_a_sandbox(tmp: PathBuf, debs: PathBuf, base: Vec<PathBuf>) {
    let _parent = common::ParentCleanup(common::test_cgroup_parent(&tmp));
    let driver = common::driver_full(&tmp, true, false).await;
    let mut layers = vec![debs];
    layers.extend(base);
    let first = spec("fuse-1", &layers);
    let sbx = driver.create(&first).await.unwrap();

    ok(&sbx, "root", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /opt/fuse-debs/*.deb");

    // Root mounts; the mount is read through, and carries nosuid,nodev.
    let out = ok(
        &sbx,
        "root",
        "mkdir -p /src /mnt/b && echo through-fuse > /src/f && bindfs /src /mnt/b && cat /mnt/b/f && \
         grep ' /mnt/b ' /proc/self/mountinfo",
    );
    assert!(out.starts_with("through-fuse\n"), "{out}");
    let line = out.lines().nth(1).unwrap();
    assert!(line.contains(" - fuse") && line.contains("nosuid") && line.contains("nodev"), "{line}");

    // A pause (its freeze, then its checkpoint) fails at once with a clear
    // error, and the sandbox runs on.
    match driver.freeze("fuse-1").await {
        Err(Error::FuseMounted(mounts)) => assert_eq!(mounts, vec!["/mnt/b".to_string()]),
        other => panic!("freeze with a FUSE mount: {other:?}"),
    }
    let paused = tokio::time::timeout(Duration::from_secs(20), driver.checkpoint("fuse-1", "p", After::Stop))
        .await
        .expect("a pause with a FUSE mount must not hang");
    match paused {
        Err(Error::FuseMounted(mounts)) => assert_eq!(mounts, vec!["/mnt/b".to_string()]),
        other => panic!("pause with a FUSE mount: {other:?}"),
    }
    assert_eq!(ok(&sbx, "root", "cat /mnt/b/f && fusermount3 -u /mnt/b"), "through-fuse\n");
    assert_eq!(ok(&sbx, "root", "grep -c ' - fuse' /proc/self/mountinfo || true"), "0\n");

    // A user mounts on a directory of its own through the setuid fusermount3.
    let out = ok(
        &sbx,
        "user",
        "mkdir -p ~/src ~/m && echo mine > ~/src/f && bindfs --no-allow-other ~/src ~/m && cat ~/m/f && \
         grep -c 'user_id=1000' /proc/self/mountinfo && fusermount3 -u ~/m",
    );
    assert_eq!(out, "mine\n1\n");
    assert_eq!(ok(&sbx, "root", "grep -c ' - fuse' /proc/self/mountinfo || true"), "0\n");

    // Everything else stays refused.
    for (user, script) in [
        ("root", "mount -t tmpfs none /mnt"),
        ("root", "mount --bind /src /mnt"),
        ("root", "umount /proc/sys"),
        ("root", "umount -l /proc/kcore"),
        ("root", "umount /sys/firmware"),
        ("root", "mount -t fuse.x x /mnt -o fd=0,rootmode=40000,user_id=0,group_id=0"),
        ("root", "exec 3<>/dev/fuse && mount -t fuseblk x /mnt -o fd=3,rootmode=40000,user_id=0,group_id=0"),
        ("root", "exec 3<>/dev/fuse && mount -t fuse x /proc -o fd=3,rootmode=40000,user_id=0,group_id=0"),
        ("root", "exec 3<>/dev/fuse && mount -t fuse x /proc/sys/kernel -o fd=3,rootmode=40000,user_id=0,group_id=0"),
        // Never over another mount: a mask, a device, /dev/shm.
        ("root", "exec 3<>/dev/fuse && mount -t fuse x /proc/kcore -o fd=3,rootmode=100000,user_id=0,group_id=0"),
        ("root", "exec 3<>/dev/fuse && mount -t fuse x /dev/shm -o fd=3,rootmode=40000,user_id=0,group_id=0"),
        ("user", "bindfs /src /mnt/b"),
        ("user", "exec 3<>/dev/fuse && python3 -c \"import ctypes,sys; sys.exit(ctypes.CDLL(None).mount(b'x', b'/tmp', b'fuse', 0, b'fd=3,rootmode=40000,user_id=1000,group_id=1000'))\""),
    ] {
        let out = run(&sbx, user, script);
        assert_ne!(out.code, 0, "{user}: {script} succeeded: {out:?}");
    }
    assert_eq!(ok(&sbx, "root", "grep -c ' - fuse' /proc/self/mountinfo || true"), "0\n");

    // With no FUSE mount left, the pause goes through.
    driver.checkpoint("fuse-1", "p", After::Stop).await.unwrap();
    let sbx = driver.restore(&first, "p").await.unwrap();
    driver.remove_checkpoint("p").await.unwrap();
    // A restored sandbox has no supervisor (docs/fuse.md, Limits).
    let out = run(&sbx, "root", "bindfs /src /mnt/b");
    assert!(out.code != 0 && out.stderr.contains("Function not implemented"), "{out:?}");
    driver.destroy("fuse-1").await.unwrap();

    // Destroyed with a mount in place: nothing is left on the host.
    let sbx = driver.create(&spec("fuse-2", &layers)).await.unwrap();
    ok(&sbx, "root", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /opt/fuse-debs/*.deb >/dev/null");
    ok(&sbx, "root", "mkdir -p /src /mnt/b && echo x > /src/f && bindfs /src /mnt/b && cat /mnt/b/f");
    assert_eq!(supervisors("fuse-2"), 1);
    driver.destroy("fuse-2").await.unwrap();
    wait_for("the supervisor to end", || supervisors("fuse-2") == 0);
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains(" - fuse"), "{host}");
    assert!(!Path::new(&format!("/proc/{}", sbx.init_pid)).exists());
    driver.decommission().await.unwrap();
}

#[test]
fn fuse_mounts_inside_a_sandbox() {
    if let Some(what) = common::missing() {
        eprintln!("skipping: needs {what}");
        return;
    }
    let Some(base) = common::base_layers() else {
        eprintln!("skipping: needs the base template (scripts/setup.sh builds it under /var/lib/arbor)");
        return;
    };
    if !criu_ok() {
        eprintln!("skipping: needs CRIU >= 4 (scripts/build-criu.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Fetched from the host's network, before the test host (with no way
    // out) is entered.
    let debs = deb_layer(tmp.path());
    let dir = tmp.path().to_path_buf();
    common::on_test_host(move || fuse_in_a_sandbox(dir, debs, base));
}

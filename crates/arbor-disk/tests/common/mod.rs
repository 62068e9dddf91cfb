//! Shared helpers: a fixture owning a temporary image and mount point that it always removes,
//! even when the test fails, and a writer that reports where it was stopped.

#![allow(dead_code, clippy::expect_used)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use arbor_disk::{Config, Quotas};

/// A temporary base directory holding `sandboxes/` (the mount point) and `sandboxes.img`.
pub struct Fixture {
    pub base: PathBuf,
}

const PREFIX: &str = "arbor-disk-test-";

impl Fixture {
    /// A fresh fixture, or None (with a notice) when the test cannot run here.
    pub fn new(test: &str) -> Option<Fixture> {
        if unsafe_geteuid() != 0 {
            eprintln!("skipping {test}: needs root for loop devices and mounts");
            return None;
        }
        let btrfs = fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\tbtrfs\n"));
        if !btrfs && !Path::new("/sys/module/btrfs").exists() {
            eprintln!("skipping {test}: the kernel has no btrfs");
            return None;
        }
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("skipping {test}: no loop device support (/dev/loop-control)");
            return None;
        }
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_dead_runs);
        static N: AtomicU32 = AtomicU32::new(0);
        let base =
            std::env::temp_dir().join(format!("{PREFIX}{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&base).expect("create the fixture dir");
        Some(Fixture { base })
    }

    pub fn sandboxes(&self) -> PathBuf {
        self.base.join("sandboxes")
    }

    pub fn image(&self) -> PathBuf {
        self.base.join("sandboxes.img")
    }

    pub fn config(&self) -> Config {
        Config { image: Some(self.image()), image_size: 512 << 20 }
    }

    pub fn open(&self) -> Quotas {
        Quotas::open(&self.sandboxes(), &self.config()).expect("open the quotas")
    }

    /// Tears `quotas` down and checks that no mount or loop device of this fixture is left.
    pub fn finish(self, quotas: Quotas) {
        quotas.teardown().expect("teardown");
        assert_eq!(mounts_under(&self.base), Vec::<String>::new(), "mounts left");
        assert_eq!(loops_under(&self.base), Vec::<String>::new(), "loop devices left");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        cleanup(&self.base);
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Mount points at or below `base`, deepest last.
pub fn mounts_under(base: &Path) -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let base = base.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|t| t == &base || t.starts_with(&format!("{base}/")))
        .collect()
}

/// Loop devices whose backing file is below `base`.
pub fn loops_under(base: &Path) -> Vec<String> {
    let base = base.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        if let Ok(file) = fs::read_to_string(entry.path().join("loop/backing_file")) {
            if file.trim_end().starts_with(&base) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// Unmounts everything below `base` (deepest first), then removes it.
fn cleanup(base: &Path) {
    for _ in 0..3 {
        let mut mounts = mounts_under(base);
        if mounts.is_empty() {
            break;
        }
        mounts.reverse();
        for m in mounts {
            let c = std::ffi::CString::new(m).expect("no NUL");
            // SAFETY: `c` is a NUL-terminated path. A lazy detach never fails on a busy mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    // Devices attached without auto-clear (by a test simulating a crash) are detached here.
    for dev in loops_under(base) {
        let _ = std::process::Command::new("losetup").arg("-d").arg(format!("/dev/{dev}")).status();
    }
    let _ = fs::remove_dir_all(base);
}

/// Removes fixtures of earlier runs that were killed before their guards ran.
fn sweep_dead_runs() {
    for entry in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            eprintln!("removing {name}, left by a killed test run");
            cleanup(&entry.path());
        }
    }
}

/// Writes up to `bytes` of data to `path` in 1 MiB chunks, syncing at the end; returns how many
/// bytes went in and the error that stopped it, if any.
pub fn fill(path: &Path, bytes: u64) -> (u64, Option<io::Error>) {
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut file = match fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return (0, Some(e)),
    };
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min((bytes - written) as usize);
        match file.write(&chunk[..n]) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, Some(e)),
        }
    }
    match file.sync_all() {
        Ok(()) => (written, None),
        Err(e) => (written, Some(e)),
    }
}

/// Whether `e` is the quota (or space) refusal.
pub fn is_quota_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EDQUOT | libc::ENOSPC))
}

/// Forces a transaction commit, so quota group numbers are current.
pub fn sync(path: &Path) {
    let dir = fs::File::open(path).expect("open for syncfs");
    // SAFETY: `dir` is an open descriptor.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    assert_eq!(rc, 0, "syncfs: {}", io::Error::last_os_error());
}

//! The sandbox's mount table, built inside its own mount namespace: nothing
//! here is visible on the host, and it all goes away with the sandbox's last
//! process.

use crate::error::{Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

const NONE: Option<&str> = None;

fn mount_at(
    what: &'static str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).map_err(|source| Error::Sys { what, source })
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io("creating", path))
}

/// Stops mounts from propagating back to the host.
pub fn make_private() -> Result<()> {
    mount_at("making / private", None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
}

/// Mounts the layers with the sandbox's upper dir at `rootfs`, `nodev`:
/// a device node in a layer (an OCI image may carry any) opens nothing.
///
/// The mount options are what the sandbox reads in its
/// `/proc/self/mountinfo`, so they name no host path: the layers and the
/// sandbox's directory are bound into a small staging tmpfs at `rootfs`
/// under short names (`0`, `1`, ..., `s`), and the overlay is mounted over
/// it with options relative to it (`lowerdir=0:1,upperdir=s/upper,...`).
/// The staging tmpfs stays under the overlay and leaves with the host's
/// root at the pivot; the overlay holds its layers by itself.
pub fn overlay(layers: &[PathBuf], upper: &Path, work: &Path, rootfs: &Path) -> Result<()> {
    let (Some(dir), Some(upper_name), Some(work_name)) = (upper.parent(), upper.file_name(), work.file_name()) else {
        return Err(Error::InvalidSpec(format!("upper dir {} has no parent", upper.display())));
    };
    if work.parent() != Some(dir) {
        return Err(Error::InvalidSpec("the upper and work dirs must be in one directory".into()));
    }
    let private = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_at("staging the overlay", None, rootfs, Some("tmpfs"), private, Some("mode=700,size=64k"))?;
    let mut lower = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let name = i.to_string();
        bind(layer, &rootfs.join(&name))?;
        lower.push(name);
    }
    bind(dir, &rootfs.join("s"))?;
    let back = std::env::current_dir().map_err(Error::io("reading", "the working directory"))?;
    std::env::set_current_dir(rootfs).map_err(Error::io("entering", rootfs))?;
    let data = format!(
        "lowerdir={},upperdir=s/{},workdir=s/{}",
        lower.join(":"),
        upper_name.to_string_lossy(),
        work_name.to_string_lossy()
    );
    let mounted =
        mount_at("mounting the overlay root", None, Path::new("."), Some("overlay"), MsFlags::MS_NODEV, Some(&data));
    std::env::set_current_dir(&back).map_err(Error::io("entering", &back))?;
    mounted
}

/// Bind-mounts the directory `src` at `target`, made for it.
fn bind(src: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir(target).map_err(Error::io("creating", target))?;
    mount(Some(src), target, NONE, MsFlags::MS_BIND, NONE)
        .map_err(|e| Error::io("binding for the overlay", src)(e.into()))
}

/// `/proc` (this PID namespace's), a read-only `/sys`, and `/dev` as tmpfs.
pub fn kernel_filesystems(rootfs: &Path) -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = rootfs.join("proc");
    mkdir(&proc)?;
    mount_at("mounting /proc", None, &proc, Some("proc"), nosuid, NONE)?;
    let sys = rootfs.join("sys");
    mkdir(&sys)?;
    mount_at("mounting /sys", None, &sys, Some("sysfs"), nosuid | MsFlags::MS_RDONLY, NONE)?;
    let dev = rootfs.join("dev");
    mkdir(&dev)?;
    mount_at(
        "mounting /dev",
        None,
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
}

/// Bind-mounts the host's envd read-only at [`crate::spec::ENVD_PATH`].
pub fn bind_envd(envd: &Path, rootfs: &Path) -> Result<()> {
    let target = rootfs.join(crate::spec::ENVD_PATH.trim_start_matches('/'));
    if let Some(dir) = target.parent() {
        mkdir(dir)?;
    }
    std::fs::write(&target, b"").map_err(Error::io("creating the envd mount point", &target))?;
    mount_at("binding envd", Some(envd), &target, None, MsFlags::MS_BIND, NONE)?;
    mount_at(
        "making envd read-only",
        None,
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        NONE,
    )
}

/// Makes `rootfs` the root and detaches the old one.
pub fn pivot_into(rootfs: &Path) -> Result<()> {
    std::env::set_current_dir(rootfs).map_err(Error::io("entering", rootfs))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // it leaves only the sandbox's tree, without a put_old directory.
    nix::unistd::pivot_root(".", ".").map_err(Error::sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys("detaching the host root"))?;
    std::env::set_current_dir("/").map_err(Error::io("entering", "/"))
}

/// Hides kernel interfaces a sandbox has no business with, as container
/// runtimes do: some files read as empty, some trees are read-only.
pub fn mask_proc() -> Result<()> {
    for file in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"] {
        if Path::new(file).exists() {
            mount_at("masking /proc", Some(Path::new("/dev/null")), Path::new(file), None, MsFlags::MS_BIND, NONE)?;
        }
    }
    for dir in ["/proc/acpi", "/proc/scsi", "/sys/firmware"] {
        if Path::new(dir).is_dir() {
            mount_at("masking", None, Path::new(dir), Some("tmpfs"), MsFlags::MS_RDONLY, NONE)?;
        }
    }
    for tree in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"] {
        let path = Path::new(tree);
        if path.exists() {
            mount_at("binding", Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)?;
            mount_at(
                "making read-only",
                None,
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                NONE,
            )?;
        }
    }
    Ok(())
}

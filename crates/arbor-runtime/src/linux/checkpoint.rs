//! Checkpoints of Linux sandboxes on disk, and taking them.
//!
//! A checkpoint has two parts. Its file system, `<data>/sandboxes/.ckpt-<name>`,
//! is a copy of the sandbox's directory (upper and work dir; on a node with
//! disk limits a btrfs snapshot of its subvolume, so O(1) and sharing every
//! block). Its memory, `<data>/checkpoints/<name>`, holds CRIU's images in
//! `images/` and `checkpoint.json`, written last: a checkpoint without it
//! never completed and is swept away. The images stay off the sandboxes'
//! file system (a loop-mounted btrfs image by default), where writing them
//! took 2.5 times as long.
//!
//! The file system copy and the memory dump are taken in one freeze of the
//! sandbox's cgroup, so the files are never ahead of (or behind) the memory.

use super::{criu, LinuxDriver};
use crate::{
    checkpoint::{After, Checkpoint},
    driver::Sandbox,
    error::{Error, Result},
    spec::SandboxSpec,
};
use arbor_disk::Quotas;
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

const PREFIX: &str = ".ckpt-";
pub(super) const META: &str = "checkpoint.json";
pub(super) const IMAGES: &str = "images";
/// What a sandbox was made of, kept in its directory for its checkpoints.
pub(super) const SANDBOX_META: &str = "sandbox.json";

/// The part of a sandbox's spec its checkpoints need.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SandboxMeta {
    pub layers: Vec<PathBuf>,
    pub hostname: String,
    pub envd: PathBuf,
}

impl SandboxMeta {
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(SANDBOX_META), self)
    }

    fn read(dir: &Path) -> Result<Self> {
        read_json(&dir.join(SANDBOX_META))
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Checkpoint(e.to_string()))?;
    // Written aside and renamed: the file is whole or absent.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming", &tmp))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Copies the directory `src` (a sandbox's or a checkpoint's) to `dst`,
/// leaving out the entries named in `skip`, limited to `limit` bytes where
/// the node limits disks.
pub(super) fn copy_dir(
    quotas: Option<&Quotas>,
    src: &Path,
    dst: &Path,
    limit: Option<u64>,
    skip: &[&str],
) -> Result<()> {
    if let Some(quotas) = quotas {
        match quotas.snapshot(src, dst, limit) {
            Err(arbor_disk::Error::NotLimited(_)) => {}
            // O(1) whatever it holds; what is skipped goes afterwards (it
            // shares its blocks, so that is a few unlinks).
            Ok(_) => return remove_entries(dst, skip),
            Err(e) => return Err(e.into()),
        }
    }
    // A plain directory: a copy that shares data blocks where the file
    // system can (reflinks), file by file, of only what is wanted.
    std::fs::create_dir(dst).map_err(Error::io("creating", dst))?;
    let entries: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(Error::io("listing", src))?
        .flatten()
        .filter(|e| !skip.iter().any(|s| e.file_name() == *s))
        .map(|e| e.path())
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let out = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .args(&entries)
        .arg(dst)
        .output()
        .map_err(Error::io("running cp for", dst))?;
    if !out.status.success() {
        let _ = super::remove_dir(quotas, dst);
        return Err(Error::Checkpoint(format!("copying {}: {}", src.display(), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

/// Removes the entries `names` of `dir` (files or trees) where present.
fn remove_entries(dir: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        removed.map_err(Error::io("removing", &path))?;
    }
    Ok(())
}

impl LinuxDriver {
    /// Where checkpoint `name`'s memory images and metadata live.
    pub(super) fn checkpoint_dir(&self, name: &str) -> PathBuf {
        self.checkpoints.join(name)
    }

    /// Where checkpoint `name`'s copy of the sandbox's directory lives.
    pub(super) fn checkpoint_fs(&self, name: &str) -> PathBuf {
        self.sandboxes.join(format!("{PREFIX}{name}"))
    }

    /// The complete checkpoint `name`.
    pub(super) fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        let dir = self.checkpoint_dir(name);
        if !super::valid_id(name) || !dir.join(META).is_file() {
            return Err(Error::NotFound(format!("checkpoint {name}")));
        }
        read_json(&dir.join(META))
    }

    /// Names of the checkpoints on disk; `complete` false lists the ones
    /// that never completed instead (either part without the metadata).
    pub(super) fn checkpoint_names(&self, complete: bool) -> Result<Vec<String>> {
        let names_in = |dir: &Path, prefix: &str| -> Result<Vec<String>> {
            Ok(std::fs::read_dir(dir)
                .map_err(Error::io("listing", dir))?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(prefix)).map(str::to_string))
                .filter(|n| super::valid_id(n))
                .collect())
        };
        let mut names = names_in(&self.checkpoints, "")?;
        if !complete {
            names.extend(names_in(&self.sandboxes, PREFIX)?);
        }
        names.retain(|n| self.checkpoint_dir(n).join(META).is_file() == complete);
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes both parts of checkpoint `name`, whatever exists of them.
    fn remove_parts(quotas: Option<&Quotas>, fs: &Path, mem: &Path) -> Result<()> {
        let fs_removed = super::remove_dir(quotas, fs);
        let mem_removed = match std::fs::remove_dir_all(mem) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", mem)(e)),
            _ => Ok(()),
        };
        fs_removed.and(mem_removed)
    }

    /// Takes checkpoint `name` of sandbox `id` (see [`crate::Driver::checkpoint`]).
    pub(super) async fn take_checkpoint(&self, id: &str, name: &str, after: After) -> Result<Checkpoint> {
        let criu = self.criu.clone().ok_or(Error::NoCriu)?;
        if !super::valid_id(name) {
            return Err(Error::InvalidSpec(format!("checkpoint name '{name}' must be 1-64 of [a-z0-9-]")));
        }
        let dir = self.dir(id);
        let init_pid = match self.init_pid(id) {
            Some(pid) if super::valid_id(id) && super::reap::alive(pid) => pid,
            _ => return Err(Error::NotFound(id.to_string())),
        };
        let (ckpt, fs) = (self.checkpoint_dir(name), self.checkpoint_fs(name));
        if ckpt.exists() || fs.exists() {
            return Err(Error::AlreadyExists(format!("checkpoint {name}")));
        }
        let meta = SandboxMeta::read(&dir)?;
        let cgroup = self.cgroups.open(&self.cgroup_parent, id)?;
        let freezer = cgroup.freezer_dir()?.to_path_buf();
        // Refused before the freeze (a task waiting on a FUSE daemon may
        // keep the freezer from finishing), and again once frozen, when no
        // new mount can appear.
        super::mountinfo::refuse_fuse(init_pid)?;
        let externals = criu::external_mounts(init_pid)?;
        let (name_owned, ckpt_owned) = (name.to_string(), ckpt.clone());
        let quotas = self.quotas.clone();
        let taken = tokio::task::spawn_blocking(move || -> Result<Checkpoint> {
            let started = Instant::now();
            let was_frozen = cgroup.is_frozen()?;
            cgroup.freeze()?;
            let dumped = (|| {
                super::mountinfo::refuse_fuse(init_pid)?;
                copy_dir(quotas.as_deref(), &dir, &fs, None, &[])?;
                let images = ckpt_owned.join(IMAGES);
                std::fs::create_dir_all(&images).map_err(Error::io("creating", &images))?;
                let args = criu::dump_args(init_pid, &images, &freezer, &externals, after != After::Stop)?;
                let out = Command::new(&criu).args(args).output().map_err(Error::io("running", &criu))?;
                if !out.status.success() {
                    let log = criu::log_tail(&images.join("dump.log"));
                    return Err(Error::Checkpoint(format!("criu dump {}: {log}", out.status)));
                }
                Ok(criu::images_size(&images))
            })();
            // CRIU leaves the freezer as it found it. A failed checkpoint
            // leaves the sandbox as it was.
            let thaw = match after {
                After::Continue => dumped.is_ok() || !was_frozen,
                After::Frozen | After::Stop => dumped.is_err() && !was_frozen,
            };
            let thawed = if thaw { cgroup.thaw() } else { Ok(()) };
            let stopped_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let image_bytes = match dumped.and_then(|b| thawed.map(|()| b).map_err(Into::into)) {
                Ok(b) => b,
                Err(e) => {
                    let _ = Self::remove_parts(quotas.as_deref(), &fs, &ckpt_owned);
                    return Err(e);
                }
            };
            let checkpoint = Checkpoint {
                name: name_owned,
                layers: meta.layers,
                hostname: meta.hostname,
                envd: meta.envd,
                externals: externals.into_iter().map(|e| e.mount).collect(),
                image_bytes,
                created_ms: now_ms(),
                stopped_ms,
            };
            if let Err(e) = write_json(&ckpt_owned.join(META), &checkpoint) {
                let _ = Self::remove_parts(quotas.as_deref(), &fs, &ckpt_owned);
                return Err(e);
            }
            Ok(checkpoint)
        })
        .await
        .map_err(|e| Error::Task("checkpointing", e.to_string()))??;
        if after == After::Stop {
            self.remove(id).await?;
        }
        Ok(taken)
    }

    /// Copies checkpoint `from` to a new checkpoint `to` (O(1) where the node
    /// limits disks): a clone of a paused sandbox keeps its own.
    pub(super) async fn copy_checkpoint_impl(&self, from: &str, to: &str) -> Result<Checkpoint> {
        let mut checkpoint = self.load_checkpoint(from)?;
        if !super::valid_id(to) {
            return Err(Error::InvalidSpec(format!("checkpoint name '{to}' must be 1-64 of [a-z0-9-]")));
        }
        let (src, dst) = (self.checkpoint_dir(from), self.checkpoint_dir(to));
        let (src_fs, dst_fs) = (self.checkpoint_fs(from), self.checkpoint_fs(to));
        if dst.exists() || dst_fs.exists() {
            return Err(Error::AlreadyExists(format!("checkpoint {to}")));
        }
        checkpoint.name = to.to_string();
        let quotas = self.quotas.clone();
        tokio::task::spawn_blocking(move || {
            let copied = (|| {
                copy_dir(quotas.as_deref(), &src_fs, &dst_fs, None, &[])?;
                // Images never change once written: hard links share them.
                std::fs::create_dir_all(&dst).map_err(Error::io("creating", &dst))?;
                let out = Command::new("cp")
                    .arg("-al")
                    .arg(src.join(IMAGES))
                    .arg(&dst)
                    .output()
                    .map_err(Error::io("running cp for", &dst))?;
                if !out.status.success() {
                    return Err(Error::Checkpoint(format!("linking images: {}", String::from_utf8_lossy(&out.stderr))));
                }
                write_json(&dst.join(META), &checkpoint)
            })();
            if copied.is_err() {
                let _ = Self::remove_parts(quotas.as_deref(), &dst_fs, &dst);
            }
            copied.map(|()| checkpoint)
        })
        .await
        .map_err(|e| Error::Task("copying a checkpoint", e.to_string()))?
    }

    /// Deletes checkpoint `name`, complete or not.
    pub(super) async fn remove_checkpoint_impl(&self, name: &str) -> Result<()> {
        let (mem, fs) = (self.checkpoint_dir(name), self.checkpoint_fs(name));
        if !super::valid_id(name) || !(mem.exists() || fs.exists()) {
            return Err(Error::NotFound(format!("checkpoint {name}")));
        }
        let quotas = self.quotas.clone();
        tokio::task::spawn_blocking(move || Self::remove_parts(quotas.as_deref(), &fs, &mem))
            .await
            .map_err(|e| Error::Task("removing a checkpoint", e.to_string()))?
    }

    /// Restores sandbox `spec.id` from checkpoint `name` (see [`crate::Driver::restore`]).
    pub(super) async fn restore_sandbox(&self, spec: &SandboxSpec, name: &str) -> Result<Sandbox> {
        let checkpoint = self.load_checkpoint(name)?;
        if spec.layers != checkpoint.layers {
            return Err(Error::InvalidSpec(format!("checkpoint {name} needs the layers it was taken on")));
        }
        let dir = self.dir(&spec.id);
        if dir.exists() {
            return Err(Error::AlreadyExists(spec.id.clone()));
        }
        let limit = match (&self.quotas, spec.disk_mib) {
            (Some(_), mib) => Some(mib.map_or(u64::MAX, |m| m.saturating_mul(1 << 20))),
            (None, Some(_)) => return Err(Error::InvalidSpec("this node has no disk limits".into())),
            (None, None) => None,
        };
        let (src, dst, quotas) = (self.checkpoint_fs(name), dir.clone(), self.quotas.clone());
        let copied = tokio::task::spawn_blocking(move || -> Result<()> {
            // The copy is the sandbox's file system; the images stay with the
            // checkpoint, and CRIU writes the new init's pid.
            copy_dir(quotas.as_deref(), &src, &dst, limit, &[super::INIT_PID])
        })
        .await
        .map_err(|e| Error::Task("copying a checkpoint", e.to_string()))?;
        if let Err(e) = copied {
            let _ = super::remove_dir(self.quotas.as_deref(), &dir);
            return Err(e);
        }
        self.boot(spec, &dir, super::Boot::Restore(&checkpoint)).await
    }
}

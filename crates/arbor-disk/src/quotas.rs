//! [`Quotas`]: the sandboxes file system and the limited directory of each sandbox.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{btrfs, loopdev, mount};

/// How the sandboxes directory gets its file system.
#[derive(Debug, Clone)]
pub struct Config {
    /// The image file to create and loop-mount when the sandboxes directory is not on a btrfs
    /// with quotas; `None` means `<sandboxes_dir>.img` (e.g. `/var/lib/arbor/sandboxes.img`).
    pub image: Option<PathBuf>,
    /// Apparent size of a new image in bytes. It is sparse: it takes host space only as used, and
    /// space freed inside goes back to the host.
    pub image_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { image: None, image_size: 64 << 30 }
    }
}

/// Where the quota file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// The sandboxes directory is on a host btrfs that has quotas enabled.
    Native,
    /// A btrfs image loop-mounted over the sandboxes directory.
    Image {
        /// The image file.
        image: PathBuf,
        /// The loop device it is attached to.
        device: PathBuf,
    },
}

/// The quota group of a limited directory: the id of the btrfs subvolume it is (level-0
/// qgroup `0/<id>`). The file system allocates these and never reuses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaId(pub u64);

/// What a limited directory uses, as of the file system's last transaction commit (btrfs
/// commits at least every 30 s; `syncfs` forces one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of data and metadata it references.
    pub bytes: u64,
    /// Its limit in bytes, `None` when unlimited.
    pub limit_bytes: Option<u64>,
}

/// Limited sandbox directories under one directory (one instance per node; share it).
#[derive(Debug)]
pub struct Quotas {
    root: PathBuf,
    /// The sandboxes directory, open: subvolume and quota ioctls go through it.
    root_fd: File,
    backing: Backing,
    /// `/sys/fs/btrfs/<fsid>/qgroups`, where usage is read.
    qgroups: PathBuf,
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

impl Quotas {
    /// Makes sure `sandboxes_dir` is on a btrfs with quotas and opens it.
    ///
    /// A host btrfs that already has quotas enabled is used as it is. Otherwise the image of
    /// `cfg` is loop-mounted over `sandboxes_dir` (which must then be empty), after creating it
    /// if needed; an image already mounted there (a restart) or attached to a loop device (a
    /// crash before the mount) is reused. The mount is node infrastructure: it stays until
    /// [`Quotas::teardown`]. On an image, quota groups left by deleted sandboxes are removed.
    pub fn open(sandboxes_dir: &Path, cfg: &Config) -> Result<Quotas> {
        if cfg.image_size < 256 << 20 {
            let reason = format!("{} bytes, below 256 MiB", cfg.image_size);
            return Err(Error::Invalid { what: "image size", reason });
        }
        fs::create_dir_all(sandboxes_dir).map_err(Error::io("create", sandboxes_dir))?;
        let root = fs::canonicalize(sandboxes_dir).map_err(Error::io("resolve", sandboxes_dir))?;
        let image = cfg.image.clone().unwrap_or_else(|| {
            let mut name = root.as_os_str().to_owned();
            name.push(".img");
            PathBuf::from(name)
        });
        let mounted = mount::mount_at(&root)?;
        let ours = match &mounted {
            Some(m) if image.exists() => {
                loopdev::find(&image)?.map(|(dev, _)| dev).filter(|dev| Path::new(&m.source) == dev)
            }
            _ => None,
        };
        let backing = match ours {
            Some(device) => Backing::Image { image, device },
            None => {
                let fd = open_dir(&root).map_err(Error::io("open", &root))?;
                if btrfs::is_btrfs(&fd).map_err(Error::io("statfs", &root))? && quota_enabled(&fd, &root)? {
                    Backing::Native
                } else if let Some(m) = mounted {
                    let reason = format!("a {} file system from {} is mounted there", m.fstype, m.source);
                    return Err(Error::Unsupported { path: root, reason });
                } else {
                    drop(fd);
                    let device = mount_image(&root, &image, cfg)?;
                    Backing::Image { image, device }
                }
            }
        };
        let root_fd = open_dir(&root).map_err(Error::io("open", &root))?;
        if matches!(backing, Backing::Image { .. }) && !quota_enabled(&root_fd, &root)? {
            btrfs::enable_quota(&root_fd).map_err(Error::io("enable quotas on", &root))?;
        }
        let fsid = btrfs::fsid(&root_fd).map_err(Error::io("identify the file system of", &root))?;
        let qgroups = Path::new("/sys/fs/btrfs").join(fsid).join("qgroups");
        let quotas = Quotas { root, root_fd, backing, qgroups };
        if matches!(quotas.backing, Backing::Image { .. }) {
            quotas.remove_stale_qgroups()?;
        }
        Ok(quotas)
    }

    /// The sandboxes directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the quota file system comes from.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Makes `dir`, an entry of the sandboxes directory, a directory whose content (data and
    /// metadata) may not exceed `bytes`: writes past it fail with `EDQUOT`. It creates `dir` (a
    /// btrfs subvolume) when missing; on a directory it limited before it changes the limit (a
    /// resize). A plain directory already there is refused ([`Error::NotLimited`]).
    pub fn limit(&self, dir: &Path, bytes: u64) -> Result<QuotaId> {
        if bytes == 0 {
            return Err(Error::Invalid { what: "disk limit", reason: "0 bytes".into() });
        }
        let name = self.entry_name(dir)?;
        let created = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                btrfs::create_subvolume(&self.root_fd, name).map_err(Error::io("create the subvolume", dir))?;
                true
            }
            Err(e) => return Err(Error::io("stat", dir)(e)),
            Ok(meta) if is_subvolume(&meta) => false,
            Ok(_) => return Err(Error::NotLimited(dir.to_path_buf())),
        };
        let id = open_dir(dir).and_then(|fd| btrfs::subvolume_id(&fd)).map_err(Error::io("look up the subvolume", dir));
        let result = id.and_then(|id| {
            btrfs::set_limit(&self.root_fd, id, Some(bytes)).map_err(Error::io("set the quota of", dir))?;
            Ok(QuotaId(id))
        });
        if result.is_err() && created {
            // Leave nothing half made; the error that matters is the first one.
            let _ = btrfs::destroy_subvolume(&self.root_fd, name);
        }
        result
    }

    /// Makes `dst`, a new entry of the sandboxes directory, a copy of the limited directory `src`
    /// in O(1): a btrfs snapshot, sharing every block until either side changes. With `bytes`
    /// the copy is limited as [`Quotas::limit`] does; without, it is unlimited (a checkpoint).
    pub fn snapshot(&self, src: &Path, dst: &Path, bytes: Option<u64>) -> Result<QuotaId> {
        let name = self.entry_name(dst)?;
        let meta = fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
        if !is_subvolume(&meta) {
            return Err(Error::NotLimited(src.to_path_buf()));
        }
        let source = open_dir(src).map_err(Error::io("open", src))?;
        btrfs::snapshot_subvolume(&source, &self.root_fd, name).map_err(Error::io("snapshot into", dst))?;
        let id = open_dir(dst).and_then(|fd| btrfs::subvolume_id(&fd)).map_err(Error::io("look up the subvolume", dst));
        let result = id.and_then(|id| {
            btrfs::set_limit(&self.root_fd, id, bytes).map_err(Error::io("set the quota of", dst))?;
            Ok(QuotaId(id))
        });
        if result.is_err() {
            let _ = btrfs::destroy_subvolume(&self.root_fd, name);
        }
        result
    }

    /// What the limited directory `dir` uses, and its limit.
    pub fn usage(&self, dir: &Path) -> Result<Usage> {
        let meta = fs::symlink_metadata(dir).map_err(Error::io("stat", dir))?;
        if !is_subvolume(&meta) {
            return Err(Error::NotLimited(dir.to_path_buf()));
        }
        let id =
            open_dir(dir).and_then(|fd| btrfs::subvolume_id(&fd)).map_err(Error::io("look up the subvolume", dir))?;
        self.quota_usage(QuotaId(id))
    }

    /// What quota group `id` uses, and its limit.
    pub fn quota_usage(&self, id: QuotaId) -> Result<Usage> {
        let dir = self.qgroups.join(format!("0_{}", id.0));
        let read = |file: &str| -> Result<u64> {
            let path = dir.join(file);
            let text = fs::read_to_string(&path).map_err(Error::io("read", &path))?;
            text.trim().parse().map_err(|_| Error::Io {
                op: "parse",
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {text:?}")),
            })
        };
        let limit = read("max_referenced")?;
        Ok(Usage { bytes: read("referenced")?, limit_bytes: (limit != 0 && limit != u64::MAX).then_some(limit) })
    }

    /// Deletes the limited directory `dir` with everything in it, at once (the kernel frees the
    /// blocks in the background), and its quota group when already empty. A missing `dir` is
    /// fine, so it can be repeated after a crash.
    pub fn release(&self, dir: &Path) -> Result<()> {
        let name = self.entry_name(dir)?;
        let meta = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", dir)(e)),
            Ok(meta) => meta,
        };
        if !is_subvolume(&meta) {
            return Err(Error::NotLimited(dir.to_path_buf()));
        }
        let id =
            open_dir(dir).and_then(|fd| btrfs::subvolume_id(&fd)).map_err(Error::io("look up the subvolume", dir))?;
        btrfs::destroy_subvolume(&self.root_fd, name).map_err(Error::io("delete the subvolume", dir))?;
        self.remove_qgroup(id)
    }

    /// Commits the file system and wakes its cleaner: usage figures become current and the
    /// space of released directories is freed now rather than within the next 30 s. Costs a
    /// transaction commit (milliseconds): not for every sandbox operation.
    pub fn sync(&self) -> Result<()> {
        btrfs::sync(&self.root_fd).map_err(Error::io("sync", &self.root))
    }

    /// Unmounts the image (when one backs the sandboxes directory) and waits for its loop device
    /// to detach, so the image file can be deleted. For tests and decommissioning a node; a node
    /// that merely restarts keeps the mount.
    pub fn teardown(self) -> Result<()> {
        let Quotas { root, root_fd, backing, .. } = self;
        drop(root_fd);
        let Backing::Image { device, .. } = backing else {
            return Ok(());
        };
        mount::unmount(&root)?;
        let name = device.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let attached = Path::new("/sys/block").join(name).join("loop/backing_file");
        let deadline = Instant::now() + Duration::from_secs(5);
        while attached.exists() {
            if Instant::now() > deadline {
                let e = io::Error::new(io::ErrorKind::TimedOut, "still attached 5 s after the unmount");
                return Err(Error::io("detach", device)(e));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// The file name of `dir`, which must be an entry of the sandboxes directory: sandbox
    /// subvolumes are all direct children of it, which is what the sweep of stale quota groups
    /// and an operator rely on.
    fn entry_name<'a>(&self, dir: &'a Path) -> Result<&'a [u8]> {
        let outside = || Error::OutsideRoot(dir.to_path_buf());
        let Some(Component::Normal(name)) = dir.components().next_back() else {
            return Err(outside());
        };
        let parent = dir.parent().ok_or_else(outside)?;
        if parent == self.root || fs::canonicalize(parent).is_ok_and(|p| p == self.root) {
            Ok(name.as_bytes())
        } else {
            Err(outside())
        }
    }

    /// Removes quota group `id` of a deleted subvolume. While the kernel is still freeing its
    /// blocks it refuses (`EBUSY`); the next [`Quotas::open`] sweeps such groups.
    fn remove_qgroup(&self, id: u64) -> Result<()> {
        match btrfs::remove_qgroup(&self.root_fd, id) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOENT)) => Ok(()),
            Err(e) => Err(Error::io("remove a quota group on", &self.root)(e)),
        }
    }

    /// Removes the level-0 quota groups whose subvolume is no longer an entry of the sandboxes
    /// directory (deleted sandboxes; a crash between a deletion and its cleanup).
    fn remove_stale_qgroups(&self) -> Result<()> {
        let mut live = vec![btrfs::TOP_LEVEL];
        for entry in fs::read_dir(&self.root).map_err(Error::io("list", &self.root))?.flatten() {
            let path = entry.path();
            if fs::symlink_metadata(&path).is_ok_and(|m| is_subvolume(&m)) {
                if let Ok(id) = open_dir(&path).and_then(|fd| btrfs::subvolume_id(&fd)) {
                    live.push(id);
                }
            }
        }
        for entry in fs::read_dir(&self.qgroups).map_err(Error::io("list", &self.qgroups))?.flatten() {
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| n.strip_prefix("0_")).and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id.filter(|id| !live.contains(id)) {
                self.remove_qgroup(id)?;
            }
        }
        Ok(())
    }
}

/// A subvolume's root directory always has inode number 256.
fn is_subvolume(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.ino() == btrfs::SUBVOL_ROOT_INO
}

/// Whether quota groups are enabled on the btrfs holding `fd` (sysfs shows them only then).
fn quota_enabled(fd: &File, root: &Path) -> Result<bool> {
    let fsid = btrfs::fsid(fd).map_err(Error::io("identify the file system of", root))?;
    Ok(Path::new("/sys/fs/btrfs").join(fsid).join("qgroups").is_dir())
}

/// Mounts the image at `root` (empty), creating it or attaching it to a loop device as needed,
/// and returns the device.
fn mount_image(root: &Path, image: &Path, cfg: &Config) -> Result<PathBuf> {
    let mut entries = fs::read_dir(root).map_err(Error::io("list", root))?;
    if entries.next().is_some() {
        return Err(Error::NotEmpty(root.to_path_buf()));
    }
    if !image.exists() {
        if let Some(dir) = image.parent() {
            fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        }
        mount::create_image(image, cfg.image_size)?;
    }
    // The descriptor keeps the (auto-clearing) device attached until the mount holds it.
    let (device, _hold) = match loopdev::find(image)? {
        Some(found) => found,
        None => loopdev::attach(image)?,
    };
    mount::mount_btrfs(&device, root)?;
    Ok(device)
}

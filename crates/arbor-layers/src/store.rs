//! The store: import, look up, verify and remove layers; read and write references.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use walkdir::WalkDir;

use crate::digest::digest_tree;
use crate::{now_rfc3339, Error, LayerId, LayerInfo, RefManifest, Result, REF_SCHEMA};

const LAYERS: &str = "layers";
const REFS: &str = "refs";
const TMP: &str = "tmp";
const ROOTFS: &str = "rootfs";
const LAYER_JSON: &str = "layer.json";

/// Tells apart the temp dirs of one process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// A layer store rooted at a node's data dir.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens the store under `data_dir`, creating its directories if needed.
    pub fn open(data_dir: impl Into<PathBuf>) -> Result<Self> {
        let root = data_dir.into();
        for sub in [LAYERS, REFS, TMP] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        Ok(LayerStore { root })
    }

    /// The data dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scratch space on the store's filesystem: build trees here so that [`Self::import_dir`] can
    /// move them in with a rename.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP)
    }

    /// Moves the tree at `path` into the store as a layer and returns its id.
    ///
    /// The tree is consumed: it is renamed (never copied) into a private staging dir, hashed there,
    /// and the staging dir is renamed to `layers/<id>`, mode 0555. If that layer already exists (the
    /// same content was imported before, or concurrently), the new copy is discarded, unless the
    /// existing one no longer verifies, in which case the new copy replaces it. On failure
    /// before that point the tree is moved back to `path`.
    pub fn import_dir(&self, path: &Path) -> Result<LayerId> {
        let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(path.to_path_buf()));
        }
        let staging = self.make_tmp("import")?;
        let rootfs = staging.join(ROOTFS);
        if let Err(e) = fs::rename(path, &rootfs) {
            let _ = fs::remove_dir(&staging);
            if e.raw_os_error() == Some(nix::libc::EXDEV) {
                return Err(Error::CrossDevice { path: path.to_path_buf(), tmp: self.tmp_dir() });
            }
            return Err(Error::io("move into the store", path, e));
        }
        match self.seal(&staging) {
            Ok(id) => Ok(id),
            Err(e) => {
                // Give the caller its tree back; if even that fails, the next stale sweep frees it.
                if fs::rename(&rootfs, path).is_ok() {
                    let _ = remove_tree(&staging);
                }
                Err(e)
            }
        }
    }

    /// Hashes a staged tree, writes its record and renames it into `layers/`.
    fn seal(&self, staging: &Path) -> Result<LayerId> {
        let digest = digest_tree(&staging.join(ROOTFS))?;
        let info = LayerInfo { id: digest.id, entries: digest.entries, bytes: digest.bytes, imported: now_rfc3339() };
        write_json(&staging.join(LAYER_JSON), &info)?;
        set_mode(staging, 0o555)?;
        let dest = self.layer_dir(&digest.id);
        // At most two tries: the second after moving aside a copy that no longer verifies.
        for _ in 0..2 {
            match fs::rename(staging, &dest) {
                Ok(()) => {
                    sync_dir(&self.root.join(LAYERS))?;
                    return Ok(digest.id);
                }
                // rename(2) onto a non-empty directory: the layer is already there. Keep it if it
                // is intact; a tampered one is replaced by the fresh copy.
                Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EEXIST) | Some(nix::libc::ENOTEMPTY)) => {
                    match self.verify(&digest.id) {
                        Ok(()) => {
                            remove_tree(staging)?;
                            return Ok(digest.id);
                        }
                        Err(Error::Tampered { .. }) => self.discard(&dest)?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(Error::io("rename into place", &dest, e)),
            }
        }
        Err(Error::io("rename into place", &dest, std::io::Error::from(ErrorKind::AlreadyExists)))
    }

    /// Makes a layer dir vanish with one rename, then deletes it.
    fn discard(&self, dir: &Path) -> Result<()> {
        let doomed = self.tmp_name("remove");
        fs::rename(dir, &doomed).map_err(|e| Error::io("move out of the store", dir, e))?;
        remove_tree(&doomed)
    }

    /// Whether the store holds the layer.
    pub fn contains(&self, id: &LayerId) -> bool {
        self.layer_dir(id).join(ROOTFS).is_dir()
    }

    /// The root of a layer's tree: the directory to give overlayfs as a lower dir.
    pub fn path(&self, id: &LayerId) -> Result<PathBuf> {
        let path = self.layer_dir(id).join(ROOTFS);
        if !path.is_dir() {
            return Err(Error::LayerNotFound(*id));
        }
        Ok(path)
    }

    /// The trees of `layers` (bottom first, as references list them) in
    /// overlayfs `lowerdir` order: top first.
    pub fn lower_dirs(&self, layers: &[LayerId]) -> Result<Vec<PathBuf>> {
        layers.iter().rev().map(|id| self.path(id)).collect()
    }

    /// A layer's record, written at import.
    pub fn info(&self, id: &LayerId) -> Result<LayerInfo> {
        let path = self.layer_dir(id).join(LAYER_JSON);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Manifest { path, source }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::LayerNotFound(*id)),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Re-hashes a layer and fails with [`Error::Tampered`] unless it still matches its id.
    pub fn verify(&self, id: &LayerId) -> Result<()> {
        let digest = digest_tree(&self.path(id)?)?;
        if digest.id != *id {
            return Err(Error::Tampered { id: *id, actual: digest.id });
        }
        Ok(())
    }

    /// All layers in the store, sorted.
    pub fn list(&self) -> Result<Vec<LayerId>> {
        let dir = self.root.join(LAYERS);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            // Anything else there is not ours to interpret.
            if let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes a layer; refuses with [`Error::InUse`] while a reference names it.
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        let _lock = self.lock()?;
        let users: Vec<String> = self
            .list_refs()?
            .into_iter()
            .filter(|name| self.get_ref(name).is_ok_and(|m| m.layers.contains(id)))
            .collect();
        if !users.is_empty() {
            return Err(Error::InUse { id: *id, refs: users });
        }
        let dir = self.layer_dir(id);
        if !dir.exists() {
            return Err(Error::LayerNotFound(*id));
        }
        // One rename makes it vanish for readers; deleting the files can then take its time.
        self.discard(&dir)
    }

    /// Reads a reference.
    pub fn get_ref(&self, name: &str) -> Result<RefManifest> {
        let path = self.ref_path(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::RefNotFound(name.to_owned())),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let manifest: RefManifest =
            serde_json::from_slice(&bytes).map_err(|source| Error::Manifest { path, source })?;
        if manifest.schema != REF_SCHEMA {
            return Err(Error::Schema { name: name.to_owned(), found: manifest.schema, expected: REF_SCHEMA });
        }
        Ok(manifest)
    }

    /// Creates or replaces a reference; every layer it names must be in the store.
    pub fn set_ref(&self, name: &str, manifest: &RefManifest) -> Result<()> {
        let path = self.ref_path(name)?;
        if manifest.schema != REF_SCHEMA {
            return Err(Error::Schema { name: name.to_owned(), found: manifest.schema, expected: REF_SCHEMA });
        }
        let _lock = self.lock()?;
        if let Some(missing) = manifest.layers.iter().find(|id| !self.contains(id)) {
            return Err(Error::LayerNotFound(*missing));
        }
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        let tmp = self.tmp_name("ref");
        write_json(&tmp, manifest)?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("rename into place", &path, e)
        })?;
        sync_dir(parent)
    }

    /// Deletes a reference (its layers stay until removed).
    pub fn remove_ref(&self, name: &str) -> Result<()> {
        let path = self.ref_path(name)?;
        let _lock = self.lock()?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::RefNotFound(name.to_owned())),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// Names of all references, sorted.
    pub fn list_refs(&self) -> Result<Vec<String>> {
        let dir = self.root.join(REFS);
        let mut names = Vec::new();
        for entry in WalkDir::new(&dir).min_depth(1) {
            let entry = entry.map_err(|e| Error::io("list", &dir, e.into()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(&dir).unwrap_or(entry.path());
            let name = rel.to_str().and_then(|s| s.strip_suffix(".json"));
            if let Some(name) = name.filter(|n| valid_ref_name(n)) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes what crashed imports and removals left in `tmp/`: entries whose creating process is
    /// gone (their names carry its pid). Returns how many were removed.
    pub fn clean_stale_tmp(&self) -> Result<usize> {
        let dir = self.tmp_dir();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(tmp_owner) else { continue };
            if Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&path)?;
            } else {
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(LAYERS).join(id.to_string())
    }

    fn ref_path(&self, name: &str) -> Result<PathBuf> {
        if !valid_ref_name(name) {
            return Err(Error::InvalidRefName(name.to_owned()));
        }
        Ok(self.root.join(REFS).join(format!("{name}.json")))
    }

    /// `tmp/<kind>-<pid>-<seq>`: the pid lets [`Self::clean_stale_tmp`] tell live work from debris.
    fn tmp_name(&self, kind: &str) -> PathBuf {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir().join(format!("{kind}-{}-{seq}", std::process::id()))
    }

    fn make_tmp(&self, kind: &str) -> Result<PathBuf> {
        loop {
            let path = self.tmp_name(kind);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(path),
                // Left by an earlier process that had our pid.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", path, e)),
            }
        }
    }

    /// Serialises reference writes against removals across processes; released on drop.
    fn lock(&self) -> Result<Flock<File>> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::io("lock", path, errno.into()))
    }
}

/// Reference names: `/`-separated segments of `[a-z0-9._-]`, none empty or only dots.
fn valid_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.bytes().all(|b| b == b'.')
                && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

/// The pid in a `tmp/` entry name `<kind>-<pid>-<rest>`.
fn tmp_owner(name: &str) -> Option<u32> {
    name.split('-').nth(1)?.parse().ok()
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Manifest { path: path.into(), source })?;
    bytes.push(b'\n');
    let mut file = File::create(path).map_err(|e| Error::io("create", path, e))?;
    file.write_all(&bytes).map_err(|e| Error::io("write", path, e))?;
    file.sync_all().map_err(|e| Error::io("sync", path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| Error::io("sync", path, e))
}

/// Deletes a tree that may hold read-only directories, which even their owner cannot empty
/// without CAP_DAC_OVERRIDE: give each directory u+rwx first. Refuses when something is mounted
/// inside it.
fn remove_tree(path: &Path) -> Result<()> {
    if let Some(mount) = mount_under(path)? {
        return Err(Error::Mounted { path: path.to_path_buf(), mount });
    }
    for entry in WalkDir::new(path).follow_links(false) {
        let entry = entry.map_err(|e| Error::io("walk", path, e.into()))?;
        if entry.file_type().is_dir() {
            let meta = entry.metadata().map_err(|e| Error::io("stat", entry.path(), e.into()))?;
            if meta.mode() & 0o700 != 0o700 {
                set_mode(entry.path(), (meta.mode() & 0o7777) | 0o700)?;
            }
        }
    }
    fs::remove_dir_all(path).map_err(|e| Error::io("remove", path, e))
}

/// The first mount point at or below `path`, from /proc/self/mountinfo.
fn mount_under(path: &Path) -> Result<Option<PathBuf>> {
    let path = fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
    let info = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(info).map_err(|e| Error::io("read", info, e))?;
    Ok(text.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape_mount_path).find(|m| m.starts_with(&path)))
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b\\011c"), Path::new("/a b\tc"));
        assert_eq!(unescape_mount_path("/plain"), Path::new("/plain"));
    }

    #[test]
    fn trees_with_mounts_are_not_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("notice: not root; mount part skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        let mount = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status().unwrap().success();
        assert!(mount(&["mount", "-t", "tmpfs", "tmpfs", sub.to_str().unwrap()]));
        fs::write(sub.join("precious"), "x").unwrap();
        let refused = remove_tree(dir.path());
        assert!(mount(&["umount", sub.to_str().unwrap()]));
        assert!(matches!(refused, Err(Error::Mounted { mount, .. }) if mount == fs::canonicalize(&sub).unwrap()));
        remove_tree(dir.path()).unwrap();
        assert!(!dir.path().exists());
    }

    #[test]
    fn ref_names() {
        for good in ["base", "templates/base", "snapshots/abc-1.2_x"] {
            assert!(valid_ref_name(good), "{good}");
        }
        for bad in ["", "/base", "base/", "a//b", "..", "a/../b", "Base", "a b", "a:b", "."] {
            assert!(!valid_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn tmp_owner_reads_the_pid() {
        assert_eq!(tmp_owner("import-1234-0"), Some(1234));
        assert_eq!(tmp_owner("build-77-abcd"), Some(77));
        assert_eq!(tmp_owner("junk"), None);
    }
}

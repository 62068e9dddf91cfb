//! Applies one layer (a tar stream) onto a root file system directory, with OCI whiteouts.
//!
//! Safety rule: every entry lands inside `dest`. Entry names and hard-link targets with `..` are
//! refused. Symbolic links met in the *parent* path of an entry are resolved by hand, the way the
//! kernel would inside a chroot at `dest` (an absolute target restarts at `dest`, a relative one at the
//! link's directory); a link that climbs above `dest` is refused. After that resolution the parent is a
//! chain of real directories, and the entry itself is created without following links (existing files
//! are removed first, `O_NOFOLLOW`, `lchown`, `lsetxattr`, `lutimes`). Nothing else writes to `dest`
//! while a layer is applied, so the resolution cannot be raced.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::time::TimeVal;
use tar::{Entry, EntryType};

use crate::error::{Error, Result};

/// Whiteout prefix: `.wh.NAME` deletes NAME of the lower layers.
const WHITEOUT: &str = ".wh.";
/// Opaque marker: the directory holding it loses all its lower-layer content.
const OPAQUE: &str = ".wh..wh..opq";
/// Same limit as Linux's for symbolic links followed in one lookup.
const MAX_LINKS: usize = 40;

/// Reads the tar stream `archive` to its end and applies it onto `dest`.
pub(crate) fn apply_layer(archive: impl Read, dest: &Path, layer: &str) -> Result<()> {
    let mut state = Layer { dest, layer, written: HashSet::new(), dir_times: Vec::new() };
    let mut archive = tar::Archive::new(archive);
    let entries = archive.entries().map_err(|e| state.archive(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| state.archive(e))?;
        state.apply(&mut entry)?;
    }
    // Directory times last: creating their children changed them.
    for (path, mtime) in state.dir_times.iter().rev() {
        set_times(path, *mtime)?;
    }
    Ok(())
}

/// Metadata of an entry that the tar header may carry in PAX records instead.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Layer<'a> {
    dest: &'a Path,
    layer: &'a str,
    /// Host paths this layer created: whiteouts only hide lower layers, never siblings of this one.
    written: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, i64)>,
}

impl Layer<'_> {
    fn archive(&self, source: io::Error) -> Error {
        Error::Archive { layer: self.layer.to_string(), source }
    }

    fn refuse(&self, entry: &Path, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry { layer: self.layer.to_string(), entry: entry.to_path_buf(), reason: reason.into() }
    }

    fn apply<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let raw = entry.path().map_err(|e| self.archive(e))?.into_owned();
        let rel = clean(&raw).map_err(|why| self.refuse(&raw, why))?;
        let meta = self.meta(entry)?;

        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            // The root itself (`./`): only its metadata can change.
            if kind != EntryType::Directory {
                return Err(self.refuse(&raw, "only a directory can stand for the root"));
            }
            return self.set_meta(self.dest, &meta, false);
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));

        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT.as_bytes()) {
            return self.whiteout(&raw, parent_rel, OsStr::from_bytes(hidden));
        }

        let parent =
            self.resolve_dir(&raw, parent_rel, true)?.ok_or_else(|| self.refuse(&raw, "parent directory missing"))?;
        let path = parent.join(&name);

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&path)?;
                        mkdir(&path)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&path)?,
                    Err(e) => return Err(Error::io("inspect", &path, e)),
                }
                self.set_meta(&path, &meta, false)?;
                self.dir_times.push((path.clone(), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                io::copy(entry, &mut file).map_err(|e| self.archive(e))?;
                // chown before chmod: chown clears set-id bits.
                std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                    .map_err(|e| Error::io("chown", &path, e))?;
                file.set_permissions(Permissions::from_mode(meta.mode)).map_err(|e| Error::io("chmod", &path, e))?;
                drop(file);
                self.set_meta(&path, &meta, true)?;
                set_times(&path, meta.mtime)?;
            }
            EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| self.refuse(&raw, "symbolic link without a target"))?;
                remove_any(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| Error::io("symlink", &path, e))?;
                self.set_meta(&path, &meta, true)?;
                set_times(&path, meta.mtime)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| self.archive(e))?
                    .ok_or_else(|| self.refuse(&raw, "hard link without a target"))?
                    .into_owned();
                let target_rel = clean(&target_raw).map_err(|why| self.refuse(&raw, why))?;
                let target_name = target_rel.file_name().ok_or_else(|| self.refuse(&raw, "hard link to the root"))?;
                let target_dir = self
                    .resolve_dir(&raw, target_rel.parent().unwrap_or(Path::new("")), false)?
                    .ok_or_else(|| self.refuse(&raw, "hard link target missing"))?;
                let target = target_dir.join(target_name);
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => return Err(self.refuse(&raw, "hard link to a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(self.refuse(&raw, "hard link target missing")),
                }
                if target != path {
                    remove_any(&path)?;
                    fs::hard_link(&target, &path).map_err(|e| Error::io("link", &path, e))?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                        let flag = if kind == EntryType::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                        (flag, libc::makedev(major, minor))
                    }
                };
                remove_any(&path)?;
                mknod(&path, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| Error::io("mknod", &path, e.into()))?;
                std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid))
                    .map_err(|e| Error::io("chown", &path, e))?;
                fs::set_permissions(&path, Permissions::from_mode(meta.mode))
                    .map_err(|e| Error::io("chmod", &path, e))?;
                self.set_meta(&path, &meta, true)?;
                set_times(&path, meta.mtime)?;
            }
            other => {
                return Err(self.refuse(&raw, format!("unsupported tar entry type {other:?}")));
            }
        }
        self.written.insert(path);
        Ok(())
    }

    /// Reads owner, mode, time and xattrs, letting PAX records override the ustar fields.
    fn meta<R: Read>(&self, entry: &mut Entry<'_, R>) -> Result<Meta> {
        let header = entry.header();
        let num = |r: io::Result<u64>| r.map_err(|e| self.archive(e));
        let mut meta = Meta {
            uid: u32::try_from(num(header.uid())?).unwrap_or(u32::MAX),
            gid: u32::try_from(num(header.gid())?).unwrap_or(u32::MAX),
            mode: num(header.mode().map(u64::from))? as u32 & 0o7777,
            mtime: i64::try_from(num(header.mtime())?).unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(|e| self.archive(e))? {
            for ext in pax {
                let ext = ext.map_err(|e| self.archive(e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let number = || std::str::from_utf8(value).ok().and_then(|v| v.parse::<u32>().ok());
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
                } else if key == b"uid" {
                    meta.uid = number().unwrap_or(meta.uid);
                } else if key == b"gid" {
                    meta.gid = number().unwrap_or(meta.gid);
                } else if key == b"mtime" {
                    // PAX times may carry a fraction; whole seconds are what we keep.
                    let secs = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<i64>().ok());
                    meta.mtime = secs.unwrap_or(meta.mtime);
                }
            }
        }
        Ok(meta)
    }

    /// Owner and mode (unless `skip_mode_owner`: already set on the open file or link) and xattrs.
    fn set_meta(&self, path: &Path, meta: &Meta, skip_mode_owner: bool) -> Result<()> {
        if !skip_mode_owner {
            std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(|e| Error::io("chown", path, e))?;
            fs::set_permissions(path, Permissions::from_mode(meta.mode)).map_err(|e| Error::io("chmod", path, e))?;
        }
        for (name, value) in &meta.xattrs {
            // xattr::set uses lsetxattr: never through a link.
            xattr::set(path, name, value).map_err(|e| Error::io("setxattr", path, e))?;
        }
        Ok(())
    }

    /// `.wh.NAME` removes NAME; `.wh..wh..opq` empties the directory of lower-layer content.
    fn whiteout(&mut self, raw: &Path, parent_rel: &Path, hidden: &OsStr) -> Result<()> {
        let Some(parent) = self.resolve_dir(raw, parent_rel, false)? else {
            return Ok(()); // Nothing below to hide.
        };
        if hidden.as_bytes() == &OPAQUE.as_bytes()[WHITEOUT.len()..] {
            return self.make_opaque(&parent);
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/') {
            return Err(self.refuse(raw, "whiteout of an invalid name"));
        }
        let target = parent.join(hidden);
        if self.written.contains(&target) {
            return Ok(());
        }
        remove_any(&target)
    }

    /// Removes everything under `dir` that this layer did not write, descending into directories this
    /// layer did write (they may still hold lower-layer children).
    fn make_opaque(&self, dir: &Path) -> Result<()> {
        let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        for child in entries {
            let child = child.map_err(|e| Error::io("list", dir, e))?.path();
            if !self.written.contains(&child) {
                remove_any(&child)?;
            } else if fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir()) {
                self.make_opaque(&child)?;
            }
        }
        Ok(())
    }

    /// Resolves `rel` (already free of `..`) to a real directory under `dest`, following symbolic links
    /// with chroot semantics. Missing components are created (0755, root) when `create`, otherwise the
    /// result is `None`.
    fn resolve_dir(&self, raw: &Path, rel: &Path, create: bool) -> Result<Option<PathBuf>> {
        let mut todo: VecDeque<OsString> = rel.iter().map(OsStr::to_os_string).collect();
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0usize;
        while let Some(name) = todo.pop_front() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                if done.pop().is_none() {
                    return Err(self.refuse(raw, "a symbolic link in its path leads above the root"));
                }
                continue;
            }
            let here: PathBuf = done.iter().fold(self.dest.to_path_buf(), |p, c| p.join(c));
            let next = here.join(&name);
            match fs::symlink_metadata(&next) {
                Ok(m) if m.is_dir() => done.push(name),
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(self.refuse(raw, "too many symbolic links in its path"));
                    }
                    let target = fs::read_link(&next).map_err(|e| Error::io("readlink", &next, e))?;
                    if target.is_absolute() {
                        done.clear();
                    }
                    for (i, c) in target.iter().filter(|c| *c != "/").enumerate() {
                        todo.insert(i, c.to_os_string());
                    }
                }
                Ok(_) => {
                    return Err(self.refuse(raw, format!("{:?} is not a directory", next)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    mkdir(&next)?;
                    done.push(name);
                }
                Err(e) => return Err(Error::io("inspect", &next, e)),
            }
        }
        Ok(Some(done.iter().fold(self.dest.to_path_buf(), |p, c| p.join(c))))
    }
}

/// Strips `/` and `.` components; refuses `..` (no legitimate layer needs it).
fn clean(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err("path contains '..'"),
            Component::Prefix(_) => return Err("path has a prefix"),
        }
    }
    Ok(out)
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| Error::io("mkdir", path, e))?;
    fs::set_permissions(path, Permissions::from_mode(0o755)).map_err(|e| Error::io("chmod", path, e))
}

/// Removes whatever is at `path` (a directory with its content), without following a link.
fn remove_any(path: &Path) -> Result<()> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| Error::io("remove", path, e))
}

/// Sets access and modification time to `mtime`, on the link itself for symbolic links.
fn set_times(path: &Path, mtime: i64) -> Result<()> {
    let t = TimeVal::new(mtime, 0);
    nix::sys::stat::lutimes(path, &t, &t).map_err(|e| Error::io("set times", path, e.into()))
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;

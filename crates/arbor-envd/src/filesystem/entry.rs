//! `EntryInfo`: what envd reports about one file-system entry, and the
//! recursive directory listing built from it.
//!
//! Everything here is blocking and is meant to run inside
//! [`crate::creds::run_as`], so the kernel checks the request user's rights.

use crate::{
    error::{Error, Result},
    users::NameCache,
};
use arbor_proto::filesystem::{EntryInfo, FileType};
use std::{
    fs::{self, Metadata},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Describes the entry at `path` (absolute, not resolved through symlinks).
///
/// Size, mode, owner and time are the entry's own (`lstat`), as upstream envd
/// reports them. A symlink gets its target's type, because the novita SDKs
/// drop entries of any type but file and directory; a dangling one counts as
/// a file. `symlink_target` then holds the resolved absolute target.
pub fn entry_info(path: &Path, names: &NameCache) -> Result<EntryInfo> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    Ok(build(path, &meta, names))
}

fn build(path: &Path, meta: &Metadata, names: &NameCache) -> EntryInfo {
    let is_symlink = meta.file_type().is_symlink();
    let (kind, symlink_target) = if is_symlink {
        // A dangling or unreadable target is reported as a file.
        let kind = match fs::metadata(path) {
            Ok(target) if target.is_dir() => FileType::Directory,
            _ => FileType::File,
        };
        (kind, Some(symlink_target(path).to_string_lossy().into_owned()))
    } else if meta.is_dir() {
        (FileType::Directory, None)
    } else {
        (FileType::File, None)
    };
    EntryInfo {
        name: path.file_name().map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned()),
        r#type: kind as i32,
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode: meta.mode() & 0o777,
        permissions: permissions_string(meta.mode()),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: Some(pbjson_types::Timestamp {
            seconds: meta.mtime(),
            // Always within 0..1e9, so the conversion cannot fail in practice.
            nanos: i32::try_from(meta.mtime_nsec()).unwrap_or(0),
        }),
        symlink_target,
        metadata: Default::default(),
        is_symlink,
    }
}

/// The symlink's target as an absolute path: fully resolved when it exists.
/// For a dangling link, the link text taken from the link's directory, with
/// the part that does exist resolved (usually all but the last component).
fn symlink_target(link: &Path) -> PathBuf {
    if let Ok(resolved) = fs::canonicalize(link) {
        return resolved;
    }
    let Ok(text) = fs::read_link(link) else { return link.to_path_buf() };
    let target = link.parent().unwrap_or(Path::new("/")).join(text);
    match (target.parent().map(fs::canonicalize), target.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => target,
    }
}

/// Formats a `st_mode` the way Go's `FileMode.String()` does, since that is
/// what upstream envd sends: type letters (`d`, `L`, `D`, `p`, `S`, `u`, `g`,
/// `c`, `t`), or `-` when there are none, then `rwxrwxrwx`.
pub fn permissions_string(mode: u32) -> String {
    let mut out = String::with_capacity(12);
    match mode & libc::S_IFMT {
        libc::S_IFDIR => out.push('d'),
        libc::S_IFLNK => out.push('L'),
        libc::S_IFBLK => out.push('D'),
        libc::S_IFCHR => out.push_str("Dc"),
        libc::S_IFIFO => out.push('p'),
        libc::S_IFSOCK => out.push('S'),
        _ => {}
    }
    // Go lists setuid, setgid and sticky among the type letters, after the
    // file-type ones and in this order (`u`, `g`, then `c` or `t`).
    if mode & libc::S_ISUID != 0 {
        out.push('u');
    }
    if mode & libc::S_ISGID != 0 {
        out.push('g');
    }
    if mode & libc::S_ISVTX != 0 {
        out.push('t');
    }
    if out.is_empty() {
        out.push('-');
    }
    const RWX: [char; 3] = ['r', 'w', 'x'];
    for bit in (0..9).rev() {
        out.push(if mode & (1 << bit) != 0 { RWX[2 - bit % 3] } else { '-' });
    }
    out
}

/// Lists `dir` up to `depth` levels (1 = its direct children), parents
/// before children and names sorted, never descending into symlinked
/// directories. Entry paths are under `dir` as given. A subdirectory the user
/// may not read is listed but not descended into; only an unreadable `dir`
/// itself is an error.
pub fn list_dir(dir: &Path, depth: u32, names: &NameCache) -> Result<Vec<EntryInfo>> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("path is not a directory: {}", dir.display())));
    }
    let mut out = Vec::new();
    walk(dir, depth.max(1), names, &mut out, true)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, names: &NameCache, out: &mut Vec<EntryInfo>, top: bool) -> Result<()> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if top => return Err(Error::io(format!("reading directory {}", dir.display()), e)),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), "not descending into unreadable directory: {e}");
            return Ok(());
        }
    };
    let mut children: Vec<(PathBuf, Metadata)> = Vec::new();
    for item in read {
        let item = item.map_err(|e| Error::io(format!("reading directory {}", dir.display()), e))?;
        let path = item.path();
        match item.metadata() {
            Ok(meta) => children.push((path, meta)),
            // Removed between readdir and lstat: it no longer exists to list.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        }
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, meta) in children {
        out.push(build(&path, &meta, names));
        // `meta` is from lstat, so a symlink to a directory is not a dir here.
        if depth > 1 && meta.is_dir() {
            walk(&path, depth - 1, names, out, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn permission_strings_match_go() {
        assert_eq!(permissions_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFDIR | libc::S_ISVTX | 0o777), "dtrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFREG | libc::S_ISUID | 0o755), "urwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFREG | libc::S_ISGID | 0o750), "grwxr-x---");
        assert_eq!(permissions_string(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(permissions_string(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(permissions_string(libc::S_IFSOCK | 0o777), "Srwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFREG), "----------");
    }

    #[test]
    fn symlinks_report_the_target_type() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("f.txt"), b"hello").unwrap();
        symlink(root.join("sub"), root.join("to-dir")).unwrap();
        symlink("f.txt", root.join("to-file")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("sub/../gone", root.join("dangling2")).unwrap();
        let names = NameCache::default();
        let canonical = fs::canonicalize(root).unwrap();

        let d = entry_info(&root.join("to-dir"), &names).unwrap();
        assert_eq!(d.r#type, FileType::Directory as i32);
        assert!(d.is_symlink);
        assert_eq!(d.symlink_target.as_deref(), Some(canonical.join("sub").to_str().unwrap()));

        let f = entry_info(&root.join("to-file"), &names).unwrap();
        assert_eq!(f.r#type, FileType::File as i32);
        assert_eq!(f.symlink_target.as_deref(), Some(canonical.join("f.txt").to_str().unwrap()));

        let x = entry_info(&root.join("dangling"), &names).unwrap();
        assert_eq!(x.r#type, FileType::File as i32);
        assert_eq!(x.symlink_target.as_deref(), Some(canonical.join("missing").to_str().unwrap()));
        let y = entry_info(&root.join("dangling2"), &names).unwrap();
        assert_eq!(y.symlink_target.as_deref(), Some(canonical.join("gone").to_str().unwrap()));

        let plain = entry_info(&root.join("f.txt"), &names).unwrap();
        assert_eq!((plain.name.as_str(), plain.size, plain.is_symlink), ("f.txt", 5, false));
        assert_eq!(plain.symlink_target, None);
    }

    #[test]
    fn lists_to_depth_without_following_symlinked_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/deep.txt"), b"").unwrap();
        fs::write(root.join("z.txt"), b"").unwrap();
        symlink(root.join("a"), root.join("link")).unwrap();
        let names = NameCache::default();
        let rel = |entries: Vec<EntryInfo>| -> Vec<String> {
            entries
                .into_iter()
                .map(|e| Path::new(&e.path).strip_prefix(root).unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(rel(list_dir(root, 0, &names).unwrap()), ["a", "link", "z.txt"]);
        assert_eq!(rel(list_dir(root, 2, &names).unwrap()), ["a", "a/b", "link", "z.txt"]);
        assert_eq!(rel(list_dir(root, 9, &names).unwrap()), ["a", "a/b", "a/b/c", "a/b/c/deep.txt", "link", "z.txt"]);
        fs::set_permissions(root.join("z.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        let z = list_dir(root, 1, &names).unwrap().pop().unwrap();
        assert_eq!((z.mode, z.permissions.as_str()), (0o640, "-rw-r-----"));
        assert!(matches!(list_dir(&root.join("z.txt"), 1, &names), Err(Error::InvalidArgument(_))));
        assert!(matches!(list_dir(&root.join("nope"), 1, &names), Err(Error::NotFound(_))));
    }
}

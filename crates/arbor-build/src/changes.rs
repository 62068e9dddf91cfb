//! A build sandbox's exported changes made into a clean layer: what the
//! runtime itself wrote at boot is taken out, and overlayfs bookkeeping that
//! only means something on the original mount is stripped.

use crate::error::{Error, Result};
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The only overlayfs attribute a layer keeps: a directory that replaced
/// one below it. (`origin`, `impure`, ... point at the build's own mount.)
const OPAQUE: &str = "trusted.overlay.opaque";

/// Cleans the exported upper dir `tree` of a sandbox that ran on `lower`
/// (layer roots, top first) with hostname `hostname`. Returns whether any
/// change is left.
pub fn clean(tree: &Path, lower: &[PathBuf], hostname: &str) -> Result<bool> {
    strip_boot_files(tree, lower, hostname)?;
    strip_overlay_xattrs(tree)?;
    // The runtime's mount point for envd, when the image lacks one.
    remove_if_empty_dir(&tree.join(".arbor"))?;
    prune_unchanged_dirs(tree, tree, lower)?;
    let left = fs::read_dir(tree).map_err(Error::io(format!("listing {}", tree.display())))?.next().is_some();
    Ok(left)
}

/// The file `rel` as the layers below show it, if any of them has it.
fn lower_file(lower: &[PathBuf], rel: &str) -> Option<PathBuf> {
    lower.iter().map(|l| l.join(rel)).find(|p| fs::symlink_metadata(p).is_ok())
}

/// `/etc/hostname`, `/etc/resolv.conf`, the `/etc/mtab` link and the
/// `/etc/hosts` line the runtime writes into every sandbox at boot are the
/// build sandbox's, not the template's.
fn strip_boot_files(tree: &Path, lower: &[PathBuf], hostname: &str) -> Result<()> {
    let remove = |path: &Path| fs::remove_file(path).map_err(Error::io(format!("removing {}", path.display())));
    let name = tree.join("etc/hostname");
    if fs::read_to_string(&name).is_ok_and(|s| s == format!("{hostname}\n")) {
        remove(&name)?;
    }
    let resolv = tree.join("etc/resolv.conf");
    let written = arbor_node::host_resolv_conf();
    if written.is_some() && fs::read_to_string(&resolv).ok() == written {
        remove(&resolv)?;
    }
    let mtab = tree.join("etc/mtab");
    let linked = fs::read_link(&mtab).is_ok_and(|t| t == Path::new("../proc/self/mounts"));
    if linked && lower_file(lower, "etc/mtab").is_none() {
        remove(&mtab)?;
    }
    let hosts = tree.join("etc/hosts");
    let Ok(text) = fs::read_to_string(&hosts) else { return Ok(()) };
    let added = format!("127.0.1.1\t{hostname}\n");
    let Some(before) = text.strip_suffix(&added) else { return Ok(()) };
    let lower_text = lower_file(lower, "etc/hosts").and_then(|p| fs::read_to_string(p).ok());
    let unchanged =
        lower_text.as_deref() == Some(before) || (lower_text.is_none() && before == "127.0.0.1\tlocalhost\n");
    if unchanged {
        fs::remove_file(&hosts).map_err(Error::io(format!("removing {}", hosts.display())))
    } else {
        fs::write(&hosts, before).map_err(Error::io(format!("writing {}", hosts.display())))
    }
}

fn strip_overlay_xattrs(tree: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.map_err(|e| Error::Invalid(format!("walking {}: {e}", tree.display())))?;
        if entry.path_is_symlink() {
            continue;
        }
        let Ok(names) = xattr::list(entry.path()) else { continue };
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("trusted.overlay.") && name != OPAQUE {
                xattr::remove(entry.path(), &name)
                    .map_err(Error::io(format!("removing {name} of {}", entry.path().display())))?;
            }
        }
    }
    Ok(())
}

fn remove_if_empty_dir(dir: &Path) -> Result<()> {
    let empty = fs::read_dir(dir).is_ok_and(|mut it| it.next().is_none());
    if empty {
        fs::remove_dir(dir).map_err(Error::io(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

/// Removes directories that were only copied up on the way to a file that
/// is gone now: empty, not opaque, and the same owner and mode as below.
/// Returns whether `dir` itself was removed.
fn prune_unchanged_dirs(root: &Path, dir: &Path, lower: &[PathBuf]) -> Result<bool> {
    let entries: Vec<_> =
        fs::read_dir(dir).map_err(Error::io(format!("listing {}", dir.display())))?.flatten().collect();
    let mut left = 0;
    for entry in entries {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(is_dir && prune_unchanged_dirs(root, &entry.path(), lower)?) {
            left += 1;
        }
    }
    if dir == root || left > 0 || xattr::get(dir, OPAQUE).ok().flatten().is_some() {
        return Ok(false);
    }
    let rel = dir.strip_prefix(root).map_err(|e| Error::Invalid(e.to_string()))?.to_string_lossy().into_owned();
    let (Ok(mine), Some(theirs)) = (fs::symlink_metadata(dir), lower_file(lower, &rel)) else { return Ok(false) };
    let Ok(theirs) = fs::symlink_metadata(theirs) else { return Ok(false) };
    if theirs.is_dir() && (mine.mode(), mine.uid(), mine.gid()) == (theirs.mode(), theirs.uid(), theirs.gid()) {
        fs::remove_dir(dir).map_err(Error::io(format!("removing {}", dir.display())))?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_files_and_copied_up_dirs_go() {
        let d = tempfile::tempdir().unwrap();
        let (lower, tree) = (d.path().join("lower"), d.path().join("tree"));
        for p in [lower.join("etc"), lower.join("usr/lib"), tree.join("etc"), tree.join("usr/lib"), tree.join(".arbor")]
        {
            fs::create_dir_all(p).unwrap();
        }
        fs::write(lower.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        fs::write(tree.join("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tsbx-b\n").unwrap();
        fs::write(tree.join("etc/hostname"), "sbx-b\n").unwrap();
        assert!(!clean(&tree, std::slice::from_ref(&lower), "sbx-b").unwrap(), "nothing real changed");

        // Both were pruned as copied-up leftovers.
        assert!(!tree.join("etc").exists() && !tree.join("usr").exists());
        fs::create_dir_all(tree.join("usr/lib/app")).unwrap();
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("usr/lib/app/x"), "x").unwrap();
        fs::write(tree.join("etc/hosts"), "127.0.0.1\tlocalhost\n10.0.0.1 db\n127.0.1.1\tsbx-b\n").unwrap();
        assert!(clean(&tree, &[lower], "sbx-b").unwrap());
        assert_eq!(fs::read_to_string(tree.join("etc/hosts")).unwrap(), "127.0.0.1\tlocalhost\n10.0.0.1 db\n");
        assert!(tree.join("usr/lib/app/x").exists());
    }
}

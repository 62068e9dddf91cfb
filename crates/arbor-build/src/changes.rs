//! A build sandbox's exported changes made into a clean layer: what the
//! runtime itself wrote at boot is taken out, and overlayfs bookkeeping that
//! only means something on the original mount is stripped.

use crate::error::{Error, Result};
use arbor_node::confined::Dir;
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The only overlayfs attribute a layer keeps: a directory that replaced
/// one below it. (`origin`, `impure`, ... point at the build's own mount.)
const OPAQUE: &str = "trusted.overlay.opaque";

/// The largest boot file the cleaning reads: the runtime's are a few lines.
const MAX_BOOT_FILE: u64 = 1 << 20;

/// Cleans the exported upper dir `tree` of a sandbox that ran on `lower`
/// (layer roots, top first) with hostname `hostname`. Returns whether any
/// change is left.
///
/// The tree and the layers are a tenant's work (links to the host's `/`
/// included), so every lookup in them goes through [`Dir`], which follows
/// no link.
pub fn clean(tree: &Path, lower: &[PathBuf], hostname: &str) -> Result<bool> {
    let lower = lower.iter().map(|l| Dir::open(l)).collect::<std::result::Result<Vec<_>, _>>().map_err(confined)?;
    strip_boot_files(&Dir::open(tree).map_err(confined)?, &lower, hostname)?;
    strip_overlay_xattrs(tree)?;
    // The runtime's mount point for envd, when the image lacks one.
    remove_if_empty_dir(&tree.join(".arbor"))?;
    prune_unchanged_dirs(tree, tree, &lower)?;
    let left = fs::read_dir(tree).map_err(Error::io(format!("listing {}", tree.display())))?.next().is_some();
    Ok(left)
}

fn confined(e: impl Into<arbor_node::Error>) -> Error {
    Error::Node(e.into())
}

/// The status of `rel` as the layers below show it, if any of them has it.
fn lower_stat(lower: &[Dir], rel: &str) -> Result<Option<(usize, fs::Metadata)>> {
    for (i, layer) in lower.iter().enumerate() {
        if let Some(st) = layer.stat(rel).map_err(confined)? {
            return Ok(Some((i, st)));
        }
    }
    Ok(None)
}

fn text(dir: &Dir, name: &str) -> Result<Option<String>> {
    Ok(dir.read(name, MAX_BOOT_FILE).map_err(confined)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// `/etc/hostname`, `/etc/resolv.conf`, the `/etc/mtab` link and the
/// `/etc/hosts` line the runtime writes into every sandbox at boot are the
/// build sandbox's, not the template's.
fn strip_boot_files(tree: &Dir, lower: &[Dir], hostname: &str) -> Result<()> {
    let Some(etc) = tree.subdir("etc").map_err(confined)? else { return Ok(()) };
    if text(&etc, "hostname")?.is_some_and(|s| s == format!("{hostname}\n")) {
        etc.remove("hostname").map_err(confined)?;
    }
    let written = arbor_node::host_resolv_conf();
    if written.is_some() && text(&etc, "resolv.conf")? == written {
        etc.remove("resolv.conf").map_err(confined)?;
    }
    let linked = etc.read_link("mtab").map_err(confined)?.is_some_and(|t| t == Path::new("../proc/self/mounts"));
    if linked && lower_stat(lower, "etc/mtab")?.is_none() {
        etc.remove("mtab").map_err(confined)?;
    }
    let Some(text_now) = text(&etc, "hosts")? else { return Ok(()) };
    let added = format!("127.0.1.1\t{hostname}\n");
    let Some(before) = text_now.strip_suffix(&added) else { return Ok(()) };
    let lower_text = match lower_stat(lower, "etc/hosts")? {
        Some((i, _)) => lower.get(i).map(|l| text(l, "etc/hosts")).transpose()?.flatten(),
        None => None,
    };
    let unchanged =
        lower_text.as_deref() == Some(before) || (lower_text.is_none() && before == "127.0.0.1\tlocalhost\n");
    if unchanged {
        etc.remove("hosts").map_err(confined)?;
    } else {
        let mode = etc.stat("hosts").map_err(confined)?.map_or(0o644, |m| m.mode() & 0o7777);
        etc.replace("hosts", before.as_bytes(), mode).map_err(confined)?;
    }
    Ok(())
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
fn prune_unchanged_dirs(root: &Path, dir: &Path, lower: &[Dir]) -> Result<bool> {
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
    let (Ok(mine), Some((_, theirs))) = (fs::symlink_metadata(dir), lower_stat(lower, &rel)?) else { return Ok(false) };
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

    #[test]
    fn links_in_the_tree_or_the_layers_never_reach_the_host() {
        let d = tempfile::tempdir().unwrap();
        let (lower, tree, host) = (d.path().join("lower"), d.path().join("tree"), d.path().join("host"));
        for p in [lower.clone(), tree.clone(), host.clone()] {
            fs::create_dir_all(p).unwrap();
        }
        // "Host" files the runtime's own cleaning would remove or rewrite
        // if it followed the links.
        fs::write(host.join("hostname"), "sbx-b\n").unwrap();
        fs::write(host.join("hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tsbx-b\n").unwrap();
        std::os::unix::fs::symlink(&host, tree.join("etc")).unwrap();
        std::os::unix::fs::symlink(&host, lower.join("etc")).unwrap();
        clean(&tree, std::slice::from_ref(&lower), "sbx-b").unwrap();
        assert_eq!(fs::read_to_string(host.join("hostname")).unwrap(), "sbx-b\n");
        assert_eq!(fs::read_to_string(host.join("hosts")).unwrap(), "127.0.0.1\tlocalhost\n127.0.1.1\tsbx-b\n");

        // A real /etc whose files are links out: the links go, their targets stay.
        fs::remove_file(tree.join("etc")).unwrap();
        fs::create_dir(tree.join("etc")).unwrap();
        std::os::unix::fs::symlink(host.join("hosts"), tree.join("etc/hosts")).unwrap();
        std::os::unix::fs::symlink(host.join("hostname"), tree.join("etc/hostname")).unwrap();
        clean(&tree, &[lower], "sbx-b").unwrap();
        assert_eq!(fs::read_to_string(host.join("hostname")).unwrap(), "sbx-b\n");
        assert_eq!(fs::read_to_string(host.join("hosts")).unwrap(), "127.0.0.1\tlocalhost\n127.0.1.1\tsbx-b\n");
        assert!(
            fs::symlink_metadata(tree.join("etc/hosts")).unwrap().file_type().is_symlink(),
            "a tenant's link is kept"
        );
    }
}

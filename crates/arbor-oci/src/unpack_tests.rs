//! The escape and whiteout rules of `apply_layer`, on hand-made tar streams (names written raw, since
//! the tar builder itself refuses `..`).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use tar::{EntryType, Header};

use super::apply_layer;
use crate::Error;

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        let (name, kind, link, data) = match e {
            E::Dir(n) => (*n, EntryType::Directory, "", ""),
            E::File(n, d) => (*n, EntryType::Regular, "", *d),
            E::Symlink(n, t) => (*n, EntryType::Symlink, *t, ""),
            E::Hardlink(n, t) => (*n, EntryType::Link, *t, ""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A temp dir with `root/` (the destination) and `outside/` beside it.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("root")).unwrap();
    std::fs::create_dir(t.path().join("outside")).unwrap();
    let root = t.path().join("root");
    (t, root)
}

fn apply(root: &Path, entries: &[E<'_>]) -> crate::Result<()> {
    apply_layer(&layer(entries)[..], root, "sha256:test")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn dotdot_in_names_and_hard_links_is_refused() {
    let (t, root) = setup();
    let err = apply(&root, &[E::File("../outside/evil", "x")]);
    assert!(matches!(err, Err(Error::UnsafeEntry { .. })), "{err:?}");
    let err = apply(&root, &[E::Hardlink("hl", "../outside/evil")]);
    assert!(matches!(err, Err(Error::UnsafeEntry { .. })), "{err:?}");
    assert!(names(&t.path().join("outside")).is_empty());
}

#[test]
fn relative_link_above_the_root_is_refused() {
    let (t, root) = setup();
    apply(&root, &[E::Symlink("up", "../outside")]).unwrap();
    let err = apply(&root, &[E::File("up/pwn", "x")]);
    assert!(matches!(err, Err(Error::UnsafeEntry { .. })), "{err:?}");
    let err = apply(&root, &[E::Hardlink("hl", "up/pwn")]);
    assert!(matches!(err, Err(Error::UnsafeEntry { .. })), "{err:?}");
    assert!(names(&t.path().join("outside")).is_empty());
}

#[test]
fn absolute_link_in_a_parent_resolves_inside_the_root() {
    let (t, root) = setup();
    let outside = t.path().join("outside");
    let target = outside.to_str().unwrap();
    apply(&root, &[E::Symlink("abs", target)]).unwrap();
    apply(&root, &[E::File("abs/x", "inside")]).unwrap();
    assert!(names(&outside).is_empty(), "wrote through an absolute link to the host");
    let landed = root.join(target.trim_start_matches('/')).join("x");
    assert_eq!(std::fs::read_to_string(landed).unwrap(), "inside");
}

#[test]
fn a_file_replaces_a_link_instead_of_writing_through_it() {
    let (t, root) = setup();
    let victim = t.path().join("outside/victim");
    std::fs::write(&victim, "keep").unwrap();
    // A relative link (allowed as data) pointing outside; the next layer writes a file of that name.
    apply(&root, &[E::Symlink("f", "../outside/victim")]).unwrap();
    apply(&root, &[E::File("f", "new")]).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(root.join("f")).unwrap().is_file());
}

#[test]
fn whiteouts_hide_lower_layers_only() {
    let (_t, root) = setup();
    apply(&root, &[E::Dir("d"), E::File("d/a", "1"), E::Dir("d/sub"), E::File("d/sub/old", "1")]).unwrap();
    apply(
        &root,
        &[
            E::File("d/c", "2"),
            E::Dir("d/sub"),
            E::File("d/sub/new", "2"),
            E::File("d/.wh..wh..opq", ""),
            E::File("d/e", "2"),
            E::File("d/.wh.c", ""),
            E::File("d/.wh.missing", ""),
            E::File("nowhere/.wh.x", ""),
        ],
    )
    .unwrap();
    assert_eq!(names(&root.join("d")), ["c", "e", "sub"]);
    assert_eq!(names(&root.join("d/sub")), ["new"]);
    assert!(!root.join("nowhere").exists());
    apply(&root, &[E::File("d/.wh.sub", "")]).unwrap();
    assert_eq!(names(&root.join("d")), ["c", "e"]);
}

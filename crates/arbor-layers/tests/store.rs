//! The layer store on small temp trees: digest determinism, import, verify, refs, removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use arbor_layers::digest::digest_tree;
use arbor_layers::{EnvdConfig, Error, LayerId, LayerStore, RefManifest, REF_SCHEMA};

fn store() -> (tempfile::TempDir, LayerStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path().join("data")).unwrap();
    (dir, store)
}

/// One step of building a test tree.
type Step = fn(&Path);

/// A small root-filesystem-like tree; `reverse` creates the same content in the opposite order
/// (so at other times and, on most filesystems, in another directory order).
fn make_tree(at: &Path, reverse: bool) -> PathBuf {
    let mut steps: Vec<Step> =
        vec![|r| fs::create_dir_all(r.join("etc")).unwrap(), |r| fs::create_dir_all(r.join("usr/bin")).unwrap(), |r| {
            fs::create_dir_all(r.join("home/user")).unwrap()
        }];
    let mut files: Vec<Step> = vec![
        |r| fs::write(r.join("etc/hostname"), "sandbox\n").unwrap(),
        |r| fs::write(r.join("usr/bin/tool"), vec![7u8; 300_000]).unwrap(),
        |r| symlink("usr/bin", r.join("bin")).unwrap(),
        |r| fs::write(r.join("home/user/.bashrc"), "").unwrap(),
    ];
    fs::create_dir_all(at).unwrap();
    if reverse {
        steps.reverse();
        files.reverse();
    }
    steps.iter().chain(&files).for_each(|s| s(at));
    // Fixed modes, whatever the umask.
    let modes = [
        ("", 0o755),
        ("etc", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("home", 0o755),
        ("home/user", 0o755),
        ("etc/hostname", 0o644),
        ("usr/bin/tool", 0o755),
        ("home/user/.bashrc", 0o644),
    ];
    for (path, mode) in modes {
        fs::set_permissions(at.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    at.to_path_buf()
}

fn manifest(layers: Vec<LayerId>) -> RefManifest {
    RefManifest {
        schema: REF_SCHEMA,
        layers,
        created: arbor_layers::now_rfc3339(),
        envd: EnvdConfig {
            version_req: ">=0.1.0".into(),
            mount_point: "/usr/local/bin/arbor-envd".into(),
            default_user: "user".into(),
            default_workdir: "/home/user".into(),
        },
        labels: BTreeMap::from([("suite".into(), "test".into())]),
    }
}

#[test]
fn digest_is_deterministic_and_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_tree(&dir.path().join("a"), false);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = make_tree(&dir.path().join("b"), true);
    let da = digest_tree(&a).unwrap();
    assert_eq!(da, digest_tree(&b).unwrap(), "same content, other order and times");
    assert_eq!(da, digest_tree(&a).unwrap());
    assert_eq!(da.entries, 10);
    assert_eq!(da.bytes, 300_008);

    let changes: [(&str, Step); 6] = [
        ("content", |r| fs::write(r.join("etc/hostname"), "other\n").unwrap()),
        ("mode", |r| fs::set_permissions(r.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap()),
        ("symlink target", |r| {
            fs::remove_file(r.join("bin")).unwrap();
            symlink("usr/sbin", r.join("bin")).unwrap();
        }),
        ("name", |r| fs::rename(r.join("home/user/.bashrc"), r.join("home/user/.profile")).unwrap()),
        ("new empty dir", |r| fs::create_dir(r.join("tmp")).unwrap()),
        ("root mode", |r| fs::set_permissions(r, fs::Permissions::from_mode(0o700)).unwrap()),
    ];
    for (i, (what, change)) in changes.iter().enumerate() {
        let c = make_tree(&dir.path().join(format!("c{i}")), false);
        change(&c);
        assert_ne!(digest_tree(&c).unwrap().id, da.id, "{what} must change the digest");
    }
}

#[test]
fn digest_covers_xattrs_and_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_tree(&dir.path().join("a"), false);
    let before = digest_tree(&a).unwrap().id;
    match xattr::set(a.join("etc/hostname"), "user.arbor", b"1") {
        Ok(()) => assert_ne!(digest_tree(&a).unwrap().id, before, "an xattr must change the digest"),
        Err(e) => eprintln!("notice: user xattrs unsupported here ({e}); xattr part skipped"),
    }
    let b = make_tree(&dir.path().join("b"), false);
    let before = digest_tree(&b).unwrap().id;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&b.join("home/user"), Some(1000.into()), Some(1000.into())).unwrap();
        assert_ne!(digest_tree(&b).unwrap().id, before, "ownership must change the digest");
    } else {
        eprintln!("notice: not root; ownership part skipped");
    }
}

#[test]
fn import_moves_the_tree_in_read_only_and_dedups() {
    let (_dir, store) = store();
    let src = make_tree(&store.tmp_dir().join("build-a"), false);
    let expected = digest_tree(&src).unwrap().id;
    let id = store.import_dir(&src).unwrap();
    assert_eq!(id, expected);
    assert!(!src.exists(), "the tree is moved, not copied");
    let path = store.path(&id).unwrap();
    assert_eq!(fs::read_to_string(path.join("etc/hostname")).unwrap(), "sandbox\n");
    assert_eq!(fs::read_link(path.join("bin")).unwrap(), Path::new("usr/bin"));
    let wrapper = fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(wrapper.permissions().mode() & 0o777, 0o555);
    let info = store.info(&id).unwrap();
    assert_eq!((info.id, info.entries), (id, 10));
    store.verify(&id).unwrap();

    let again = make_tree(&store.tmp_dir().join("build-b"), true);
    assert_eq!(store.import_dir(&again).unwrap(), id);
    assert!(!again.exists());
    assert_eq!(store.list().unwrap(), vec![id]);
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "no staging debris");
}

#[test]
fn concurrent_imports_of_one_tree_make_one_layer() {
    let (_dir, store) = store();
    let trees: Vec<_> = (0..4).map(|i| make_tree(&store.tmp_dir().join(format!("build-{i}")), i % 2 == 0)).collect();
    let ids: Vec<LayerId> = std::thread::scope(|s| {
        let handles: Vec<_> = trees.iter().map(|t| s.spawn(|| store.import_dir(t).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.list().unwrap(), vec![ids[0]]);
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn import_rejects_files_and_other_filesystems() {
    let (dir, store) = store();
    let file = dir.path().join("f");
    fs::write(&file, "x").unwrap();
    assert!(matches!(store.import_dir(&file), Err(Error::NotADirectory(_))));
    let shm = Path::new("/dev/shm");
    let same_fs = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().dev() == fs::metadata(store.root()).unwrap().dev()
    };
    if shm.is_dir() && !same_fs(shm) {
        let tree = tempfile::tempdir_in(shm).unwrap();
        let src = make_tree(&tree.path().join("t"), false);
        assert!(matches!(store.import_dir(&src), Err(Error::CrossDevice { .. })));
        assert!(src.join("etc/hostname").is_file(), "the tree stays where it was");
    } else {
        eprintln!("notice: no second filesystem at /dev/shm; cross-device part skipped");
    }
}

#[test]
fn verify_detects_tampering() {
    let (_dir, store) = store();
    let id = store.import_dir(&make_tree(&store.tmp_dir().join("t"), false)).unwrap();
    let root = store.path(&id).unwrap();
    store.verify(&id).unwrap();

    fs::write(root.join("etc/hostname"), "evil\n").unwrap();
    match store.verify(&id) {
        Err(Error::Tampered { id: got, actual }) => assert!(got == id && actual != id),
        other => panic!("expected Tampered, got {other:?}"),
    }
    fs::write(root.join("etc/hostname"), "sandbox\n").unwrap();
    store.verify(&id).unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert!(matches!(store.verify(&id), Err(Error::Tampered { .. })), "a setuid bit is tampering too");

    // Importing the same content again repairs the tampered copy.
    assert_eq!(store.import_dir(&make_tree(&store.tmp_dir().join("again"), true)).unwrap(), id);
    store.verify(&id).unwrap();
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);

    let missing: LayerId = format!("sha256-{}", "0".repeat(64)).parse().unwrap();
    assert!(matches!(store.verify(&missing), Err(Error::LayerNotFound(_))));
    assert!(matches!(store.path(&missing), Err(Error::LayerNotFound(_))));
}

#[test]
fn refs_round_trip_and_are_checked() {
    let (_dir, store) = store();
    let id = store.import_dir(&make_tree(&store.tmp_dir().join("t"), false)).unwrap();
    let m = manifest(vec![id]);
    store.set_ref("templates/base", &m).unwrap();
    assert_eq!(store.get_ref("templates/base").unwrap(), m);
    assert_eq!(store.list_refs().unwrap(), vec!["templates/base".to_owned()]);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("refs/templates/base.json")).unwrap()).unwrap();
    assert_eq!(json["layers"][0], id.to_string());
    assert_eq!(json["envd"]["default_user"], "user");

    let mut m2 = manifest(vec![id]);
    m2.labels.insert("v".into(), "2".into());
    store.set_ref("templates/base", &m2).unwrap();
    assert_eq!(store.get_ref("templates/base").unwrap().labels["v"], "2");

    let missing: LayerId = format!("sha256-{}", "1".repeat(64)).parse().unwrap();
    assert!(matches!(store.set_ref("x", &manifest(vec![missing])), Err(Error::LayerNotFound(_))));
    assert!(matches!(store.set_ref("../escape", &m), Err(Error::InvalidRefName(_))));
    assert!(matches!(store.get_ref("templates/none"), Err(Error::RefNotFound(_))));
    let mut future = manifest(vec![id]);
    future.schema = REF_SCHEMA + 1;
    assert!(matches!(store.set_ref("y", &future), Err(Error::Schema { .. })));
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn remove_refuses_referenced_layers() {
    let (_dir, store) = store();
    let id = store.import_dir(&make_tree(&store.tmp_dir().join("t"), false)).unwrap();
    store.set_ref("templates/base", &manifest(vec![id])).unwrap();
    store.set_ref("snapshots/s1", &manifest(vec![id])).unwrap();
    match store.remove(&id) {
        Err(Error::InUse { refs, .. }) => assert_eq!(refs, ["snapshots/s1", "templates/base"]),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(store.contains(&id));
    store.remove_ref("templates/base").unwrap();
    store.remove_ref("snapshots/s1").unwrap();
    assert!(matches!(store.remove_ref("snapshots/s1"), Err(Error::RefNotFound(_))));
    store.remove(&id).unwrap();
    assert!(!store.contains(&id));
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(store.remove(&id), Err(Error::LayerNotFound(_))));
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn stale_tmp_entries_of_dead_processes_are_cleaned() {
    let (_dir, store) = store();
    // pid_max is at most 2^22, so this pid cannot be alive.
    let dead = store.tmp_dir().join("import-99999999-0");
    make_tree(&dead.join("rootfs"), false);
    fs::set_permissions(&dead, fs::Permissions::from_mode(0o555)).unwrap();
    let live = store.tmp_dir().join(format!("build-{}-x", std::process::id()));
    fs::create_dir(&live).unwrap();
    fs::create_dir(store.tmp_dir().join("not-ours")).unwrap();
    assert_eq!(store.clean_stale_tmp().unwrap(), 1);
    assert!(!dead.exists());
    assert!(live.exists());
}

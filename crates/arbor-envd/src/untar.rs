//! `arbor-envd untar TAR DEST [--owner USER[:GROUP]] [--mode OCTAL]`: the
//! in-sandbox half of a template build's `COPY`.
//!
//! The build server lays the copied files out as they must appear under
//! `DEST` and uploads that tar into the build sandbox; this unpacks it there.
//! Running inside the sandbox matters: paths and symlinks resolve against
//! the sandbox's root (an image's `/app -> /srv` link is followed inside the
//! image, never on the host), and owner names are the image's own users. It
//! is part of envd because envd is the one binary every sandbox has, whatever
//! its image (no `tar` or `chown` needed in it).

use crate::users::UserDb;
use anyhow::{bail, Context};
use std::{
    fs,
    os::unix::fs::{chown, lchown, PermissionsExt},
    path::{Component, Path, PathBuf},
};

/// The subcommand's name.
pub const COMMAND: &str = "untar";

/// Who gets the files, and with which mode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Options {
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
}

/// Runs the subcommand with `args` (after `untar`); the tar is removed on
/// success.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let (tar, dest, owner, mode) = parse_args(&args)?;
    let users = UserDb::new("/etc");
    let owner = owner.map(|o| resolve_owner(&users, &o)).transpose()?;
    let mode =
        mode.map(|m| u32::from_str_radix(&m, 8).with_context(|| format!("--mode {m:?} is not octal"))).transpose()?;
    unpack(&tar, &dest, Options { owner, mode })?;
    fs::remove_file(&tar).with_context(|| format!("removing {}", tar.display()))?;
    Ok(())
}

type Args = (PathBuf, PathBuf, Option<String>, Option<String>);

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut positional = Vec::new();
    let (mut owner, mut mode) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--owner" => owner = it.next().cloned().filter(|s| !s.is_empty()),
            "--mode" => mode = it.next().cloned().filter(|s| !s.is_empty()),
            _ => positional.push(a),
        }
    }
    match positional.as_slice() {
        [tar, dest] => Ok((PathBuf::from(tar), PathBuf::from(dest), owner, mode)),
        _ => bail!("usage: arbor-envd untar TAR DEST [--owner USER[:GROUP]] [--mode OCTAL]"),
    }
}

/// `user`, `user:group`, `uid:gid` (names or numbers); a user alone gets
/// its primary group, as Docker's `--chown` does.
fn resolve_owner(users: &UserDb, spec: &str) -> anyhow::Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => {
            let u = users.user(user).map_err(|e| anyhow::anyhow!("{e}"))?;
            (u.uid, u.gid)
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => users.group_id(g).map_err(|e| anyhow::anyhow!("{e}"))?,
        },
    };
    Ok((uid, gid))
}

/// Creates the missing directories of `dir` (each given the owner), like `mkdir -p`.
fn make_dirs(dir: &Path, opts: Options) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent, opts)?;
    }
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some((uid, gid)) = opts.owner {
        chown(dir, Some(uid), Some(gid)).with_context(|| format!("chown {}", dir.display()))?;
    }
    Ok(())
}

fn unpack(tar: &Path, dest: &Path, opts: Options) -> anyhow::Result<()> {
    let file = fs::File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    make_dirs(dest, opts)?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    for entry in archive.entries().context("reading the tar")? {
        let mut entry = entry.context("reading the tar")?;
        let rel = entry.path().context("an entry's path")?.into_owned();
        if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            bail!("refusing entry {} (absolute or with ..)", rel.display());
        }
        if let Some(parent) = rel.parent() {
            make_dirs(&dest.join(parent), opts)?;
        }
        // unpack_in also refuses entries that would land outside `dest`.
        if !entry.unpack_in(dest).with_context(|| format!("unpacking {}", rel.display()))? {
            bail!("refusing entry {} (outside the destination)", rel.display());
        }
        let target = dest.join(&rel);
        if let Some((uid, gid)) = opts.owner {
            lchown(&target, Some(uid), Some(gid)).with_context(|| format!("chown {}", target.display()))?;
        }
        if let Some(mode) = opts.mode {
            let meta = fs::symlink_metadata(&target)?;
            if !meta.file_type().is_symlink() {
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("chmod {}", target.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_and_owners() {
        let (t, d, o, m) = parse_args(&s(&["/tmp/a.tar", "/app", "--owner", "user:user", "--mode", "755"])).unwrap();
        assert_eq!((t, d), (PathBuf::from("/tmp/a.tar"), PathBuf::from("/app")));
        assert_eq!((o.as_deref(), m.as_deref()), (Some("user:user"), Some("755")));
        let (_, _, o, m) = parse_args(&s(&["a", "b", "--owner", "", "--mode", ""])).unwrap();
        assert_eq!((o, m), (None, None));
        assert!(parse_args(&s(&["a"])).is_err());

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n")
            .unwrap();
        fs::write(dir.path().join("group"), "root:x:0:\nstaff:x:50:\napp:x:1002:\n").unwrap();
        let db = UserDb::new(dir.path());
        assert_eq!(resolve_owner(&db, "app").unwrap(), (1001, 1002));
        assert_eq!(resolve_owner(&db, "app:staff").unwrap(), (1001, 50));
        assert_eq!(resolve_owner(&db, "7:8").unwrap(), (7, 8));
        assert!(resolve_owner(&db, "nobody").is_err());
        assert!(resolve_owner(&db, "app:nogroup").is_err());
    }

    #[test]
    fn unpacks_with_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("in.tar");
        {
            let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, "sub/f.txt", &b"hi"[..]).unwrap();
            b.finish().unwrap();
        }
        let dest = dir.path().join("out/deep");
        let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        unpack(&tar_path, &dest, Options { owner: Some(me), mode: Some(0o640) }).unwrap();
        let f = dest.join("sub/f.txt");
        assert_eq!(fs::read_to_string(&f).unwrap(), "hi");
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o640);
    }
}

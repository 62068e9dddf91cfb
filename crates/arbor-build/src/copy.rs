//! A COPY step's files: the uploaded context tar (paths relative to the
//! build context) laid out as they must appear under the destination, with
//! Docker's rules: a directory source copies its contents; a file goes to
//! `dest` itself, or into it when `dest` ends with `/` or there are several
//! sources.

use crate::{
    error::{Error, Result},
    scope, unpack,
};
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Where the files go and the tar (uncompressed) that puts them there.
#[derive(Debug)]
pub struct Payload {
    /// The directory to unpack into (absolute, in the sandbox).
    pub dest: String,
    /// A tar of the entries, relative to `dest`.
    pub tar: Vec<u8>,
}

/// Builds the payload of `COPY src dest` from the context tar `archive`,
/// using `scratch` (an empty directory) to unpack it. `dest` is absolute.
///
/// The archive and its symlinks are the client's: the entries are checked
/// before they are written ([`unpack`]) and `src` is resolved inside
/// `scratch` only ([`scope`]), so no host file outside `scratch` is read.
pub fn payload(archive: &Path, src: &str, dest: &str, scratch: &Path) -> Result<Payload> {
    // Unpacked as root with the archive's modes (setuid bits included):
    // no other host user may reach into it meanwhile.
    fs::set_permissions(scratch, fs::Permissions::from_mode(0o700))
        .map_err(Error::io(format!("protecting {}", scratch.display())))?;
    unpack::unpack(archive, scratch)?;
    let matches = scope::sources(scratch, src)?;
    if matches.is_empty() {
        return Err(Error::Invalid(format!("COPY {src}: no such file in the build context")));
    }

    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let append_err = |e: std::io::Error| Error::Io { what: "packing the files".into(), source: e };
    let single_dir = matches.len() == 1 && is_real_dir(&matches[0]);
    let into_dir = dest.ends_with('/') || matches.len() > 1;
    let target = if single_dir || into_dir {
        for m in &matches {
            if single_dir {
                builder.append_dir_all(".", m).map_err(append_err)?;
            } else {
                let name = m.file_name().map(PathBuf::from).unwrap_or_default();
                append(&mut builder, m, &name).map_err(append_err)?;
            }
        }
        dest.trim_end_matches('/').to_string()
    } else {
        let path = Path::new(dest);
        let name = path.file_name().map(PathBuf::from).ok_or_else(|| Error::Invalid(format!("COPY to {dest:?}")))?;
        append(&mut builder, &matches[0], &name).map_err(append_err)?;
        path.parent().map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned())
    };
    let tar = builder.into_inner().map_err(append_err)?;
    Ok(Payload { dest: if target.is_empty() { "/".into() } else { target }, tar })
}

/// A directory and not a link to one (`append_dir_all` would list a link's target).
fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn append(builder: &mut tar::Builder<Vec<u8>>, src: &Path, name: &Path) -> std::io::Result<()> {
    if is_real_dir(src) {
        builder.append_dir_all(name, src)
    } else {
        builder.append_path_with_name(src, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;

    /// One entry of a hand-made archive: any name (`..`, absolute), any type.
    struct E<'a> {
        name: &'a str,
        kind: EntryType,
        /// The content of a file, the target of a link.
        body: &'a str,
    }

    fn file<'a>(name: &'a str, body: &'a str) -> E<'a> {
        E { name, kind: EntryType::Regular, body }
    }

    fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
        E { name, kind: EntryType::Symlink, body: target }
    }

    /// A gzip tar of `entries`, written with raw headers: `tar::Builder`
    /// itself refuses the names an attacker would send.
    fn archive(dir: &Path, entries: &[E]) -> PathBuf {
        let path = dir.join(format!("ctx-{}.tar.gz", fs::read_dir(dir).unwrap().count()));
        let gz = flate2::write::GzEncoder::new(fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            h.set_entry_type(e.kind);
            let data: &[u8] = match e.kind {
                EntryType::Regular => e.body.as_bytes(),
                EntryType::Symlink | EntryType::Link => {
                    h.as_gnu_mut().unwrap().linkname[..e.body.len()].copy_from_slice(e.body.as_bytes());
                    b""
                }
                _ => b"",
            };
            if e.kind == EntryType::Block || e.kind == EntryType::Char {
                h.set_device_major(8).unwrap();
                h.set_device_minor(0).unwrap();
            }
            h.set_size(data.len() as u64);
            h.set_mode(if e.kind == EntryType::Directory { 0o755 } else { 0o644 });
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn context_tar(dir: &Path) -> PathBuf {
        archive(
            dir,
            &[file("app/main.py", "print(1)"), file("app/lib/x.py", "x"), file("a.txt", "a"), file("b.txt", "b")],
        )
    }

    /// A fresh scratch directory two levels below `d` (so that `../../..`
    /// from it is `d`), and `d/secret.txt` beside it, outside.
    fn scratch(d: &Path) -> PathBuf {
        let n = fs::read_dir(d).unwrap().count();
        let s = d.join(format!("w{n}/scratch/s"));
        fs::create_dir_all(&s).unwrap();
        fs::write(d.join("secret.txt"), "host secret").unwrap();
        s
    }

    fn names(p: &Payload) -> Vec<String> {
        let mut a = tar::Archive::new(&p.tar[..]);
        let mut v: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
            .collect();
        v.sort();
        v
    }

    /// (name, content or link target) of each entry of the payload.
    fn contents(p: &Payload) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(&p.tar[..]);
        let mut v = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let body = match e.link_name().unwrap() {
                Some(l) => format!("-> {}", l.display()),
                None => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                    s
                }
            };
            v.push((name, body));
        }
        v
    }

    fn refused(archive: &Path, src: &str, scratch: &Path) -> String {
        match payload(archive, src, "/x", scratch) {
            Ok(p) => panic!("COPY {src} was allowed: {:?}", contents(&p)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn dockers_rules() {
        let d = tempfile::tempdir().unwrap();
        let tar = context_tar(d.path());
        let p = payload(&tar, "app", "/srv/app", &scratch(d.path())).unwrap();
        assert_eq!(p.dest, "/srv/app");
        assert_eq!(names(&p), [".", "lib", "lib/x.py", "main.py"]);
        let p = payload(&tar, "a.txt", "/etc/conf", &scratch(d.path())).unwrap();
        assert_eq!((p.dest.as_str(), names(&p)), ("/etc", vec!["conf".to_string()]));
        let p = payload(&tar, "*.txt", "/data/", &scratch(d.path())).unwrap();
        assert_eq!((p.dest.as_str(), names(&p)), ("/data", vec!["a.txt".to_string(), "b.txt".to_string()]));
        let p = payload(&tar, "./app/lib/", "/opt/", &scratch(d.path())).unwrap();
        assert_eq!((p.dest.as_str(), names(&p)), ("/opt", vec![".".to_string(), "x.py".to_string()]));
        let p = payload(&tar, "app/*/x.py", "/y", &scratch(d.path())).unwrap();
        assert_eq!(contents(&p), [("y".to_string(), "x".to_string())]);
        let p = payload(&tar, "**/*.py", "/py/", &scratch(d.path())).unwrap();
        assert_eq!(names(&p), ["main.py", "x.py"]);
        let p = payload(&tar, ".", "/all", &scratch(d.path())).unwrap();
        assert_eq!(names(&p), [".", "a.txt", "app", "app/lib", "app/lib/x.py", "app/main.py", "b.txt"]);
        // `..` that stays inside is fine, as in Docker.
        let p = payload(&tar, "app/../a.txt", "/a", &scratch(d.path())).unwrap();
        assert_eq!(contents(&p), [("a".to_string(), "a".to_string())]);
        assert!(refused(&tar, "nope", &scratch(d.path())).contains("no such file"));
        assert!(refused(&tar, "a.txt/x", &scratch(d.path())).contains("no such file"));
    }

    #[test]
    fn dot_dot_above_the_context_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let tar = context_tar(d.path());
        for src in ["../../../secret.txt", "app/../../../../secret.txt", "../../../../../../../../etc/passwd", "../*"] {
            let err = refused(&tar, src, &scratch(d.path()));
            assert!(err.contains("outside the build context") && err.contains(src), "{src}: {err}");
        }
    }

    #[test]
    fn a_link_to_the_hosts_root_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let tar = archive(d.path(), &[symlink("link", "/"), file("ok.txt", "ok")]);
        for src in ["link/etc/passwd", "link/etc/", "link/etc/pass*", "link/*"] {
            let err = refused(&tar, src, &scratch(d.path()));
            assert!(err.contains("the symlink link -> / points outside the build context"), "{src}: {err}");
        }
    }

    #[test]
    fn relative_links_that_escape_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        // From `s`, `../../..` is `d`, where `secret.txt` is.
        let tar = archive(
            d.path(),
            &[
                symlink("up", "../../.."),
                symlink("sub/up", "../../../.."),
                symlink("sneaky", "sub/../.."),
                symlink("chain", "up"),
                file("sub/ok.txt", "ok"),
            ],
        );
        for (src, link) in [
            ("up/secret.txt", "up -> ../../.."),
            ("sub/up/secret.txt", "sub/up -> ../../../.."),
            ("sneaky/s/ok.txt", "sneaky -> sub/../.."),
            ("chain/secret.txt", "up -> ../../.."),
        ] {
            let err = refused(&tar, src, &scratch(d.path()));
            assert!(err.contains(&format!("the symlink {link} points outside")), "{src}: {err}");
        }
    }

    #[test]
    fn globs_do_not_pass_escaping_links() {
        let d = tempfile::tempdir().unwrap();
        let tar = archive(d.path(), &[symlink("up", "../../.."), file("sub/secret.txt", "mine")]);
        for src in ["*/secret.txt", "up/*.txt", "u?/secret.txt", "**/secret.txt"] {
            // `**` follows no link, so it finds only the context's own file.
            if src.starts_with("**") {
                let p = payload(&tar, src, "/x", &scratch(d.path())).unwrap();
                assert_eq!(contents(&p), [("x".to_string(), "mine".to_string())]);
                continue;
            }
            let err = refused(&tar, src, &scratch(d.path()));
            assert!(err.contains("the symlink up -> ../../.. points outside"), "{src}: {err}");
        }
    }

    #[test]
    fn links_that_stay_inside_work() {
        let d = tempfile::tempdir().unwrap();
        let tar = archive(
            d.path(),
            &[
                file("app/main.py", "print(1)"),
                file("app/lib/x.py", "x"),
                symlink("inner", "app"),
                symlink("nested/l", "../app/lib"),
                symlink("abs", "/etc/passwd"),
                symlink("loop1", "loop2"),
                symlink("loop2", "loop1"),
            ],
        );
        // Followed on the way, as Docker does.
        let p = payload(&tar, "inner/main.py", "/srv/main.py", &scratch(d.path())).unwrap();
        assert_eq!((p.dest.as_str(), contents(&p)), ("/srv", vec![("main.py".to_string(), "print(1)".to_string())]));
        let p = payload(&tar, "nested/l/", "/lib", &scratch(d.path())).unwrap();
        assert_eq!(names(&p), [".", "x.py"]);
        let p = payload(&tar, "inner/*.py", "/py/", &scratch(d.path())).unwrap();
        assert_eq!(names(&p), ["main.py"]);
        // Last, a link is packed as a link: it resolves inside the sandbox,
        // and an absolute one does not read the host's file.
        let p = payload(&tar, "inner", "/srv/inner", &scratch(d.path())).unwrap();
        assert_eq!(contents(&p), [("inner".to_string(), "-> app".to_string())]);
        let p = payload(&tar, "abs", "/x", &scratch(d.path())).unwrap();
        assert_eq!(contents(&p), [("x".to_string(), "-> /etc/passwd".to_string())]);
        let err = refused(&tar, "loop1/x", &scratch(d.path()));
        assert!(err.contains("too many levels of symlinks"), "{err}");
    }

    #[test]
    fn device_nodes_and_fifos_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (kind, why) in [
            (EntryType::Block, "is a device node"),
            (EntryType::Char, "is a device node"),
            (EntryType::Fifo, "is a FIFO"),
        ] {
            let tar = archive(d.path(), &[file("a.txt", "a"), E { name: "dev/sda", kind, body: "" }]);
            let s = scratch(d.path());
            let err = refused(&tar, "dev/sda", &s);
            assert!(err.contains("\"dev/sda\"") && err.contains(why), "{kind:?}: {err}");
            // Refused before anything is written.
            assert!(!s.join("a.txt").exists());
        }
        let tar = archive(d.path(), &[E { name: "vol", kind: EntryType::new(b'V'), body: "" }]);
        assert!(refused(&tar, "vol", &scratch(d.path())).contains("unsupported type"));
    }

    #[test]
    fn hard_links_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("secret.txt");
        for (target, extra) in [
            ("/etc/passwd", None),
            ("../../../secret.txt", None),
            (outside.to_str().unwrap(), None),
            ("l/passwd", Some(symlink("l", "/etc"))),
            ("l", Some(symlink("l", "/etc/passwd"))),
            ("later.txt", None),
        ] {
            let mut entries: Vec<E> = extra.into_iter().collect();
            entries.push(E { name: "h", kind: EntryType::Link, body: target });
            entries.push(file("later.txt", "x"));
            let tar = archive(d.path(), &entries);
            let err = refused(&tar, "h", &scratch(d.path()));
            assert!(err.contains("entry \"h\" is a hard link to"), "{target}: {err}");
        }
        // To a file of the archive, it works.
        let tar = archive(d.path(), &[file("a.txt", "a"), E { name: "h", kind: EntryType::Link, body: "a.txt" }]);
        let p = payload(&tar, "h", "/h", &scratch(d.path())).unwrap();
        assert_eq!(contents(&p), [("h".to_string(), "a".to_string())]);
    }

    #[test]
    fn entries_cannot_land_outside() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = refused(
            &archive(d.path(), &[symlink("link", out.to_str().unwrap()), file("link/evil.txt", "x")]),
            "link",
            &scratch(d.path()),
        );
        assert!(err.contains("is below the symlink \"link\""), "{err}");
        let err = refused(&archive(d.path(), &[file("../../../escape.txt", "x")]), "escape.txt", &scratch(d.path()));
        assert!(err.contains("has '..' in its path"), "{err}");
        // An absolute name lands inside, as with GNU tar.
        let abs = format!("{}/abs.txt", out.display());
        let s = scratch(d.path());
        let p = payload(&archive(d.path(), &[file(&abs, "inside")]), abs.trim_start_matches('/'), "/a", &s).unwrap();
        assert_eq!(contents(&p), [("a".to_string(), "inside".to_string())]);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing was written outside");
    }

    /// What `tar`'s own `unpack` guarantees, under the checks above: the
    /// same archives, unpacked by it alone, put nothing outside either.
    #[test]
    fn tar_alone_keeps_entries_inside() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o700)).unwrap();
        let out_s = out.to_str().unwrap().to_string();
        let abs = format!("{out_s}/abs.txt");
        let cases: Vec<Vec<E>> = vec![
            vec![symlink("link", &out_s), file("link/evil.txt", "x")],
            vec![file("../../../out/dotdot.txt", "x")],
            vec![file(&abs, "x")],
            vec![E { name: "h", kind: EntryType::Link, body: "/etc/passwd" }],
            vec![symlink("l", "/etc"), E { name: "h", kind: EntryType::Link, body: "l/passwd" }],
            vec![E { name: "sda", kind: EntryType::Block, body: "" }],
            vec![symlink("d", &out_s), E { name: "d", kind: EntryType::Directory, body: "" }],
        ];
        for (i, entries) in cases.iter().enumerate() {
            let s = scratch(d.path());
            let mut t =
                tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(archive(d.path(), entries)).unwrap()));
            let _ = t.unpack(&s);
            assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "case {i} wrote outside");
            // A directory entry over a link to `out` did not chmod it.
            assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o7777, 0o700, "case {i}");
            // A device node comes out as an empty regular file: `tar` never calls mknod.
            if let Ok(m) = fs::symlink_metadata(s.join("sda")) {
                assert!(m.is_file() && m.len() == 0, "case {i}");
            }
        }
        assert!(fs::symlink_metadata("/etc/passwd").unwrap().is_file());
    }
}

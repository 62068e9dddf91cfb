//! A COPY step's files: the uploaded context tar (paths relative to the
//! build context) laid out as they must appear under the destination, with
//! Docker's rules: a directory source copies its contents; a file goes to
//! `dest` itself, or into it when `dest` ends with `/` or there are several
//! sources.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::{
    fs,
    io::Read,
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
pub fn payload(archive: &Path, src: &str, dest: &str, scratch: &Path) -> Result<Payload> {
    let file = fs::File::open(archive).map_err(Error::io(format!("opening {}", archive.display())))?;
    let mut head = [0u8; 2];
    let mut reader: Box<dyn Read> = Box::new(std::io::BufReader::new(file));
    // The SDKs upload gzip; a plain tar works too.
    let n = {
        let mut r = std::io::BufReader::new(fs::File::open(archive).map_err(Error::io("reopening the tar"))?);
        r.read(&mut head).map_err(Error::io("reading the tar"))?
    };
    if n == 2 && head == [0x1f, 0x8b] {
        reader = Box::new(GzDecoder::new(reader));
    }
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(false);
    // `unpack` refuses entries that would land outside `scratch`.
    tar.unpack(scratch).map_err(Error::io("unpacking the uploaded files"))?;

    let pattern = scratch.join(src.trim_start_matches("./").trim_start_matches('/'));
    let pattern = pattern.to_string_lossy().into_owned();
    let mut matches: Vec<PathBuf> = glob::glob(&pattern)
        .map_err(|e| Error::Invalid(format!("COPY source {src:?}: {e}")))?
        .flatten()
        .filter(|p| p.starts_with(scratch))
        .collect();
    matches.sort();
    if matches.is_empty() {
        return Err(Error::Invalid(format!("COPY {src}: no such file in the build context")));
    }

    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let append_err = |e: std::io::Error| Error::Io { what: "packing the files".into(), source: e };
    let single_dir = matches.len() == 1 && matches[0].is_dir() && !matches[0].is_symlink();
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

fn append(builder: &mut tar::Builder<Vec<u8>>, src: &Path, name: &Path) -> std::io::Result<()> {
    if src.is_dir() && !src.is_symlink() {
        builder.append_dir_all(name, src)
    } else {
        builder.append_path_with_name(src, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_tar(dir: &Path) -> PathBuf {
        let path = dir.join("ctx.tar.gz");
        let gz = flate2::write::GzEncoder::new(fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, body) in [("app/main.py", "print(1)"), ("app/lib/x.py", "x"), ("a.txt", "a"), ("b.txt", "b")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
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

    #[test]
    fn dockers_rules() {
        let d = tempfile::tempdir().unwrap();
        let tar = context_tar(d.path());
        let scratch = |n: &str| {
            let s = d.path().join(n);
            fs::create_dir(&s).unwrap();
            s
        };
        let p = payload(&tar, "app", "/srv/app", &scratch("1")).unwrap();
        assert_eq!(p.dest, "/srv/app");
        assert_eq!(names(&p), [".", "lib", "lib/x.py", "main.py"]);
        let p = payload(&tar, "a.txt", "/etc/conf", &scratch("2")).unwrap();
        assert_eq!((p.dest.as_str(), names(&p)), ("/etc", vec!["conf".to_string()]));
        let p = payload(&tar, "*.txt", "/data/", &scratch("3")).unwrap();
        assert_eq!((p.dest.as_str(), names(&p)), ("/data", vec!["a.txt".to_string(), "b.txt".to_string()]));
        assert!(payload(&tar, "nope", "/x", &scratch("4")).is_err());
    }
}

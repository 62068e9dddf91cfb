//! Uploaded COPY files, kept per template: `<root>/<template id>/<hash>/`
//! holds `files.tar` (the bytes as received) and `digest.json` (digests
//! taken while they arrived). A template's build reads only its own
//! uploads, an upload is never replaced, and the bytes are checked against
//! their digest whenever a build reads them.
//!
//! The client's `hash` names the upload but proves nothing: the SDKs hash
//! local `stat` fields that a tar does not carry (directory sizes, uid and
//! gid, sub-second mtimes, depending on the version), so the server cannot
//! recompute it. What the step cache keys on is the digest of the tar
//! itself (decompressed: the Python SDK's gzip header carries the time of
//! the upload), which is also how a repeated upload (the SDKs' `forceUpload`
//! sends the files again although they are present) is told from an
//! attempt to replace them.

use crate::error::{Error, Result};
use flate2::write::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    fs,
    io::{ErrorKind, Read, Write},
    path::{Path, PathBuf},
};

const TAR: &str = "files.tar";
const DIGESTS: &str = "digest.json";

/// Where uploads are kept.
#[derive(Debug, Clone)]
pub struct Uploads {
    root: PathBuf,
}

/// A stored upload, as a build reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The tar (gzip or not), as received.
    pub tar: PathBuf,
    /// The sha256 of its bytes when they were received, hex.
    pub sha256: String,
    /// The sha256 of the tar they hold (decompressed), hex.
    pub tar_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Digests {
    sha256: String,
    tar_sha256: String,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// It is stored now.
    Stored,
    /// The template already had the same tar under this hash: nothing
    /// changed.
    Identical,
    /// The template already had a different tar under this hash: it was
    /// kept, this one dropped.
    Conflict,
}

/// A `Write` that hashes.
#[derive(Debug, Default)]
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of the tar inside the upload, taken as it streams in.
#[derive(Debug)]
enum Content {
    /// Too few bytes yet to tell gzip from a plain tar.
    Head(Vec<u8>),
    Gzip(Box<MultiGzDecoder<HashWriter>>),
    Plain(Sha256),
}

fn not_gzip(e: std::io::Error) -> Error {
    Error::Invalid(format!("the upload is not a valid gzip stream: {e}"))
}

impl Content {
    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        if let Content::Head(head) = self {
            head.extend_from_slice(chunk);
            if head.len() < 2 {
                return Ok(());
            }
            let head = std::mem::take(head);
            *self = if head.starts_with(&[0x1f, 0x8b]) {
                let mut d = Box::new(MultiGzDecoder::new(HashWriter::default()));
                d.write_all(&head).map_err(not_gzip)?;
                Content::Gzip(d)
            } else {
                Content::Plain(Sha256::new_with_prefix(&head))
            };
            return Ok(());
        }
        match self {
            Content::Gzip(d) => d.write_all(chunk).map_err(not_gzip),
            Content::Plain(h) => {
                h.update(chunk);
                Ok(())
            }
            Content::Head(_) => Ok(()),
        }
    }

    fn finish(self) -> Result<String> {
        let digest = match self {
            Content::Head(head) => Sha256::digest(&head),
            Content::Gzip(d) => (*d).finish().map_err(not_gzip)?.0.finalize(),
            Content::Plain(h) => h.finalize(),
        };
        Ok(hex::encode(digest))
    }
}

fn read_digests(dir: &Path) -> Result<Option<Digests>> {
    let path = dir.join(DIGESTS);
    let text = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { what: format!("reading {}", path.display()), source: e }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// An upload being received: bytes go to a private directory that becomes
/// the upload in one rename. Dropped before [`Upload::finish`], it leaves
/// nothing behind.
#[derive(Debug)]
pub struct Upload {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<fs::File>,
    raw: Sha256,
    content: Content,
}

/// Template ids and hashes become path components: only `[A-Za-z0-9]`.
fn component(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::Invalid(format!("{what} {s:?} must be 1-128 alphanumeric characters")));
    }
    Ok(())
}

impl Uploads {
    /// Uploads under `root`.
    pub fn new(root: &Path) -> Uploads {
        Uploads { root: root.to_path_buf() }
    }

    fn dir(&self, template: &str, hash: &str) -> Result<PathBuf> {
        component("template id", template)?;
        component("files hash", hash)?;
        Ok(self.root.join(template).join(hash))
    }

    /// Whether `template` has an upload named `hash`.
    pub fn is_present(&self, template: &str, hash: &str) -> bool {
        self.dir(template, hash).is_ok_and(|d| d.join(DIGESTS).is_file())
    }

    /// Starts receiving the upload `hash` of `template`.
    pub fn begin(&self, template: &str, hash: &str) -> Result<Upload> {
        let dest = self.dir(template, hash)?;
        let parent = self.root.join(template);
        fs::create_dir_all(&parent).map_err(Error::io(format!("creating {}", parent.display())))?;
        let tmp = parent.join(format!(".{hash}.{}", crate::builder::random_hex(8)?));
        fs::create_dir(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let mut upload = Upload { tmp, dest, file: None, raw: Sha256::new(), content: Content::Head(Vec::new()) };
        let path = upload.tmp.join(TAR);
        upload.file = Some(fs::File::create(&path).map_err(Error::io(format!("creating {}", path.display())))?);
        Ok(upload)
    }

    /// The upload `hash` of `template`, if it has one.
    pub fn get(&self, template: &str, hash: &str) -> Result<Option<Stored>> {
        let dir = self.dir(template, hash)?;
        Ok(read_digests(&dir)?.map(|d| Stored { tar: dir.join(TAR), sha256: d.sha256, tar_sha256: d.tar_sha256 }))
    }

    /// Removes every upload of `template`.
    pub fn remove_template(&self, template: &str) -> Result<()> {
        component("template id", template)?;
        let dir = self.root.join(template);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(Error::Io { what: format!("removing {}", dir.display()), source: e })
            }
            _ => Ok(()),
        }
    }
}

impl Stored {
    /// Checks that the tar still holds the bytes that were received.
    pub fn verify(&self) -> Result<()> {
        let mut file = fs::File::open(&self.tar).map_err(Error::io(format!("opening {}", self.tar.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(Error::io(format!("reading {}", self.tar.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex::encode(hasher.finalize());
        if got != self.sha256 {
            return Err(Error::Invalid(format!(
                "the uploaded files changed after they were received (sha256 {got}, recorded {})",
                self.sha256
            )));
        }
        Ok(())
    }
}

impl Upload {
    /// Appends received bytes. [`Error::Invalid`] when they are not gzip
    /// although they began as gzip.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or_else(|| Error::Invalid("the upload is finished".into()))?;
        file.write_all(chunk).map_err(Error::io("storing the upload"))?;
        self.raw.update(chunk);
        self.content.feed(chunk)
    }

    /// Stores the upload, unless one with its template and hash is already
    /// there: the rename of a directory onto a non-empty one fails, so of two
    /// racing uploads exactly one is kept and neither replaces the other.
    pub fn finish(mut self) -> Result<Published> {
        let file = self.file.take().ok_or_else(|| Error::Invalid("the upload is finished".into()))?;
        file.sync_all().map_err(Error::io("storing the upload"))?;
        drop(file);
        let content = std::mem::replace(&mut self.content, Content::Head(Vec::new()));
        let digests =
            Digests { sha256: hex::encode(std::mem::take(&mut self.raw).finalize()), tar_sha256: content.finish()? };
        let json = serde_json::to_vec(&digests).map_err(|e| Error::Invalid(e.to_string()))?;
        fs::write(self.tmp.join(DIGESTS), json).map_err(Error::io("storing the upload's digest"))?;
        match fs::rename(&self.tmp, &self.dest) {
            Ok(()) => Ok(Published::Stored),
            Err(e) if matches!(e.kind(), ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists) => {
                let same = read_digests(&self.dest)?.is_some_and(|d| d.tar_sha256 == digests.tar_sha256);
                Ok(if same { Published::Identical } else { Published::Conflict })
            }
            Err(e) => Err(Error::Io { what: format!("storing {}", self.dest.display()), source: e }),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // After a successful rename `tmp` is gone and this does nothing.
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(u: &Uploads, template: &str, hash: &str, body: &[u8]) -> Published {
        let mut up = u.begin(template, hash).unwrap();
        up.write(body).unwrap();
        up.finish().unwrap()
    }

    #[test]
    fn uploads_are_per_template_and_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let u = Uploads::new(d.path());
        assert!(!u.is_present("t1", "h"));
        assert_eq!(upload(&u, "t1", "h", b"first"), Published::Stored);
        assert!(u.is_present("t1", "h"));
        // Another template's upload of the same hash is its own.
        assert!(!u.is_present("t2", "h"));
        assert_eq!(u.get("t2", "h").unwrap(), None);
        assert_eq!(upload(&u, "t2", "h", b"other"), Published::Stored);
        // A second upload to a present one changes nothing.
        assert_eq!(upload(&u, "t1", "h", b"second"), Published::Conflict);
        assert_eq!(upload(&u, "t1", "h", b"first"), Published::Identical);
        let s1 = u.get("t1", "h").unwrap().unwrap();
        assert_eq!(fs::read(&s1.tar).unwrap(), b"first");
        assert_eq!(s1.sha256, hex::encode(Sha256::digest(b"first")));
        assert_eq!(s1.tar_sha256, s1.sha256, "a plain tar is its own content");
        s1.verify().unwrap();
        assert_eq!(fs::read(u.get("t2", "h").unwrap().unwrap().tar).unwrap(), b"other");
        // Nothing is left of the refused upload, nor of an abandoned one.
        drop(u.begin("t1", "h2").unwrap());
        let names: Vec<String> =
            fs::read_dir(d.path().join("t1")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["h"]);
        u.remove_template("t1").unwrap();
        assert!(!u.is_present("t1", "h") && u.is_present("t2", "h"));
    }

    fn gzip(body: &[u8], mtime: u32) -> Vec<u8> {
        let mut gz = flate2::GzBuilder::new().mtime(mtime).write(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_repeated_gzip_upload_is_told_by_its_tar() {
        let d = tempfile::tempdir().unwrap();
        let u = Uploads::new(d.path());
        // As the Python SDK sends them: a new gzip header time on each upload.
        let (first, again) = (gzip(b"the tar", 1), gzip(b"the tar", 2));
        assert_ne!(first, again);
        assert_eq!(upload(&u, "t", "h", &first), Published::Stored);
        let mut up = u.begin("t", "h").unwrap();
        for byte in &again {
            up.write(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(up.finish().unwrap(), Published::Identical);
        assert_eq!(upload(&u, "t", "h", &gzip(b"another tar", 1)), Published::Conflict);
        let s = u.get("t", "h").unwrap().unwrap();
        assert_eq!(fs::read(&s.tar).unwrap(), first);
        assert_eq!(s.tar_sha256, hex::encode(Sha256::digest(b"the tar")));
        // Not gzip after a gzip magic: refused, and nothing is stored.
        let mut up = u.begin("t", "bad").unwrap();
        let err = up.write(b"\x1f\x8bnot really").and_then(|()| up.finish().map(|_| ())).unwrap_err();
        assert!(err.to_string().contains("not a valid gzip stream"), "{err}");
        assert!(!u.is_present("t", "bad"));
    }

    #[test]
    fn changed_bytes_are_caught() {
        let d = tempfile::tempdir().unwrap();
        let u = Uploads::new(d.path());
        upload(&u, "t", "h", b"as received");
        let s = u.get("t", "h").unwrap().unwrap();
        fs::write(&s.tar, b"swapped later").unwrap();
        let err = s.verify().unwrap_err().to_string();
        assert!(err.contains("changed after they were received"), "{err}");
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let u = Uploads::new(&d.path().join("files"));
        for (t, h) in [("..", "h"), ("t", ".."), ("a/b", "h"), ("t", "x/../../y"), ("", "h"), ("t", "")] {
            assert!(u.begin(t, h).is_err(), "{t:?} {h:?}");
            assert!(!u.is_present(t, h));
        }
        assert!(u.remove_template("..").is_err());
    }
}

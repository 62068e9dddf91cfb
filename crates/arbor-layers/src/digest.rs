//! The content digest that names a layer.
//!
//! The tree is walked depth-first with the entries of each directory in byte order of their names,
//! symlinks never followed. For every entry, the root included (with the empty path), one record is
//! fed to an outer SHA-256, each variable-length field prefixed by its length (u64 LE) so that no
//! two different trees produce the same byte stream:
//!
//! ```text
//! "arbor-layer-v1\0"                                    once, first
//! type (d f l c b p s) | path relative to the root | permission bits (mode & 0o7777, u32 LE) |
//! uid (u32 LE) | gid (u32 LE) | type-specific | xattrs
//!   f: size (u64 LE) and SHA-256 of the content (32 bytes)
//!   l: the link target
//!   c, b: rdev (u64 LE)
//!   d, p, s: nothing
//!   xattrs: count (u32 LE), then (name, value) pairs sorted by name
//! ```
//!
//! Timestamps, inode numbers and hard-link identity are not hashed: they do not change what a
//! sandbox sees, and leaving them out makes the digest reproducible across copies of a tree.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::{Error, LayerId, Result};

const MAGIC: &[u8] = b"arbor-layer-v1\0";

/// What hashing a tree found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeDigest {
    /// The digest, which is the layer's id.
    pub id: LayerId,
    /// Number of entries, the root included.
    pub entries: u64,
    /// Sum of the sizes of regular files.
    pub bytes: u64,
}

/// Hashes the tree at `root` (see the module docs for exactly what).
pub fn digest_tree(root: &Path) -> Result<TreeDigest> {
    let mut outer = Sha256::new();
    outer.update(MAGIC);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut entries, mut bytes) = (0u64, 0u64);
    let walk = WalkDir::new(root).follow_links(false).sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            Error::io("walk", path, e.into())
        })?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| Error::io("stat", path, e.into()))?;
        let rel = path.strip_prefix(root).unwrap_or(path);
        let ft = meta.file_type();
        let tag = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_char_device() {
            b'c'
        } else if ft.is_block_device() {
            b'b'
        } else if ft.is_fifo() {
            b'p'
        } else {
            b's'
        };
        outer.update([tag]);
        put_bytes(&mut outer, rel.as_os_str().as_bytes());
        put_header(&mut outer, &meta);
        match tag {
            b'f' => {
                let (size, sum) = hash_file(path, &mut buf)?;
                outer.update(size.to_le_bytes());
                outer.update(sum);
                bytes += size;
            }
            b'l' => {
                let target = std::fs::read_link(path).map_err(|e| Error::io("read link", path, e))?;
                put_bytes(&mut outer, target.as_os_str().as_bytes());
            }
            b'c' | b'b' => outer.update(meta.rdev().to_le_bytes()),
            _ => {}
        }
        put_xattrs(&mut outer, path)?;
        entries += 1;
    }
    Ok(TreeDigest { id: LayerId::from_digest(outer.finalize().into()), entries, bytes })
}

fn put_bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

fn put_header(h: &mut Sha256, meta: &Metadata) {
    h.update((meta.mode() & 0o7777).to_le_bytes());
    h.update(meta.uid().to_le_bytes());
    h.update(meta.gid().to_le_bytes());
}

/// Hashes a file's content, counting the bytes actually read rather than trusting its stat size.
fn hash_file(path: &Path, buf: &mut [u8]) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, h.finalize().into()))
}

fn put_xattrs(h: &mut Sha256, path: &Path) -> Result<()> {
    // The `xattr` crate's plain functions use the l*xattr calls, so a symlink's own attributes
    // are read, never its target's.
    let mut names: Vec<_> = match xattr::list(path) {
        Ok(names) => names.collect(),
        // A filesystem without xattr support has none to hash.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => Vec::new(),
        Err(e) => return Err(Error::io("list xattrs of", path, e)),
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut pairs = Vec::with_capacity(names.len());
    for name in names {
        // An attribute removed between list and get is simply not there.
        if let Some(value) = xattr::get(path, &name).map_err(|e| Error::io("read xattr of", path, e))? {
            pairs.push((name, value));
        }
    }
    h.update((pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        put_bytes(h, name.as_bytes());
        put_bytes(h, &value);
    }
    Ok(())
}

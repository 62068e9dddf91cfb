//! Unpacking an uploaded build context on the host. The server does it as
//! root, so the archive is checked entry by entry first and anything that
//! could reach outside the scratch directory, or bring a device into a
//! sandbox, is a build error naming the entry.
//!
//! `tar`'s own `unpack` (0.4.46) already keeps entries inside: it drops a
//! leading `/`, skips (silently) entries with `..`, refuses to write
//! through a symlink that leads outside and to hard-link to anything
//! outside, and writes device nodes and FIFOs as empty regular files (it
//! never calls `mknod`). The tests prove each. The checks here make every
//! such case a clear error instead, and refuse in addition what has no
//! place in a context: device nodes, FIFOs, unknown entry types, entries
//! below a symlink of the archive, hard links to anything but a file the
//! archive holds before them.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader, Read},
    path::{Component, Path},
};

/// What an archive put at a path so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

/// The tar at `archive` (gzip or not), decompressed.
fn open(archive: &Path) -> Result<tar::Archive<Box<dyn Read>>> {
    let file = fs::File::open(archive).map_err(Error::io(format!("opening {}", archive.display())))?;
    let mut reader = BufReader::new(file);
    // The SDKs upload gzip; a plain tar works too.
    let gzip = reader.fill_buf().map_err(Error::io("reading the uploaded files"))?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    Ok(tar::Archive::new(reader))
}

/// Unpacks the context tar `archive` into `scratch` (an empty directory)
/// after checking every entry.
pub fn unpack(archive: &Path, scratch: &Path) -> Result<()> {
    check(&mut open(archive)?)?;
    let mut tar = open(archive)?;
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(false);
    tar.set_unpack_xattrs(false);
    tar.unpack(scratch).map_err(Error::io("unpacking the uploaded files"))
}

fn bad(entry: &str, why: &str) -> Error {
    Error::Invalid(format!("the uploaded files are refused: entry {entry:?} {why}"))
}

/// `path` as components inside the context, a leading `/` dropped as
/// `tar` does; `None` when a `..` is in it.
fn inside(path: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Goes through the archive without writing anything.
fn check<R: Read>(tar: &mut tar::Archive<R>) -> Result<()> {
    let mut seen: HashMap<String, Kind> = HashMap::new();
    let entries = tar.entries().map_err(Error::io("reading the uploaded files"))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading the uploaded files"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::File,
            // Metadata of the entries around them; `tar` applies or skips them.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            tar::EntryType::Char | tar::EntryType::Block => return Err(bad(&name, "is a device node")),
            tar::EntryType::Fifo => return Err(bad(&name, "is a FIFO")),
            other => return Err(bad(&name, &format!("has an unsupported type ({:?})", other.as_byte() as char))),
        };
        let path = entry.path().map_err(Error::io("reading the uploaded files"))?;
        let parts = inside(&path).ok_or_else(|| bad(&name, "has '..' in its path"))?;
        // A symlink of the archive on the way would redirect the write.
        for n in 1..parts.len() {
            if seen.get(&parts[..n].join("/")) == Some(&Kind::Symlink) {
                return Err(bad(&name, &format!("is below the symlink {:?}", parts[..n].join("/"))));
            }
        }
        if entry.header().entry_type() == tar::EntryType::Link {
            let target = entry.link_name().map_err(Error::io("reading the uploaded files"))?;
            let target = target.ok_or_else(|| bad(&name, "is a hard link without a target"))?;
            let shown = target.display().to_string();
            let ok = !target.has_root() && inside(&target).is_some_and(|t| seen.get(&t.join("/")) == Some(&Kind::File));
            if !ok {
                return Err(bad(
                    &name,
                    &format!("is a hard link to {shown:?}, which is not a file earlier in the archive (outside the build context?)"),
                ));
            }
        }
        if parts.is_empty() {
            continue;
        }
        seen.insert(parts.join("/"), kind);
    }
    Ok(())
}

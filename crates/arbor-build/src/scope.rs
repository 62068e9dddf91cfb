//! A COPY source resolved inside the unpacked context and nowhere else.
//!
//! The context is the client's: its symlinks may point anywhere on the
//! host. The source is cleaned first (a `..` above the context is an
//! error), then walked one component at a time from the context's root,
//! as the kernel would but with the root as the top: a symlink on the way
//! is followed only while it stays inside (relative, its `..`s not passing
//! the root); one that leads out, absolute or relative, is an error naming
//! it. Globs list only directories reached that way. The last component is
//! not followed (unless the source ends in `/`): a symlink there is packed
//! as a link, which resolves inside the sandbox.

use crate::error::{Error, Result};
use std::{
    collections::VecDeque,
    ffi::OsString,
    fs,
    io::ErrorKind,
    path::{Component, Path, PathBuf},
};

/// Symlinks followed for one match at most, as the kernel's `ELOOP` limit.
const MAX_LINKS: usize = 40;

/// One component still to walk.
#[derive(Debug, Clone)]
enum Part {
    /// A name, literal.
    Name(OsString),
    /// `..` from a symlink's target; the text names the link for errors.
    Up(String),
    /// A glob within one component (`*.py`, `[ab]?`).
    Glob(glob::Pattern),
    /// `**`: any number of directories, none included.
    Any,
}

/// The paths `src` selects in the context unpacked at `root`, sorted.
/// Every ancestor of each, up to `root`, is a real directory inside it; the
/// path itself may be a symlink.
pub fn sources(root: &Path, src: &str) -> Result<Vec<PathBuf>> {
    // Cleaned as Docker cleans it, by the text alone.
    let mut queue = VecDeque::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if queue.pop_back().is_none() {
                    return Err(Error::Invalid(format!("COPY {src}: the source is outside the build context")));
                }
            }
            "**" => queue.push_back(Part::Any),
            p if p.contains(['*', '?', '[']) => {
                let pattern = glob::Pattern::new(p).map_err(|e| Error::Invalid(format!("COPY source {src:?}: {e}")))?;
                queue.push_back(Part::Glob(pattern));
            }
            p => queue.push_back(Part::Name(p.into())),
        }
    }
    // `dir/` resolves `dir` even when it is a link, as a path would.
    let follow_last = src.ends_with('/');
    let mut walk = Walk { root, src, follow_last, out: Vec::new() };
    walk.walk(Vec::new(), queue, 0)?;
    let mut out = walk.out;
    out.sort();
    out.dedup();
    // Belt and braces: what was walked must sit below the root as the
    // kernel resolves it, too.
    let top = fs::canonicalize(root).map_err(Error::io(format!("resolving {}", root.display())))?;
    for p in &out {
        let parent = if p == root { p.as_path() } else { p.parent().unwrap_or(p) };
        let real = fs::canonicalize(parent).map_err(Error::io(format!("resolving {}", parent.display())))?;
        if !real.starts_with(&top) {
            return Err(Error::Invalid(format!("COPY {src}: the source leads outside the build context")));
        }
    }
    Ok(out)
}

struct Walk<'a> {
    root: &'a Path,
    src: &'a str,
    follow_last: bool,
    out: Vec<PathBuf>,
}

impl Walk<'_> {
    fn path(&self, stack: &[OsString]) -> PathBuf {
        let mut p = self.root.to_path_buf();
        p.extend(stack);
        p
    }

    fn rel(stack: &[OsString]) -> String {
        stack.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join("/")
    }

    fn escapes(&self, link: &str) -> Error {
        Error::Invalid(format!("COPY {}: the symlink {link} points outside the build context", self.src))
    }

    /// Walks `queue` from the directory `stack` (components below the root,
    /// each a real directory), adding what matches to `out`.
    fn walk(&mut self, mut stack: Vec<OsString>, mut queue: VecDeque<Part>, mut links: usize) -> Result<()> {
        while let Some(part) = queue.pop_front() {
            let last = queue.is_empty();
            match part {
                Part::Up(link) => {
                    if stack.pop().is_none() {
                        return Err(self.escapes(&link));
                    }
                }
                Part::Name(name) => {
                    stack.push(name);
                    let path = self.path(&stack);
                    let meta = match fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(()),
                        Err(e) => return Err(Error::Io { what: format!("looking up {}", path.display()), source: e }),
                    };
                    if meta.file_type().is_symlink() && (!last || self.follow_last) {
                        links += 1;
                        let target = fs::read_link(&path).map_err(Error::io(format!("reading {}", path.display())))?;
                        let link = format!("{} -> {}", Self::rel(&stack), target.display());
                        if links > MAX_LINKS {
                            return Err(Error::Invalid(format!(
                                "COPY {}: too many levels of symlinks at {link}",
                                self.src
                            )));
                        }
                        stack.pop();
                        let mut parts = Vec::new();
                        for c in target.components() {
                            match c {
                                Component::Normal(n) => parts.push(Part::Name(n.to_os_string())),
                                Component::ParentDir => parts.push(Part::Up(link.clone())),
                                Component::CurDir => {}
                                Component::RootDir | Component::Prefix(_) => return Err(self.escapes(&link)),
                            }
                        }
                        for p in parts.into_iter().rev() {
                            queue.push_front(p);
                        }
                    } else if !last && !meta.is_dir() {
                        return Ok(());
                    }
                }
                Part::Glob(pattern) => {
                    for name in self.list(&stack)? {
                        if pattern.matches(&name.to_string_lossy()) {
                            let mut next = queue.clone();
                            next.push_front(Part::Name(name));
                            self.walk(stack.clone(), next, links)?;
                        }
                    }
                    return Ok(());
                }
                Part::Any => {
                    if last {
                        self.everything_below(&mut stack)?;
                        return Ok(());
                    }
                    self.walk(stack.clone(), queue.clone(), links)?;
                    for name in self.list(&stack)? {
                        let mut below = stack.clone();
                        below.push(name);
                        // Only real directories: `**` follows no link.
                        if fs::symlink_metadata(self.path(&below)).is_ok_and(|m| m.is_dir()) {
                            let mut next = queue.clone();
                            next.push_front(Part::Any);
                            self.walk(below, next, links)?;
                        }
                    }
                    return Ok(());
                }
            }
        }
        self.out.push(self.path(&stack));
        Ok(())
    }

    /// The names in the directory `stack`, sorted.
    fn list(&self, stack: &[OsString]) -> Result<Vec<OsString>> {
        let dir = self.path(stack);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(format!("listing {}", dir.display())))? {
            names.push(entry.map_err(Error::io(format!("listing {}", dir.display())))?.file_name());
        }
        names.sort();
        Ok(names)
    }

    /// Everything below the directory `stack` (a final `**`), following no link.
    fn everything_below(&mut self, stack: &mut Vec<OsString>) -> Result<()> {
        for name in self.list(stack)? {
            stack.push(name);
            let path = self.path(stack);
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            self.out.push(path);
            if is_dir {
                self.everything_below(stack)?;
            }
            stack.pop();
        }
        Ok(())
    }
}

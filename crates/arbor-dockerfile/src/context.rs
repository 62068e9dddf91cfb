//! The build context: which files a COPY source selects (globs,
//! `.dockerignore`), their hash for the server's layer cache, and the gzip
//! tar the server unpacks (template-api.md §2).

use crate::error::{Error, Result};
use crate::ignore::IgnoreRules;
use flate2::{write::GzEncoder, Compression};
use globset::GlobBuilder;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// A directory whose files COPY instructions read.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    ignore: IgnoreRules,
}

/// One file, directory or symlink of the context selected by a COPY source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// `/`-separated path relative to the context (`.` for the context itself).
    pub rel: String,
    /// Where it is on disk.
    pub path: PathBuf,
}

impl BuildContext {
    /// The context at `root`, with its `.dockerignore` if it has one.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "build context is not a directory");
            return Err(Error::Io { path: root.to_path_buf(), source });
        }
        Ok(Self { root: root.to_path_buf(), ignore: IgnoreRules::read(root)? })
    }

    /// The context's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entries `src` (a path or glob relative to the context) selects, a
    /// selected directory with everything below it, sorted by path. The
    /// error is a message for the COPY line.
    pub fn select(&self, src: &str) -> Result<Vec<ContextFile>, String> {
        let norm = relative_source(src)?;
        let whole = norm.is_empty();
        let glob = if !whole && norm.contains(['*', '?', '[']) {
            let g = GlobBuilder::new(&norm)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("bad source pattern {src:?}: {}", e.kind()))?;
            Some(g.compile_matcher())
        } else {
            None
        };
        let mut out = Vec::new();
        if whole {
            out.push(ContextFile { rel: ".".into(), path: self.root.clone() });
        }
        let mut dirs: Vec<String> = Vec::new();
        let prune = !self.ignore.has_exceptions();
        let walk = WalkDir::new(&self.root).follow_links(false).min_depth(1).sort_by_file_name();
        let walk =
            walk.into_iter().filter_entry(|e| !(prune && self.ignore.is_excluded(&rel_of(&self.root, e.path()))));
        for entry in walk {
            let entry = entry.map_err(|e| format!("cannot read the build context: {e}"))?;
            let rel = rel_of(&self.root, entry.path());
            if self.ignore.is_excluded(&rel) {
                continue;
            }
            let ft = entry.file_type();
            if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
                continue;
            }
            let selected = whole
                || dirs
                    .iter()
                    .any(|d| rel.len() > d.len() && rel.starts_with(d.as_str()) && rel.as_bytes()[d.len()] == b'/')
                || match &glob {
                    Some(g) => g.is_match(&rel),
                    None => rel == norm,
                };
            if !selected {
                continue;
            }
            if ft.is_dir() {
                dirs.push(rel.clone());
            }
            out.push(ContextFile { rel, path: entry.into_path() });
        }
        if out.is_empty() {
            return Err(format!("no files in the build context match {src:?}"));
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// The SDK's `filesHash` of `COPY src dest`: sha256 over the instruction,
    /// then each entry's path, mode and size, and its content (regular files)
    /// or link target (symlinks). Owners and times are left out so that the
    /// hash is the same on every machine.
    pub fn files_hash(&self, src: &str, dest: &str, files: &[ContextFile]) -> Result<String> {
        let mut h = Sha256::new();
        h.update(format!("COPY {src} {dest}").as_bytes());
        for f in files {
            h.update(f.rel.as_bytes());
            let io = |source| Error::Io { path: f.path.clone(), source };
            let meta = std::fs::symlink_metadata(&f.path).map_err(io)?;
            h.update(meta.mode().to_string().as_bytes());
            h.update(meta.size().to_string().as_bytes());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&f.path).map_err(io)?;
                h.update(target.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                let mut file = std::fs::File::open(&f.path).map_err(io)?;
                std::io::copy(&mut file, &mut h).map_err(io)?;
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// A gzip tar of `files` under their context-relative paths, directories
    /// as entries of their own, symlinks kept as links, modes and times kept.
    pub fn tar_gz(&self, files: &[ContextFile]) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        for f in files {
            // The context itself is where the server unpacks: no entry needed.
            if f.rel == "." {
                continue;
            }
            tar.append_path_with_name(&f.path, &f.rel).map_err(|source| Error::Io { path: f.path.clone(), source })?;
        }
        let io = |source| Error::Io { path: self.root.clone(), source };
        tar.into_inner().map_err(io)?.finish().map_err(io)
    }
}

/// Checks that a COPY source stays inside the context and returns it
/// cleaned (`""` for the context itself).
fn relative_source(src: &str) -> Result<String, String> {
    if src.starts_with('/') {
        return Err(format!("COPY source {src:?} is absolute: sources are relative to the build context"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("COPY source {src:?} is outside the build context"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn rel_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn ctx(files: &[(&str, &str)], ignore: &str) -> (tempfile::TempDir, BuildContext) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        if !ignore.is_empty() {
            std::fs::write(dir.path().join(".dockerignore"), ignore).unwrap();
        }
        let c = BuildContext::open(dir.path()).unwrap();
        (dir, c)
    }

    fn rels(files: &[ContextFile]) -> Vec<&str> {
        files.iter().map(|f| f.rel.as_str()).collect()
    }

    const TREE: &[(&str, &str)] = &[
        ("app/main.py", "print(1)"),
        ("app/lib/util.py", "x=1"),
        ("app/x.log", "log"),
        ("req.txt", "flask"),
        ("a-b", ""),
    ];

    #[test]
    fn literal_paths_directories_and_the_whole_context() {
        let (_d, c) = ctx(TREE, "");
        assert_eq!(rels(&c.select("req.txt").unwrap()), ["req.txt"]);
        assert_eq!(rels(&c.select("./app/lib/").unwrap()), ["app/lib", "app/lib/util.py"]);
        assert_eq!(
            rels(&c.select(".").unwrap()),
            [".", "a-b", "app", "app/lib", "app/lib/util.py", "app/main.py", "app/x.log", "req.txt"]
        );
        assert!(c.select("missing").unwrap_err().contains("no files"));
        assert!(c.select("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(c.select("app/../../x").unwrap_err().contains("outside"));
        assert_eq!(rels(&c.select("app/../req.txt").unwrap()), ["req.txt"]);
    }

    #[test]
    fn globs() {
        let (_d, c) = ctx(TREE, "");
        assert_eq!(rels(&c.select("*.txt").unwrap()), ["req.txt"]);
        assert_eq!(rels(&c.select("app/*.py").unwrap()), ["app/main.py"]);
        assert_eq!(rels(&c.select("**/*.py").unwrap()), ["app/lib/util.py", "app/main.py"]);
        assert_eq!(rels(&c.select("ap?/l*").unwrap()), ["app/lib", "app/lib/util.py"]);
    }

    #[test]
    fn dockerignore_applies() {
        let (_d, c) = ctx(TREE, "*.log\n**/*.log\napp/lib\n");
        assert_eq!(rels(&c.select("app").unwrap()), ["app", "app/main.py"]);
        let (_d, c) = ctx(TREE, "app\n!app/main.py\n");
        assert_eq!(rels(&c.select(".").unwrap()), [".", ".dockerignore", "a-b", "app/main.py", "req.txt"]);
    }

    #[test]
    fn hash_is_stable_and_sees_content_mode_and_names() {
        let (d, c) = ctx(TREE, "");
        let files = c.select("app").unwrap();
        let h1 = c.files_hash("app", "/srv/", &files).unwrap();
        assert_eq!(h1.len(), 64);
        assert_eq!(h1, c.files_hash("app", "/srv/", &c.select("app").unwrap()).unwrap());
        assert_ne!(h1, c.files_hash("app", "/opt/", &files).unwrap(), "the destination is part of it");
        std::fs::write(d.path().join("app/main.py"), "print(2)").unwrap();
        let h2 = c.files_hash("app", "/srv/", &files).unwrap();
        assert_ne!(h1, h2);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path().join("app/main.py"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h2, c.files_hash("app", "/srv/", &files).unwrap());
    }

    #[test]
    fn tarball_holds_relative_paths_dirs_and_links() {
        let (d, c) = ctx(TREE, "");
        std::os::unix::fs::symlink("main.py", d.path().join("app/link.py")).unwrap();
        let files = c.select("app").unwrap();
        let gz = c.tar_gz(&files).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut seen = Vec::new();
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
            let kind = e.header().entry_type();
            let mut body = String::new();
            if kind.is_symlink() {
                body = e.link_name().unwrap().unwrap().to_string_lossy().into_owned();
            } else {
                e.read_to_string(&mut body).unwrap();
            }
            seen.push((path, body));
        }
        let want = [
            ("app", ""),
            ("app/lib", ""),
            ("app/lib/util.py", "x=1"),
            ("app/link.py", "main.py"),
            ("app/main.py", "print(1)"),
            ("app/x.log", "log"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(seen, want);
        // The whole context: no entry for "." itself.
        let gz = c.tar_gz(&c.select(".").unwrap()).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let first = tar.entries().unwrap().next().unwrap().unwrap().path().unwrap().into_owned();
        assert_eq!(first, Path::new("a-b"));
    }
}

//! Small helpers over cgroupfs files: read, write, parse, rmdir with retry.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Reads a whole cgroupfs file.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

/// Writes `value` in one `write(2)`: cgroupfs acts on each write call, so no buffering or
/// truncation games (the file exists; O_CREAT is not wanted).
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open", path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| Error::io("write", path, e))
}

/// Reads a file holding one unsigned number.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read(path)?;
    parse_u64(path, text.trim())
}

/// Reads a file holding a number or `max` (None).
pub(crate) fn read_max(path: &Path) -> Result<Option<u64>> {
    let text = read(path)?;
    match text.trim() {
        "max" => Ok(None),
        s => parse_u64(path, s).map(Some),
    }
}

pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    s.parse().map_err(|_| Error::Parse { path: path.to_path_buf(), what: format!("expected a number, got {s:?}") })
}

/// Finds `key` in a flat-keyed file (`key value` per line: memory.events, cpu.stat,
/// memory.oom_control, cgroup.events).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Reads `key` from a flat-keyed file; a missing key is a parse error.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<u64> {
    let text = read(path)?;
    keyed(&text, key).ok_or_else(|| Error::Parse { path: path.to_path_buf(), what: format!("no `{key}` entry") })
}

/// Parses a `cgroup.procs` listing.
pub(crate) fn parse_pids(path: &Path, text: &str) -> Result<Vec<i32>> {
    text.split_whitespace()
        .map(|s| s.parse().map_err(|_| Error::Parse { path: path.to_path_buf(), what: format!("bad pid {s:?}") }))
        .collect()
}

/// Child cgroup directories of `dir` (cgroupfs has no other directories). A missing `dir` has none.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let is_dir = entry.file_type().map_err(|e| Error::io("stat", entry.path(), e))?.is_dir();
        if is_dir {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Members of `dir` and of every cgroup below it (a sandbox may have made its own sub-cgroups).
/// A cgroup that vanishes meanwhile counts as empty.
pub(crate) fn pids_recursive(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(text) => out.extend(parse_pids(&procs, &text)?),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", procs, e)),
    }
    for child in child_dirs(dir)? {
        pids_recursive(&child, out)?;
    }
    Ok(())
}

/// How long rmdir keeps retrying on EBUSY: dying tasks leave a cgroup a little after SIGKILL.
const RMDIR_PATIENCE: Duration = Duration::from_secs(2);

/// Removes `dir` and every cgroup below it, deepest first. Missing is success.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<()> {
    for child in child_dirs(dir)? {
        rmdir_tree(&child)?;
    }
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) && start.elapsed() < RMDIR_PATIENCE => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(Error::io("rmdir", dir, e)),
        }
    }
}

/// mkdir that treats "already there" as success; returns whether it created the directory.
pub(crate) fn mkdir_existing_ok(dir: &Path) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("mkdir", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_finds_exact_keys() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(text, "oom_kill"), Some(3));
        assert_eq!(keyed(text, "under_oom"), Some(0));
        assert_eq!(keyed(text, "oom"), None);
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
    }

    #[test]
    fn pids_parse() {
        let p = Path::new("x");
        assert_eq!(parse_pids(p, "1\n22\n333\n").ok(), Some(vec![1, 22, 333]));
        assert_eq!(parse_pids(p, "").ok(), Some(vec![]));
        assert!(parse_pids(p, "1\nx\n").is_err());
    }
}

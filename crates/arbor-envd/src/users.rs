//! OS users and groups, read from `/etc/passwd` and `/etc/group`.
//!
//! envd is linked statically, so glibc's NSS (`getpwnam`) is unavailable;
//! the files are small and parsed on every lookup, which keeps envd correct
//! after a template build adds users and costs microseconds.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A resolved OS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
    /// Supplementary group IDs (including the primary one).
    pub groups: Vec<u32>,
}

/// Where user and group databases live (`/etc` in a sandbox; tests point it
/// at a directory of their own).
#[derive(Debug, Clone)]
pub struct UserDb {
    etc: PathBuf,
}

impl UserDb {
    /// A database reading `<etc>/passwd` and `<etc>/group`.
    pub fn new(etc: impl Into<PathBuf>) -> Self {
        Self { etc: etc.into() }
    }

    fn read(&self, file: &str) -> Result<String> {
        let path = self.etc.join(file);
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    /// Looks a user up by name.
    pub fn user(&self, name: &str) -> Result<User> {
        let passwd = self.read("passwd")?;
        let entry = parse_passwd(&passwd)
            .find(|u| u.name == name)
            .ok_or_else(|| Error::Unauthenticated(format!("user '{name}' does not exist in this sandbox")))?;
        let groups_file = self.read("group").unwrap_or_default();
        let mut groups = vec![entry.gid];
        for g in parse_group(&groups_file) {
            if g.members.contains(&name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        Ok(User { groups, ..entry })
    }

    /// Name of the user with this UID, or the number as text.
    pub fn user_name(&self, uid: u32) -> String {
        self.read("passwd")
            .ok()
            .and_then(|p| parse_passwd(&p).find(|u| u.uid == uid).map(|u| u.name))
            .unwrap_or_else(|| uid.to_string())
    }

    /// The GID of the group with this name.
    pub fn group_id(&self, name: &str) -> Result<u32> {
        let group = self.read("group")?;
        let gid = parse_group(&group).find(|g| g.name == name).map(|g| g.gid);
        gid.ok_or_else(|| Error::InvalidArgument(format!("group '{name}' does not exist in this sandbox")))
    }

    /// Name of the group with this GID, or the number as text.
    pub fn group_name(&self, gid: u32) -> String {
        self.read("group")
            .ok()
            .and_then(|g| parse_group(&g).find(|e| e.gid == gid).map(|e| e.name.to_string()))
            .unwrap_or_else(|| gid.to_string())
    }

    /// A lookup table for naming many owners at once (directory listings).
    pub fn names(&self) -> NameCache {
        let passwd = self.read("passwd").unwrap_or_default();
        let group = self.read("group").unwrap_or_default();
        NameCache {
            users: parse_passwd(&passwd).map(|u| (u.uid, u.name)).collect(),
            groups: parse_group(&group).map(|g| (g.gid, g.name.to_string())).collect(),
        }
    }
}

/// UID/GID → name tables read once.
#[derive(Debug, Default, Clone)]
pub struct NameCache {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl NameCache {
    /// Name of a UID, or the number as text.
    pub fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
    /// Name of a GID, or the number as text.
    pub fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or_else(|| gid.to_string())
    }
}

fn parse_passwd(text: &str) -> impl Iterator<Item = User> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(if f[5].is_empty() { "/" } else { f[5] }),
            shell: f[6].to_string(),
            groups: Vec::new(),
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_group(text: &str) -> impl Iterator<Item = GroupEntry<'_>> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default(),
        })
    })
}

/// Resolves a path the SDK sent: `~` and relative paths are taken from the
/// user's home directory, as upstream envd does.
pub fn resolve_path(user: &User, path: &str) -> PathBuf {
    let p = if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        user.home.join(path)
    };
    normalize(&p)
}

/// Lexically removes `.` and `..` so reported paths are canonical-looking
/// without following symlinks.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, UserDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nuser:x:1000:1000::/home/user:/bin/bash\nbroken:line\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nuser:x:1000:\nsudo:x:27:user,other\n").unwrap();
        let db = UserDb::new(dir.path());
        (dir, db)
    }

    #[test]
    fn looks_up_users_and_groups() {
        let (_d, db) = db();
        let u = db.user("user").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_path()), (1000, 1000, Path::new("/home/user")));
        assert_eq!(u.groups, vec![1000, 27]);
        assert_eq!(db.user_name(0), "root");
        assert_eq!(db.group_name(27), "sudo");
        assert_eq!(db.group_name(4242), "4242");
        assert!(matches!(db.user("nobody-here"), Err(Error::Unauthenticated(_))));
    }

    #[test]
    fn resolves_relative_and_home_paths() {
        let (_d, db) = db();
        let u = db.user("user").unwrap();
        assert_eq!(resolve_path(&u, "a/b"), PathBuf::from("/home/user/a/b"));
        assert_eq!(resolve_path(&u, "~/x"), PathBuf::from("/home/user/x"));
        assert_eq!(resolve_path(&u, "/tmp/../etc/./x"), PathBuf::from("/etc/x"));
        assert_eq!(resolve_path(&u, "~"), PathBuf::from("/home/user"));
    }
}

//! CRIU as the checkpoint engine: finding the binary, what to tell it about a
//! sandbox, and its command lines (docs/checkpoint.md is the recipe).
//!
//! CRIU is driven through its command line rather than its RPC socket
//! (`rust-criu`): the RPC bindings carry neither external namespaces
//! (`--external net[...]`), `--inherit-fd`, nor `--network-lock`, all of
//! which a sandbox with a network kept by the node needs.

use crate::{
    checkpoint::ExternalMount,
    error::{Error, Result},
};
use std::{
    ffi::OsString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where a CRIU >= 4 is looked for when `ARBOR_CRIU` does not say.
const CANDIDATES: [&str; 2] = ["/usr/local/sbin/criu", "/usr/sbin/criu"];
/// The file descriptor the restore gets the network namespace on.
pub const NETNS_FD: i32 = 9;
/// CRIU's name for the sandbox's network namespace in its images.
const NET_KEY: &str = "net";

/// The CRIU binary: `$ARBOR_CRIU`, else the one `scripts/build-criu.sh`
/// installs, else Debian's.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ARBOR_CRIU") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// One line of `/proc/<pid>/mountinfo`.
struct MountLine {
    dev: String,
    root: String,
    point: String,
}

fn mountinfo(pid: &str) -> Result<Vec<MountLine>> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(MountLine { dev: f.get(2)?.to_string(), root: unescape(f.get(3)?), point: unescape(f.get(4)?) })
        })
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// A mount to declare at the dump: where it is in the sandbox, and how to
/// map it back at the restore.
pub struct External {
    /// Its mount point inside the sandbox.
    pub point: String,
    /// Key and host source.
    pub mount: ExternalMount,
}

/// The sandbox's bind mounts whose source lies outside it (device nodes,
/// envd, the `/proc` masks): CRIU cannot recreate those from its images. A
/// mount is internal when its file system is mounted whole (root `/`)
/// somewhere in the sandbox, as the overlay, `/proc` and the tmpfs are.
pub fn external_mounts(init_pid: u32) -> Result<Vec<External>> {
    let sandbox = mountinfo(&init_pid.to_string())?;
    let host = mountinfo("self")?;
    let whole: Vec<&str> = sandbox.iter().filter(|m| m.root == "/").map(|m| m.dev.as_str()).collect();
    sandbox
        .iter()
        .filter(|m| !whole.contains(&m.dev.as_str()))
        .map(|m| {
            // Its host path: where the host mounts that file system whole,
            // joined with the mount's root in it.
            let host_point = host
                .iter()
                .find(|h| h.dev == m.dev && h.root == "/")
                .ok_or_else(|| Error::Checkpoint(format!("no host mount of {} (the source of {})", m.dev, m.point)))?;
            let source = Path::new(&host_point.point).join(m.root.trim_start_matches('/'));
            let key = format!("ext{}", m.point.replace('/', "-"));
            Ok(External { point: m.point.clone(), mount: ExternalMount { key, source } })
        })
        .collect()
}

/// Arguments of `criu dump` for the tree of `init_pid`, frozen through the
/// freezer at `freezer`.
pub fn dump_args(
    init_pid: u32,
    images: &Path,
    freezer: &Path,
    externals: &[External],
    leave_running: bool,
) -> Result<Vec<OsString>> {
    let ns = format!("/proc/{init_pid}/ns/net");
    let net_inode = std::fs::metadata(&ns).map_err(Error::io("reading", &ns))?.ino();
    let mut args: Vec<OsString> = ["dump", "--tree", &init_pid.to_string(), "--images-dir"].map(Into::into).into();
    args.push(images.into());
    // Connections open at the checkpoint are kept (`--tcp-established`), as a
    // VM snapshot keeps them: the ones inside the sandbox (a kernel and its
    // client, an app and its database on localhost) go on working after a
    // resume and in every clone. Those to the host or the internet find their
    // peer gone and end with its reset on their next packet.
    // File locks (flock/fcntl: IPython's history database, Deno's caches) are
    // dumped with their holders; that is safe because a sandbox is a closed
    // world (own mount and pid namespaces): no lock holder is left outside.
    args.extend(
        [
            "--log-file",
            "dump.log",
            "--network-lock",
            "skip",
            "--manage-cgroups=ignore",
            "--tcp-established",
            "--file-locks",
        ]
        .map(OsString::from),
    );
    args.push("--freeze-cgroup".into());
    args.push(freezer.into());
    args.push(format!("--external=net[{net_inode}]:{NET_KEY}").into());
    if leave_running {
        args.push("--leave-running".into());
    }
    for e in externals {
        args.push(format!("--external=mnt[{}]:{}", e.point, e.mount.key).into());
    }
    Ok(args)
}

/// Arguments of `criu restore` of `images` at `rootfs`, writing the new
/// PID 1's host pid to `pidfile`.
pub fn restore_args(images: &Path, rootfs: &Path, pidfile: &Path, externals: &[ExternalMount]) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["restore", "--images-dir"].map(Into::into).into();
    args.push(images.into());
    args.extend(
        [
            "--log-file",
            "restore.log",
            "--restore-detached",
            "--manage-cgroups=ignore",
            "--tcp-established",
            "--file-locks",
            "--pidfile",
        ]
        .map(OsString::from),
    );
    args.push(pidfile.into());
    args.push("--root".into());
    args.push(rootfs.into());
    args.push(format!("--inherit-fd=fd[{NETNS_FD}]:{NET_KEY}").into());
    for e in externals {
        args.push(format!("--external=mnt[{}]:{}", e.key, e.source.display()).into());
    }
    args
}

/// The last lines of a CRIU log, for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error") || l.contains("error")).collect();
    let lines: Vec<&str> = if errors.is_empty() { text.lines().collect() } else { errors };
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Bytes of the images in `dir` (logs left out).
pub fn images_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_maps_every_external_key_and_inherits_the_netns() {
        let externals = [ExternalMount { key: "ext-dev-null".into(), source: "/dev/null".into() }];
        let args = restore_args(Path::new("/i"), Path::new("/r"), Path::new("/p"), &externals);
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[..3], ["restore", "--images-dir", "/i"]);
        for want in [
            "--restore-detached",
            "--tcp-established",
            "--file-locks",
            "--inherit-fd=fd[9]:net",
            "--external=mnt[ext-dev-null]:/dev/null",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing from {args:?}");
        }
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}

//! Named network namespaces and running work inside a given namespace.
//!
//! A namespace is kept alive without any process in it by bind-mounting its nsfs file onto a
//! regular file (as `ip netns add` does), so the runtime can later `setns` a sandbox's first
//! process into it through that path.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Opens the network namespace of the calling thread.
pub(crate) fn current() -> Result<OwnedFd> {
    // thread-self, not self: in a multi-threaded process only the calling thread is known to be
    // in the namespace the caller means.
    let file = fs::File::open("/proc/thread-self/ns/net").map_err(|e| Error::io("open /proc/thread-self/ns/net", e))?;
    Ok(file.into())
}

/// Opens a pinned namespace.
pub(crate) fn open(path: &Path) -> Result<OwnedFd> {
    let file = fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    Ok(file.into())
}

/// Runs `f` on a fresh thread that has joined the network namespace `ns`.
///
/// A fresh thread, because a thread that switched namespaces must never go back to a pool where
/// unrelated work would run in the wrong namespace.
pub(crate) async fn run_in<T, F>(ns: &Arc<OwnedFd>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = Arc::clone(ns);
    spawn(move || {
        setns(&*ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::io("setns(net)", e))?;
        f()
    })
    .await
}

/// Creates a new network namespace, pins it at `path`, tells `pinned` (if given), and runs `f`
/// inside it.
///
/// The file at `path` must not exist. If `f` fails the namespace stays pinned; the caller
/// removes it with [`remove`] like any other half-built sandbox network.
pub(crate) async fn create<T, F>(path: PathBuf, pinned: Option<Pinned>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::io("unshare(CLONE_NEWNET)", e))?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        mount(Some("/proc/thread-self/ns/net"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| Error::io(format!("bind-mount netns onto {}", path.display()), e))?;
        if let Some(pinned) = pinned {
            // Nobody listening any more is the listener's business.
            let _ = pinned.send(());
        }
        f()
    })
    .await
}

/// Told once a new namespace is pinned, before its links exist: a process can join it then.
pub type Pinned = tokio::sync::oneshot::Sender<()>;

/// Unpins a namespace; it disappears once no process and no open file holds it.
/// A path that is missing or not mounted is not an error.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::io(format!("unmount {}", path.display()), e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// Names of the entries of the namespace directory (missing directory = none).
pub(crate) fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

async fn spawn<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("arbor-net-ns".into())
        .spawn(move || {
            // The receiver only goes away if the caller's future was dropped; nobody waits then.
            let _ = tx.send(f());
        })
        .map_err(|e| Error::io("spawn namespace thread", e))?;
    rx.await.map_err(|_| Error::io("namespace thread", io::Error::other("thread panicked")))?
}

//! Running file operations with a user's file-system credentials.
//!
//! Linux keeps the file-system UID/GID and the supplementary groups per
//! thread. Switching them on a blocking-pool thread for the length of one
//! operation makes the kernel do the permission checks (a `user` cannot read
//! `/root`) and gives created files the right owner, without forking. The raw
//! `setgroups` syscall is used on purpose: glibc's wrapper would apply it to
//! every thread of the process.

use crate::{
    error::{Error, Result},
    users::User,
};

/// Runs `op` on a blocking thread with `user`'s file-system credentials.
pub async fn run_as<T, F>(user: &User, op: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
    tokio::task::spawn_blocking(move || {
        let _guard = Switched::to(uid, gid, &groups)?;
        op()
    })
    .await
    .map_err(|e| Error::Internal(format!("file operation task failed: {e}")))?
}

/// Credentials switched on the current thread; restored on drop.
struct Switched {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    active: bool,
}

impl Switched {
    fn to(uid: u32, gid: u32, groups: &[u32]) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 || uid == euid {
            // Not root: the kernel already checks as envd's own user, and
            // there is nothing to switch to.
            return Ok(Self { uid, gid, groups: Vec::new(), active: false });
        }
        let saved = current_groups()?;
        set_groups(groups)?;
        // SAFETY: setfsgid/setfsuid only change the calling thread's
        // credentials; they cannot fail in a way that leaves memory unsafe.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        Ok(Self { uid: 0, gid: 0, groups: saved, active: true })
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        // SAFETY: as above; restoring envd's own (root) credentials.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
        if let Err(e) = set_groups(&self.groups) {
            tracing::error!("restoring supplementary groups failed: {e}");
        }
    }
}

fn current_groups() -> Result<Vec<libc::gid_t>> {
    // SAFETY: with size 0 getgroups only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(Error::io("getgroups", std::io::Error::last_os_error()));
    }
    let mut groups = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(0)];
    // SAFETY: the buffer holds exactly `n` entries.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(Error::io("getgroups", std::io::Error::last_os_error()));
    }
    groups.truncate(usize::try_from(got).unwrap_or(0));
    Ok(groups)
}

fn set_groups(groups: &[libc::gid_t]) -> Result<()> {
    // SAFETY: the pointer and length describe a live slice; the raw syscall
    // changes only this thread's supplementary groups.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        return Err(Error::io("setgroups", std::io::Error::last_os_error()));
    }
    Ok(())
}

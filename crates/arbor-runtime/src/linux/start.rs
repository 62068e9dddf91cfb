//! The host side of a launch or a restore: run `arbor-launch` with the spec
//! on stdin and read envd's pid (and the seccomp listener of a fresh
//! sandbox) from its stdout, a unix socket, once envd listens.

use super::handoff;
use crate::error::{Error, Result};
use std::{
    os::{
        fd::{AsFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    process::Stdio,
};
use tokio::io::AsyncWriteExt;

/// Runs `arbor-launch [mode]` with `spec`; its errors are written to `log`
/// and returned. Returns envd's pid and, for a fresh sandbox, the listener
/// of its seccomp filter.
pub async fn start<T: serde::Serialize>(
    launcher: &Path,
    mode: Option<&str>,
    spec: &T,
    log: &Path,
) -> Result<(u32, Option<OwnedFd>)> {
    let log_file = std::fs::File::create(log).map_err(Error::io("creating", log))?;
    let json = serde_json::to_vec(spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    // The launcher's stdout is a unix socket: the pid comes with a descriptor.
    let (ours, theirs) = UnixStream::pair().map_err(Error::io("creating a socket pair for", launcher))?;
    let mut command = tokio::process::Command::new(launcher);
    command
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(OwnedFd::from(theirs))
        .stderr(log_file)
        // A create abandoned half-way (the request dropped) must not leave a
        // launcher running; whatever it started is in the cgroup the caller
        // removes.
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(Error::io("starting", launcher))?;
    // The command holds the launcher's end until dropped: without this the
    // socket would never see the launcher's end of file.
    drop(command);
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).await.map_err(Error::io("writing the spec to", launcher))?;
    }
    let status = child.wait().await.map_err(Error::io("waiting for", launcher))?;
    if !status.success() {
        let msg = std::fs::read_to_string(log).unwrap_or_default();
        let msg = msg.trim().trim_start_matches("arbor-launch: ");
        return Err(Error::Launch(if msg.is_empty() { format!("arbor-launch {status}") } else { msg.into() }));
    }
    // The launcher has exited: its report is queued, or there is none.
    let (out, listener) = handoff::recv(ours.as_fd(), false)?;
    let pid = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .map_err(|_| Error::Launch(format!("arbor-launch printed no pid: {out:?}")))?;
    Ok((pid, listener))
}

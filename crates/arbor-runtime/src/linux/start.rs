//! The host side of a launch or a restore: run `arbor-launch` with the spec
//! on stdin and read envd's pid from its stdout once envd listens.

use crate::error::{Error, Result};
use std::{path::Path, process::Stdio};
use tokio::io::AsyncWriteExt;

/// Runs `arbor-launch [mode]` with `spec`; its errors are written to `log`
/// and returned.
pub async fn start<T: serde::Serialize>(launcher: &Path, mode: Option<&str>, spec: &T, log: &Path) -> Result<u32> {
    let log_file = std::fs::File::create(log).map_err(Error::io("creating", log))?;
    let json = serde_json::to_vec(spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let mut child = tokio::process::Command::new(launcher)
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        // A create abandoned half-way (the request dropped) must not leave a
        // launcher running; whatever it started is in the cgroup the caller
        // removes.
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io("starting", launcher))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).await.map_err(Error::io("writing the spec to", launcher))?;
    }
    let out = child.wait_with_output().await.map_err(Error::io("waiting for", launcher))?;
    if !out.status.success() {
        let msg = std::fs::read_to_string(log).unwrap_or_default();
        let msg = msg.trim().trim_start_matches("arbor-launch: ");
        return Err(Error::Launch(if msg.is_empty() { format!("arbor-launch {}", out.status) } else { msg.into() }));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::Launch(format!("arbor-launch printed no pid: {:?}", out.stdout)))
}

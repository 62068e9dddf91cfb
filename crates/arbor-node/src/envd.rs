//! The envd binaries sandboxes run, kept by content.
//!
//! A checkpoint maps envd's file: a restore needs the very same bytes at the
//! same path (CRIU checks the size and refuses otherwise). The node runs
//! sandboxes from a copy named after the binary's hash, `<data>/envd/<hash>`,
//! which a newer envd never overwrites, so checkpoints outlive upgrades.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The content-addressed copy of `envd` under `data_dir`, made if missing.
pub fn pin(data_dir: &Path, envd: &Path) -> Result<PathBuf> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| Error::Invalid(format!("{what} {}: {e}", path.display()))
    };
    let bytes = std::fs::read(envd).map_err(io("reading the envd binary", envd))?;
    let hash: String = Sha256::digest(&bytes).iter().take(12).map(|b| format!("{b:02x}")).collect();
    let dir = data_dir.join("envd");
    let pinned = dir.join(&hash);
    if pinned.is_file() {
        return Ok(pinned);
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    // Written aside and renamed: a crash never leaves a partial binary
    // under the final name.
    let tmp = dir.join(format!(".{hash}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, &pinned).map_err(io("renaming", &tmp))?;
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn same_bytes_same_copy_new_bytes_new_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("arbor-envd");
        std::fs::write(&bin, b"one").unwrap();
        let a = pin(tmp.path(), &bin).unwrap();
        assert_eq!(pin(tmp.path(), &bin).unwrap(), a);
        std::fs::write(&bin, b"two").unwrap();
        let b = pin(tmp.path(), &bin).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
    }
}

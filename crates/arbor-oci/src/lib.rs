//! OCI images as a starting point for templates (`FROM host:port/repo:tag` in a Dockerfile).
//!
//! [`resolve`] turns a docker-style reference into the manifest digest and the runtime config without
//! downloading layers, so a template build can key its cache on the digest. [`pull`] downloads the
//! layers, checks each against its digest (compressed) and diff ID (uncompressed), and applies them in
//! order onto an empty directory, with OCI whiteouts, owners, modes, xattrs, links and devices.
//!
//! Crates used, and why:
//! - `oci-client` speaks the distribution protocol (token and basic auth, manifest lists, blob digest
//!   checks); version 0.15 because it is on the same reqwest 0.12 / rustls / ring stack as the rest of
//!   the workspace (later versions bring a second HTTP and TLS stack into the build).
//! - `tar` parses layer streams (ustar, GNU long names, PAX records, xattrs); applying entries is done
//!   here (`unpack`), since whiteouts and the path-escape rules are outside what `tar` unpacks.
//! - `flate2` (gzip) and `ruzstd` (zstd, pure Rust: no C library to build) decompress layers.
//!
//! The caller must run as root to reproduce owners and device nodes.

mod error;
mod registry;
mod stream;
mod unpack;

use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

pub use error::{Error, Result};

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// User name for the registry (HTTP basic, or exchanged for a bearer token).
    pub username: Option<String>,
    /// Password or access token for `username`.
    pub password: Option<String>,
    /// Plain HTTP instead of HTTPS. `None` decides by host: plain HTTP for loopback registries
    /// (`localhost`, `127.0.0.0/8`, `::1`), HTTPS for every other host.
    pub insecure: Option<bool>,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Digest of the (platform) manifest, `sha256:...`: the image's identity for caches.
    pub digest: String,
    /// What the image says about how to run it.
    pub config: ImageConfig,
}

/// The runtime part of the image config that templates use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Env`, split at the first `=`, in image order.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, if set and non-empty.
    pub workdir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`...), if set and non-empty.
    pub user: Option<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
}

/// Resolves `reference` (`host:port/repo:tag`, `host/repo@sha256:...`; a reference without a host goes
/// to the client's default registry), picks linux/amd64 from an index, and returns the manifest digest
/// and the config, without downloading layers.
pub async fn resolve(reference: &str, opts: &PullOptions) -> Result<(String, ImageConfig)> {
    let session = registry::Session::open(reference, opts).await?;
    Ok((session.digest, session.config))
}

/// Downloads the layers of `reference` and applies them in order onto `dest` (created if missing;
/// expected empty). Each layer is fully downloaded and its digest checked before it is applied.
pub async fn pull(reference: &str, opts: &PullOptions, dest: &Path) -> Result<Image> {
    let session = registry::Session::open(reference, opts).await?;
    std::fs::create_dir_all(dest).map_err(|e| Error::io("mkdir", dest, e))?;
    let dest = std::fs::canonicalize(dest).map_err(|e| Error::io("resolve", dest, e))?;
    // The download buffer lives beside `dest` (same disk as the result, not a small tmpfs) and is an
    // unnamed file, so nothing is left behind on failure.
    let spool_dir = dest.parent().unwrap_or(&dest).to_path_buf();

    for (layer, diff_id) in session.manifest.layers.iter().zip(&session.diff_ids) {
        let spool = tempfile::tempfile_in(&spool_dir)
            .or_else(|_| tempfile::tempfile())
            .map_err(|e| Error::io("create spool file in", &spool_dir, e))?;
        let mut out = tokio::fs::File::from_std(spool);
        session.download(layer, &mut out).await?;
        let mut spool = out.into_std().await;

        let compression = stream::Compression::of_media_type(&layer.media_type).ok_or_else(|| {
            Error::UnsupportedMediaType { reference: reference.to_string(), media_type: layer.media_type.clone() }
        })?;
        let digest = layer.digest.clone();
        let diff_id = diff_id.clone();
        let dest_c = dest.clone();
        tracing::debug!(layer = %digest, size = layer.size, "applying layer");
        tokio::task::spawn_blocking(move || -> Result<()> {
            let dest = dest_c;
            spool.seek(SeekFrom::Start(0)).map_err(|e| Error::io("rewind spool file for", &dest, e))?;
            let mut hashed = stream::HashingReader::new(compression.reader(BufReader::new(&mut spool)));
            unpack::apply_layer(&mut hashed, &dest, &digest)?;
            let actual = hashed.finish().map_err(|source| Error::Archive { layer: digest.clone(), source })?;
            if actual != diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("uncompressed layer {digest}"),
                    expected: diff_id,
                    actual,
                });
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::io("apply layer onto", &dest, std::io::Error::other(e)))??;
    }
    Ok(Image { digest: session.digest, config: session.config })
}

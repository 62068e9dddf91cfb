//! Errors of image resolution, download and unpacking, worded for the person who wrote the `FROM` line.

use std::path::PathBuf;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a `FROM` reference and an unpacked root file system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse as `[host[:port]/]repo[:tag][@digest]`.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why the parser refused it.
        reason: String,
    },
    /// The registry answered, but knows neither the repository nor the tag or digest.
    #[error("image {reference} not found in its registry: {detail}")]
    NotFound {
        /// The reference as given.
        reference: String,
        /// The registry's own words.
        detail: String,
    },
    /// No connection could be made (refused, timed out, name not resolved, TLS failed).
    #[error("registry {registry} unreachable: {detail}")]
    Unreachable {
        /// `host[:port]` of the registry.
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error("registry {registry} requires authentication (or refused the credentials given) for {reference}")]
    AuthRequired {
        /// `host[:port]` of the registry.
        registry: String,
        /// The reference as given.
        reference: String,
    },
    /// A manifest, config or layer of a kind this crate does not handle.
    #[error("unsupported media type {media_type} in {reference}")]
    UnsupportedMediaType {
        /// The reference as given.
        reference: String,
        /// The media type found.
        media_type: String,
    },
    /// The image is a multi-platform index without a linux/amd64 entry.
    #[error("image {reference} has no linux/amd64 variant")]
    NoPlatform {
        /// The reference as given.
        reference: String,
    },
    /// Downloaded or unpacked content does not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob (`layer sha256:..`, `manifest`, ...).
        what: String,
        /// The digest the manifest or config promised.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The image config JSON does not parse, or disagrees with the manifest.
    #[error("bad image config of {reference}: {detail}")]
    BadConfig {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Any other registry answer this crate cannot use.
    #[error("registry error for {reference}: {detail}")]
    Registry {
        /// The reference as given.
        reference: String,
        /// The client's description.
        detail: String,
    },
    /// A layer entry whose path or link target would leave the destination, or is otherwise unusable.
    #[error("layer {layer}: refused entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// Digest of the layer.
        layer: String,
        /// The entry path as stored in the layer.
        entry: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A layer is not a readable (optionally compressed) tar stream.
    #[error("layer {layer} is not a valid tar stream: {source}")]
    Archive {
        /// Digest of the layer.
        layer: String,
        /// The read or decode error.
        #[source]
        source: std::io::Error,
    },
    /// A file system operation on the destination failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create`, `chown`, ...).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::Io`]; used as `.map_err(|e| Error::io("create", &path, e))`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// Sorts an error of the distribution client into the kinds a user can act on.
    pub(crate) fn from_client(reference: &str, registry: &str, err: OciDistributionError) -> Self {
        let reference_s = reference.to_string();
        match err {
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                Error::Unreachable { registry: registry.to_string(), detail: error_chain(&e) }
            }
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
                Error::AuthRequired { registry: registry.to_string(), reference: reference_s }
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let denied =
                    envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                let unknown = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                });
                if denied {
                    Error::AuthRequired { registry: registry.to_string(), reference: reference_s }
                } else if unknown {
                    Error::NotFound { reference: reference_s, detail: messages(&envelope) }
                } else {
                    Error::Registry { reference: reference_s, detail: messages(&envelope) }
                }
            }
            OciDistributionError::ServerError { code: 404, message, .. }
            | OciDistributionError::ImageManifestNotFoundError(message) => {
                Error::NotFound { reference: reference_s, detail: message }
            }
            OciDistributionError::ServerError { code: 401 | 403, .. } => {
                Error::AuthRequired { registry: registry.to_string(), reference: reference_s }
            }
            OciDistributionError::UnsupportedMediaTypeError(media_type)
            | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
                Error::UnsupportedMediaType { reference: reference_s, media_type }
            }
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                Error::DigestMismatch { what: format!("a blob of {reference}"), expected, actual }
            }
            other => Error::Registry { reference: reference_s, detail: error_chain(&other) },
        }
    }
}

/// The registry's error messages, without the client's wrapping.
fn messages(envelope: &oci_client::errors::OciEnvelope) -> String {
    let all: Vec<&str> = envelope.errors.iter().map(|e| e.message.as_str()).collect();
    all.join("; ")
}

/// Joins an error and its sources, since reqwest hides the useful part (`Connection refused`) in them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

//! Talking to the registry: client set-up (plain HTTP rule, credentials), manifest and config fetch,
//! layer download with digest checks.

use std::net::IpAddr;

use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::{ImageConfig, PullOptions};

/// Config media types we read; anything else (Helm charts, WASM modules...) is not a container image.
const CONFIG_MEDIA_TYPES: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// One resolved image: where it lives and what the registry said about it.
pub(crate) struct Session {
    client: Client,
    reference: Reference,
    /// The reference as the user wrote it, for messages.
    given: String,
    pub(crate) digest: String,
    pub(crate) manifest: OciImageManifest,
    pub(crate) config: ImageConfig,
    /// `rootfs.diff_ids` of the config: the digest of each layer once decompressed.
    pub(crate) diff_ids: Vec<String>,
}

/// The subset of the OCI / Docker image config JSON that a template needs.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    config: Option<RawRuntime>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntime {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Whether `registry` (`host[:port]`) is on this machine, where plain HTTP is the default.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Session {
    /// Parses the reference, fetches the manifest (picking linux/amd64 from an index) and the config.
    pub(crate) async fn open(given: &str, opts: &PullOptions) -> Result<Session> {
        let reference: Reference = given.parse().map_err(|e: oci_client::ParseError| Error::InvalidReference {
            reference: given.to_string(),
            reason: e.to_string(),
        })?;
        let registry = reference.resolve_registry().to_string();
        let plain_http = opts.insecure.unwrap_or_else(|| is_loopback(&registry));
        let client = Client::new(ClientConfig {
            protocol: if plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        });
        let auth = match (&opts.username, &opts.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            (Some(u), None) => RegistryAuth::Basic(u.clone(), String::new()),
            _ => RegistryAuth::Anonymous,
        };
        let client_err = |e| Error::from_client(given, &registry, e);

        let (manifest, digest) = client.pull_image_manifest(&reference, &auth).await.map_err(|e| match e {
            oci_client::errors::OciDistributionError::ImageManifestNotFoundError(m) if m.contains("platform") => {
                Error::NoPlatform { reference: given.to_string() }
            }
            other => client_err(other),
        })?;

        if !CONFIG_MEDIA_TYPES.contains(&manifest.config.media_type.as_str()) {
            return Err(Error::UnsupportedMediaType {
                reference: given.to_string(),
                media_type: manifest.config.media_type.clone(),
            });
        }
        if let Some(layer) =
            manifest.layers.iter().find(|l| crate::stream::Compression::of_media_type(&l.media_type).is_none())
        {
            return Err(Error::UnsupportedMediaType {
                reference: given.to_string(),
                media_type: layer.media_type.clone(),
            });
        }

        // pull_blob checks the blob against the descriptor's digest.
        let mut raw = Vec::new();
        client.pull_blob(&reference, &manifest.config, &mut raw).await.map_err(client_err)?;
        let parsed: RawConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::BadConfig { reference: given.to_string(), detail: e.to_string() })?;
        let diff_ids = parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::BadConfig {
                reference: given.to_string(),
                detail: format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let rt = parsed.config.unwrap_or_default();
        let config = ImageConfig {
            env: rt
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            workdir: rt.working_dir.filter(|w| !w.is_empty()),
            user: rt.user.filter(|u| !u.is_empty()),
            entrypoint: rt.entrypoint.unwrap_or_default(),
            cmd: rt.cmd.unwrap_or_default(),
        };
        Ok(Session { client, reference, given: given.to_string(), digest, manifest, config, diff_ids })
    }

    /// Downloads one layer blob into `out`, checking it against the descriptor's digest.
    pub(crate) async fn download(&self, layer: &OciDescriptor, out: &mut tokio::fs::File) -> Result<()> {
        let registry = self.reference.resolve_registry();
        self.client.pull_blob(&self.reference, layer, out).await.map_err(|e| {
            match Error::from_client(&self.given, registry, e) {
                Error::DigestMismatch { expected, actual, .. } => {
                    Error::DigestMismatch { what: format!("layer {}", layer.digest), expected, actual }
                }
                other => other,
            }
        })
    }
}

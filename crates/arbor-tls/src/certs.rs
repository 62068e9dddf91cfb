//! The certificate of the TLS listener: generated from a local CA, or given.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::{
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};
use time::{Duration, OffsetDateTime};

const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const LEAF_FILE: &str = "server.pem";
const LEAF_KEY_FILE: &str = "server-key.pem";
/// Long enough that nobody has to re-trust it; it is local to one machine.
const CA_LIFETIME: Duration = Duration::days(3650);
/// Under the 398 days that browsers and Apple's TLS stack accept for a leaf.
const LEAF_LIFETIME: Duration = Duration::days(365);
/// A leaf this close to expiry is re-issued at start.
const LEAF_RENEW_BEFORE: Duration = Duration::days(30);

/// The certificate chain and key the TLS listener presents.
#[derive(Debug, Clone)]
pub struct Certs {
    config: Arc<ServerConfig>,
    ca: Option<PathBuf>,
}

/// The host part of a domain that may carry a port (`arbor.test:3443`),
/// lower-cased and without a trailing dot.
pub fn host_of(domain: &str) -> String {
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Certs {
    /// Certificates under `dir` for `domain` (a port on it is ignored): a
    /// local CA (`ca.pem`, `ca-key.pem`) made on first use and kept, and a
    /// leaf for `*.<domain>`, `<domain>`, `localhost` and 127.0.0.1
    /// (`server.pem`, `server-key.pem`) signed by it. The leaf is issued anew
    /// when the domain changed, when it expires within 30 days, or when the CA
    /// was made anew.
    pub fn load_or_create(dir: &Path, domain: &str) -> Result<Certs> {
        let host = host_of(domain);
        if host.is_empty() || host.contains(['/', ' ', '*']) {
            return Err(Error::BadDomain(domain.to_string()));
        }
        fs::create_dir_all(dir).map_err(|err| Error::Io { path: dir.to_path_buf(), err })?;
        let ca_path = dir.join(CA_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        let leaf_path = dir.join(LEAF_FILE);
        let leaf_key_path = dir.join(LEAF_KEY_FILE);

        let (ca_pem, ca_key, ca_new) = match (read_opt(&ca_path)?, read_opt(&ca_key_path)?) {
            (Some(pem), Some(key)) => (pem, KeyPair::from_pem(&key)?, false),
            _ => {
                let (pem, key) = new_ca()?;
                write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
                write_file(&ca_path, pem.as_bytes(), 0o644)?;
                tracing::info!("created a local CA in {}", ca_path.display());
                (pem, key, true)
            }
        };
        let ca_der = parse_certs(&ca_path, &ca_pem)?.remove(0);

        if !ca_new {
            if let Some(certs) = Certs::reuse(&ca_path, &ca_der, &leaf_path, &leaf_key_path, &host)? {
                return Ok(certs);
            }
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params(&host)?.signed_by(&leaf_key, &issuer)?;
        write_file(&leaf_key_path, leaf_key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&leaf_path, leaf.pem().as_bytes(), 0o644)?;
        tracing::info!("issued a certificate for *.{host} in {}", leaf_path.display());
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|_| Error::NotPem { path: leaf_key_path.clone(), what: "private key" })?;
        let config = server_config(vec![leaf.der().clone()], key, &leaf_path, &leaf_key_path)?;
        Ok(Certs { config, ca: Some(ca_path) })
    }

    /// The kept leaf, if it is still good for `host` and signed by this CA.
    fn reuse(
        ca_path: &Path,
        ca_der: &CertificateDer<'_>,
        leaf_path: &Path,
        leaf_key_path: &Path,
        host: &str,
    ) -> Result<Option<Certs>> {
        let (Some(pem), Some(key_pem)) = (read_opt(leaf_path)?, read_opt(leaf_key_path)?) else {
            return Ok(None);
        };
        let Ok(chain) = parse_certs(leaf_path, &pem) else { return Ok(None) };
        if !leaf_fits(&chain[0], ca_der, host) {
            return Ok(None);
        }
        let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else { return Ok(None) };
        // A leaf whose key was replaced by hand is issued again rather than refused:
        // these files are Arbor's own.
        match server_config(chain, key, leaf_path, leaf_key_path) {
            Ok(config) => Ok(Some(Certs { config, ca: Some(ca_path.to_path_buf()) })),
            Err(_) => Ok(None),
        }
    }

    /// An operator's certificate: `cert` is a PEM chain (leaf first), `key`
    /// its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Certs> {
        let pem = fs::read_to_string(cert).map_err(|err| Error::Io { path: cert.to_path_buf(), err })?;
        let chain = parse_certs(cert, &pem)?;
        let key_bytes = fs::read(key).map_err(|err| Error::Io { path: key.to_path_buf(), err })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|_| Error::NotPem { path: key.to_path_buf(), what: "private key" })?;
        let config = server_config(chain, key_der, cert, key)?;
        Ok(Certs { config, ca: None })
    }

    /// The generated CA's certificate, for clients to trust (`None` for an
    /// operator's certificate).
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The rustls configuration: this certificate, ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

fn new_ca() -> Result<(String, KeyPair)> {
    let hostname =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".to_string());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Arbor local CA ({hostname})"));
    dn.push(DnType::OrganizationName, "Arbor");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + CA_LIFETIME;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn leaf_params(host: &str) -> Result<CertificateParams> {
    let names = vec![format!("*.{host}"), host.to_string(), "localhost".to_string()];
    let mut params = CertificateParams::new(names).map_err(|_| Error::BadDomain(host.to_string()))?;
    params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("*.{host}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + LEAF_LIFETIME;
    Ok(params)
}

/// Whether a kept leaf names `*.host` and `host`, was issued by this CA and
/// is good for more than [`LEAF_RENEW_BEFORE`].
fn leaf_fits(leaf: &CertificateDer<'_>, ca: &CertificateDer<'_>, host: &str) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (Ok((_, leaf)), Ok((_, ca))) = (X509Certificate::from_der(leaf), X509Certificate::from_der(ca)) else {
        return false;
    };
    if leaf.verify_signature(Some(ca.public_key())).is_err() {
        return false;
    }
    let renew_at = OffsetDateTime::now_utc() + LEAF_RENEW_BEFORE;
    if leaf.validity().not_after.to_datetime() < renew_at {
        return false;
    }
    let Ok(Some(san)) = leaf.subject_alternative_name() else { return false };
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    dns.contains(&host.to_string()) && dns.contains(&format!("*.{host}"))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>> {
    // An explicit provider: the process may link more than one, and then
    // rustls has no default to pick.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                Error::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() }
            }
            other => Error::Rustls(other),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(|c| c.ok()).collect();
    if chain.is_empty() {
        return Err(Error::NotPem { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(chain)
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io { path: path.to_path_buf(), err }),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves
/// half a key; `mode` is set at creation, so a key is never readable by others.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let io = |err| Error::Io { path: path.to_path_buf(), err };
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

//! Settings of the control plane.

use std::{net::SocketAddr, time::Duration};

/// How the API behaves; `arbor server` fills it from flags.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The `domain` returned to SDKs for public URLs.
    pub domain: String,
    /// Where clients reach this API (`http[s]://host[:port]`, no trailing
    /// `/`): the base of the upload URLs it hands out. Taken from settings,
    /// never from a request's `Host`, which the client chooses.
    pub public_api_url: String,
    /// Lifetime when create names none.
    pub default_timeout: Duration,
    /// The longest a sandbox may live from its start; timeouts cannot pass it.
    pub max_lifetime: Duration,
    /// How often metrics are sampled.
    pub metrics_interval: Duration,
    /// How long metrics are kept after they are taken.
    pub metrics_retention: Duration,
    /// Sandboxes that may run at once.
    pub max_sandboxes: u64,
    /// The node's id in the store.
    pub node_id: String,
    /// How long a paused sandbox stays resident (frozen, its memory held)
    /// after its checkpoint is written: a resume within it is a thaw.
    pub pause_grace: Duration,
    /// How long a paused sandbox is kept before it is deleted.
    pub paused_retention: Duration,
    /// The smallest `idle_timeout` metadata value create accepts.
    pub min_idle_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            domain: "localhost".into(),
            public_api_url: "http://127.0.0.1:3000".into(),
            default_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(3600),
            metrics_interval: Duration::from_secs(2),
            metrics_retention: Duration::from_secs(24 * 3600),
            max_sandboxes: 1000,
            node_id: "local".into(),
            pause_grace: Duration::from_secs(10),
            paused_retention: Duration::from_secs(30 * 24 * 3600),
            min_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The API's URL when none is configured: the listen address, with a
/// wildcard address replaced by loopback (a client elsewhere needs
/// `--public-api-url`).
pub fn default_public_api_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// Checks a `--public-api-url`: `http://` or `https://`, a host, no path,
/// query or fragment (upload paths are appended to it). Returns it without
/// a trailing `/`.
pub fn public_api_url(s: &str) -> Result<String, String> {
    let url = s.trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => Ok(url.to_string()),
        _ => Err(format!("{s:?} must be http[s]://host[:port], without a path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_api_urls() {
        assert_eq!(default_public_api_url("127.0.0.1:3000".parse().unwrap()), "http://127.0.0.1:3000");
        assert_eq!(default_public_api_url("0.0.0.0:80".parse().unwrap()), "http://127.0.0.1:80");
        assert_eq!(default_public_api_url("[::]:3000".parse().unwrap()), "http://[::1]:3000");
        assert_eq!(default_public_api_url("10.1.2.3:3000".parse().unwrap()), "http://10.1.2.3:3000");
        assert_eq!(public_api_url("https://api.example.com/").unwrap(), "https://api.example.com");
        assert_eq!(public_api_url("http://10.0.0.1:3000").unwrap(), "http://10.0.0.1:3000");
        for bad in ["api.example.com", "ftp://x", "https://", "https://x/api", "http://x?y", "http://u@evil"] {
            assert!(public_api_url(bad).is_err(), "{bad}");
        }
    }
}

//! The optional public edge of `arbor server`: a TLS listener for sandbox
//! URLs (`https://<port>-<id>.<domain>`) and a DNS responder for the domain.

use super::ServerArgs;
use anyhow::{bail, Context};
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

/// The TLS listener and DNS responder, bound but not yet serving.
#[derive(Debug)]
pub(super) struct Edge {
    tls: Option<Tls>,
    dns: Option<Dns>,
}

#[derive(Debug)]
struct Tls {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    certs: arbor_tls::Certs,
}

#[derive(Debug)]
struct Dns {
    responder: arbor_dns::Responder,
    addr: SocketAddr,
    answer: Ipv4Addr,
}

impl Edge {
    /// Loads or makes the certificates and binds what the flags ask for, so
    /// that a bad certificate or a taken port stops the start with a clear error.
    pub(super) async fn bind(args: &ServerArgs, listen: SocketAddr) -> anyhow::Result<Edge> {
        let tls = match args.tls_listen {
            None => None,
            Some(want) => {
                let certs = match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => arbor_tls::Certs::from_files(cert, key)?,
                    _ => arbor_tls::Certs::load_or_create(&args.data_dir.join("tls"), &args.domain)
                        .context("the generated TLS certificate")?,
                };
                let listener = tokio::net::TcpListener::bind(want)
                    .await
                    .with_context(|| format!("listening on {want} (--tls-listen)"))?;
                let addr = listener.local_addr().unwrap_or(want);
                Some(Tls { listener, addr, certs })
            }
        };
        let dns = match args.dns {
            None => None,
            Some(want) => {
                let answer = dns_answer(args.dns_answer, tls.as_ref().map_or(listen, |t| t.addr))?;
                let responder = arbor_dns::Responder::bind(want, &args.domain, answer).await?;
                let addr = responder.local_addr().unwrap_or(want);
                Some(Dns { responder, addr, answer })
            }
        };
        Ok(Edge { tls, dns })
    }

    /// The lines of the start banner about TLS and DNS.
    pub(super) fn banner(&self, domain: &str) -> Vec<String> {
        let host = arbor_tls::host_of(domain);
        let mut lines = Vec::new();
        if let Some(tls) = &self.tls {
            lines.push(format!("TLS at https://{} (sandbox URLs https://<port>-<id>.{host})", tls.addr));
            match tls.certs.ca_path() {
                Some(ca) => {
                    lines.push(format!("Local CA: {} (trust it in clients):", ca.display()));
                    for var in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"] {
                        lines.push(format!("  export {var}={}", ca.display()));
                    }
                }
                None => lines.push("Certificate: the one given by --tls-cert".to_string()),
            }
        }
        if let Some(dns) = &self.dns {
            lines.push(format!("DNS at {} answers {host} and *.{host} with {}", dns.addr, dns.answer));
        }
        lines
    }

    /// Serves TLS (the same router as the plain listener) and DNS until
    /// `shutdown` completes for each of them.
    pub(super) async fn serve<S, F>(
        self,
        router: axum::Router,
        timeouts: arbor_tls::Timeouts,
        shutdown: S,
    ) -> anyhow::Result<()>
    where
        S: Fn() -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let dns = self.dns.map(|dns| tokio::spawn(dns.responder.run(shutdown())));
        if let Some(tls) = self.tls {
            arbor_tls::serve(tls.listener, tls.certs.server_config(), router, timeouts, shutdown())
                .await
                .context("serving TLS")?;
        }
        if let Some(dns) = dns {
            dns.await.context("the DNS responder")?;
        }
        Ok(())
    }
}

/// The address DNS answers with: `--dns-answer`, else the listener's own
/// address; a wildcard listener (0.0.0.0) answers with loopback, which is
/// right for clients on this machine only.
fn dns_answer(given: Option<Ipv4Addr>, listener: SocketAddr) -> anyhow::Result<Ipv4Addr> {
    if let Some(ip) = given {
        return Ok(ip);
    }
    match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            tracing::warn!("the listener is on {ip}: DNS answers 127.0.0.1; give --dns-answer for other machines");
            Ok(Ipv4Addr::LOCALHOST)
        }
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => bail!("the listener is on IPv6: give the IPv4 address for DNS answers with --dns-answer"),
    }
}

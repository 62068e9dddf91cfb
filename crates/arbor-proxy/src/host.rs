//! Public URLs of sandbox ports: requests whose `Host` is
//! `<port>-<sandboxID>.<domain>` go to that port inside that sandbox, for
//! any path. Port 49983 is envd itself (the SDKs use such URLs when no
//! `NOVITA_SANDBOX_URL` is set); any other port is the user's service:
//! plain requests through the pooled client, upgrades (WebSocket) as a
//! byte tunnel. Bodies stream both ways without buffering.

use crate::{
    access::{Access, Service},
    error::{ErrorShape, ProxyError},
    proxy::{root_cause, Proxy},
    resolver::Lookup,
    resolver::Target,
};
use arbor_proto::ENVD_PORT;
use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// The header carrying a sandbox's traffic access token (as the SDKs send it).
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The port and sandbox id `host` names under `domain` (either may carry a
/// `:port`), if it is such a name: `8000-abc123.arbor.test:3443`.
pub fn parse_host(host: &str, domain: &str) -> Option<(u16, String)> {
    let strip = |s: &str| -> String {
        let s = s.trim().trim_end_matches('.');
        match s.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_ascii_lowercase(),
            _ => s.to_ascii_lowercase(),
        }
    };
    let (host, domain) = (strip(host), strip(domain));
    let label = host.strip_suffix(&domain)?.strip_suffix('.')?;
    let (port, id) = label.split_once('-')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let valid = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then(|| (port, id.to_string()))
}

/// Open tunnels (WebSocket and other upgrades) per sandbox, so a pause can
/// close them: a paused sandbox's connections end, as they would on a VM.
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    open: Arc<Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>>,
}

impl Tunnels {
    fn add(&self, sandbox_id: &str, task: tokio::task::AbortHandle) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let list = open.entry(sandbox_id.to_string()).or_default();
        list.retain(|t| !t.is_finished());
        list.push(task);
    }

    /// Closes every tunnel into `sandbox_id`; returns how many were open.
    pub fn close(&self, sandbox_id: &str) -> usize {
        let tasks = self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(sandbox_id).unwrap_or_default();
        let open = tasks.iter().filter(|t| !t.is_finished()).count();
        for task in tasks {
            task.abort();
        }
        open
    }
}

/// An error of a public URL, as JSON or, for a browser, a small page.
fn answer(status: StatusCode, message: String, html: bool) -> Response {
    if html {
        let title = status.canonical_reason().unwrap_or("Error");
        let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} {title}</title></head>\
             <body><h1>{} {title}</h1><p>{escaped}</p><p><small>Arbor</small></p></body></html>\n",
            status.as_u16(),
            status.as_u16()
        );
        return (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    }
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn wants_html(req: &Request) -> bool {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

fn is_upgrade(req: &Request) -> bool {
    let connection = req.headers().get(header::CONNECTION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    req.headers().contains_key(header::UPGRADE) && connection.to_ascii_lowercase().contains("upgrade")
}

impl Proxy {
    /// Serves a request for `port` of sandbox `sandbox_id` (from its `Host`).
    pub async fn handle_host(&self, req: Request, port: u16, sandbox_id: &str) -> Response {
        let html = wants_html(&req);
        let service = if port == ENVD_PORT { Service::Envd } else { Service::Port(port) };
        let resolved = {
            let access = Access::of(service, req.method(), req.uri(), req.headers());
            self.resolver().resolve(Lookup::Id(sandbox_id), &access).await
        };
        if port == ENVD_PORT {
            // envd checks its own access token; the proxy's errors take the
            // shapes the SDKs expect of envd, as for header-routed traffic
            // (502 for a sandbox that is gone or paused: `is_running()` is
            // `False`).
            return match resolved {
                Ok(target) => self.handle_target(req, target).await,
                Err(e) => {
                    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                    e.into_response_shaped(ErrorShape::of(req.uri().path(), content_type))
                }
            };
        }
        let target = match resolved {
            Ok(t) => t,
            Err(ProxyError::NotFound(id)) => {
                return answer(StatusCode::NOT_FOUND, format!("sandbox {id} not found"), html);
            }
            Err(e @ ProxyError::Paused(_)) => return answer(StatusCode::CONFLICT, e.to_string(), html),
            Err(ProxyError::Status { status, message }) => return answer(status, message, html),
            Err(e) => return answer(e.status(), e.to_string(), html),
        };
        if let Some(expected) = &target.traffic_token {
            let given = req.headers().get(TRAFFIC_TOKEN_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
            if !bool::from(subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes())) {
                let message = format!(
                    "sandbox {sandbox_id} does not allow public traffic: send its traffic access token in \
                     the E2B-Traffic-Access-Token header"
                );
                return answer(StatusCode::FORBIDDEN, message, html);
            }
        }
        let mut target = target;
        target.addr.set_port(port);
        let result =
            if is_upgrade(&req) { self.tunnel(req, &target).await } else { self.forward_port(req, &target).await };
        match result {
            Ok(resp) => resp,
            Err(reason) => answer(
                StatusCode::BAD_GATEWAY,
                format!("sandbox {} has no service answering on port {port}: {reason}", target.sandbox_id),
                html,
            ),
        }
    }

    /// A plain request to a user's service: the pooled client, `Host` kept.
    async fn forward_port(&self, req: Request, target: &Target) -> Result<Response, String> {
        let host = req.headers().get(header::HOST).cloned();
        let mut upstream = self.upstream_request(req, target).map_err(|e| e.to_string())?;
        if let Some(host) = host {
            upstream.headers_mut().insert(header::HOST, host);
        }
        let resp = self.send(upstream).await.map_err(|e| root_cause(&e))?;
        Ok(self.downstream_response(resp, target))
    }

    /// An upgrade (WebSocket): the handshake goes upstream on a connection
    /// of its own; on `101` both sides become one byte tunnel.
    async fn tunnel(&self, mut req: Request, target: &Target) -> Result<Response, String> {
        let client_side = hyper::upgrade::on(&mut req);
        let stream = tokio::net::TcpStream::connect(target.addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        parts.uri = path.parse().map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
        parts.version = axum::http::Version::HTTP_11;
        parts.extensions = axum::http::Extensions::new();
        let mut resp = sender.send_request(Request::from_parts(parts, body)).await.map_err(|e| e.to_string())?;
        self.resolver().activity(&target.sandbox_id);
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
        let upstream_side = hyper::upgrade::on(&mut resp);
        let (resolver, id) = (self.resolver().clone(), target.sandbox_id.clone());
        let task = tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_side.await, upstream_side.await) else { return };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            resolver.activity(&id);
        });
        self.tunnels().add(&target.sandbox_id, task.abort_handle());
        let (parts, _) = resp.into_parts();
        let mut out = Response::from_parts(parts, Body::empty());
        out.headers_mut().entry(header::CONNECTION).or_insert(HeaderValue::from_static("upgrade"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn hosts() {
        assert_eq!(parse_host("8000-abc123.arbor.test", "arbor.test"), Some((8000, "abc123".into())));
        assert_eq!(parse_host("8000-ABC123.Arbor.Test:3443", "arbor.test:3443"), Some((8000, "abc123".into())));
        assert_eq!(parse_host("49983-x.localhost:3000", "localhost"), Some((49983, "x".into())));
        assert_eq!(parse_host("8000-abc.arbor.test.", "arbor.test"), Some((8000, "abc".into())));
        for bad in [
            "arbor.test",
            "127.0.0.1:3000",
            "x-abc.arbor.test",
            "0-abc.arbor.test",
            "70000-a.arbor.test",
            "8000-.arbor.test",
            "8000-a.b.arbor.test",
            "8000-abc.other.test",
            "8000-abcarbor.test",
        ] {
            assert_eq!(parse_host(bad, "arbor.test"), None, "{bad}");
        }
    }
}

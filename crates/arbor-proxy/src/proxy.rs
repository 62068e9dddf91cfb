//! Forwarding one envd request to the sandbox it names.

use crate::{
    access::{Access, Service},
    body::ActivityBody,
    error::{ErrorShape, ProxyError},
    host::Tunnels,
    resolver::{Lookup, Resolver, Target},
    stream::ConnectStream,
};
use arbor_proto::connect::{CallKind, Codec};
use axum::{body::Body, extract::Request, response::Response, Router};
use http::{header, HeaderMap, HeaderName, Method, Uri, Version};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

/// Header naming the sandbox (Novita SDKs).
pub const SANDBOX_ID_HEADER: &str = "novita-sandbox-id";
/// Header naming the sandbox (upstream e2b SDKs).
pub const E2B_SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// envd's access token; also identifies the sandbox when no id is sent.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// How often an open body reports activity by default: far below any idle
/// timeout, so a sandbox with a live stream never looks idle.
pub const DEFAULT_ACTIVITY_INTERVAL: Duration = Duration::from_secs(15);

/// How long connecting to envd may take before the request fails with 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection to envd is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Headers that belong to one hop and must not be forwarded (RFC 9110 §7.6.1),
/// plus `expect`: our own server already answered `100-continue`.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

type UpstreamBody = ActivityBody<Body>;

/// The envd proxy: resolves each request's sandbox and streams the exchange
/// to and from its envd over pooled HTTP/1.1 connections.
pub struct Proxy {
    resolver: Arc<dyn Resolver>,
    client: Client<HttpConnector, UpstreamBody>,
    activity_interval: Duration,
    tunnels: Tunnels,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("activity_interval", &self.activity_interval).finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy over `resolver`, reporting open streams every
    /// [`DEFAULT_ACTIVITY_INTERVAL`].
    pub fn new(resolver: Arc<dyn Resolver>) -> Self {
        let mut connector = HttpConnector::new();
        // Connect messages are small writes; Nagle would hold them back.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector);
        Self { resolver, client, activity_interval: DEFAULT_ACTIVITY_INTERVAL, tunnels: Tunnels::default() }
    }

    /// Keeps open upgrade tunnels in `tunnels` (shared with whoever closes
    /// them when a sandbox pauses).
    pub fn with_tunnels(mut self, tunnels: Tunnels) -> Self {
        self.tunnels = tunnels;
        self
    }

    pub(crate) fn resolver(&self) -> &Arc<dyn Resolver> {
        &self.resolver
    }

    pub(crate) fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Sets how often an open request or response body reports activity
    /// (zero: only at the start and end of each request).
    pub fn with_activity_interval(mut self, every: Duration) -> Self {
        self.activity_interval = every;
        self
    }

    /// How often an open body reports activity.
    pub fn activity_interval(&self) -> Duration {
        self.activity_interval
    }

    /// An axum router that sends every request to [`Proxy::handle`]; mount it
    /// as the fallback of the API router, or nest it under the envd paths.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(move |req: Request| {
            let proxy = self.clone();
            async move { proxy.handle(req).await }
        })
    }

    /// Proxies one request. Errors of the proxy itself are answered in the
    /// shape the SDKs expect for the path (see [`ProxyError`]); everything
    /// envd answers is passed on unchanged.
    pub async fn handle(&self, req: Request) -> Response {
        match self.resolve(req.method(), req.uri(), req.headers()).await {
            Ok(target) => self.handle_target(req, target).await,
            Err(e) => {
                let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                tracing::debug!(error = %e, "envd proxy refused a request");
                e.into_response_shaped(ErrorShape::of(req.uri().path(), content_type))
            }
        }
    }

    /// Proxies one request to envd at `target`, its errors shaped for the path.
    pub(crate) async fn handle_target(&self, req: Request, target: Target) -> Response {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let shape = ErrorShape::of(req.uri().path(), content_type);
        let forwarded = async {
            let upstream = self.upstream_request(req, &target)?;
            let resp = self.send(upstream).await.map_err(|e| unreachable(&target, &e))?;
            Ok::<_, ProxyError>(self.downstream_response(resp, &target))
        };
        match forwarded.await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, "envd proxy refused a request");
                e.into_response_shaped(shape)
            }
        }
    }

    /// The request to send upstream to `target`: origin URI of the pool's
    /// authority, HTTP/1.1, hop-by-hop headers and `Host` dropped, a body
    /// that reports activity.
    pub(crate) fn upstream_request(
        &self,
        req: Request,
        target: &Target,
    ) -> Result<http::Request<UpstreamBody>, ProxyError> {
        self.resolver.activity(&target.sandbox_id);
        let sandbox_id: Arc<str> = Arc::from(target.sandbox_id.as_str());
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(pool_authority(target))
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ProxyError::Status {
                status: http::StatusCode::BAD_REQUEST,
                message: format!("cannot forward {path_and_query}: {e}"),
            })?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::EXPECT);
        // The client sets Host from the URI: envd sees its own address.
        parts.headers.remove(header::HOST);
        parts.extensions = http::Extensions::new();
        let body = ActivityBody::new(body, self.resolver.clone(), sandbox_id, self.activity_interval);
        Ok(http::Request::from_parts(parts, body))
    }

    /// Sends a request made by [`Proxy::upstream_request`] on a pooled connection.
    pub(crate) async fn send(
        &self,
        upstream: http::Request<UpstreamBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(upstream).await
    }

    /// The answer passed back: hop-by-hop headers dropped, the body
    /// reporting activity, a Connect stream ended cleanly if envd dies.
    pub(crate) fn downstream_response(&self, resp: http::Response<hyper::body::Incoming>, target: &Target) -> Response {
        let sandbox_id: Arc<str> = Arc::from(target.sandbox_id.as_str());
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The client's connection is ours: an HTTP/1.0 upstream (python's
        // http.server) must not turn it into HTTP/1.0.
        parts.version = Version::HTTP_11;
        let streaming = parts.status == http::StatusCode::OK
            && parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(Codec::from_content_type)
                .is_some_and(|(kind, _)| kind == CallKind::Streaming);
        let (resolver, every) = (self.resolver.clone(), self.activity_interval);
        let body = if streaming {
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = ConnectStream::new(body, sandbox_id.clone());
            Body::new(ActivityBody::new(body, resolver, sandbox_id, every))
        } else {
            Body::new(ActivityBody::new(body, resolver, sandbox_id, every))
        };
        Response::from_parts(parts, body)
    }

    // The parts, not `&Request`: a body is not `Sync`, and the future must be `Send`.
    async fn resolve(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Target, ProxyError> {
        let lookup = if let Some(id) = header_text(headers, SANDBOX_ID_HEADER)? {
            Lookup::Id(id)
        } else if let Some(id) = header_text(headers, E2B_SANDBOX_ID_HEADER)? {
            Lookup::Id(id)
        } else if let Some(token) = header_text(headers, ACCESS_TOKEN_HEADER)? {
            Lookup::Token(token)
        } else {
            return Err(ProxyError::NoSandbox);
        };
        let access = Access::of(Service::Envd, method, uri, headers);
        self.resolver.resolve(lookup, &access).await
    }
}

/// The URI authority of requests to `target`: `<key>@<addr>`.
///
/// The client pools connections by authority, so the userinfo part gives each
/// (sandbox, generation) pools of its own even when a new sandbox reuses an
/// address. It never reaches the wire: requests go out in origin form, and
/// `Host` is built from the host and port only.
fn pool_authority(target: &Target) -> String {
    let mut h = std::hash::DefaultHasher::new();
    (target.sandbox_id.as_str(), target.generation).hash(&mut h);
    format!("{:016x}@{}", h.finish(), target.addr)
}

/// The trimmed value of a header, `None` if absent or empty.
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ProxyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().map_err(|_| ProxyError::BadHeader(name))?.trim();
            Ok((!text.is_empty()).then_some(text))
        }
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The innermost cause of an upstream error: it reads best ("Connection
/// refused (os error 111)").
pub(crate) fn root_cause(e: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn unreachable(target: &Target, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let cause = root_cause(e);
    let reason =
        if e.is_connect() { format!("cannot connect to envd: {cause}") } else { format!("envd failed: {cause}") };
    tracing::warn!(sandbox = %target.sandbox_id, addr = %target.addr, %reason, "envd proxy upstream error");
    ProxyError::Unreachable { sandbox_id: target.sandbox_id.clone(), reason }
}

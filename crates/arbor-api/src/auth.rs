//! `X-API-KEY` on every control-plane route, and the team a request acts for.
//!
//! Keys are stored hashed; a verified key is remembered for a few seconds
//! so a burst of requests costs one lookup, and a key revoked on the host
//! stops working within that time (one revoked through the API at once).
//! The middleware puts the key's [`Tenant`] in the request; handlers take it
//! as an extractor and look rows up through [`Tenant::scope`], so a handler
//! cannot reach another team's rows by forgetting a filter. Failed keys are
//! rate limited per client address ([`crate::ratelimit`]).

use crate::{app::App, error::ApiError};
use arbor_store::{KeyInfo, KeyRole, Store, TeamScope};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{request::Parts, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a verified key is trusted without asking the store again.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// Who a request acts for: the team of its API key, and what the key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The key's team; every row the request sees or makes is this team's.
    pub team_id: String,
    /// The key's id (`k_…`).
    pub key_id: String,
    /// Member or admin.
    pub role: KeyRole,
}

impl Tenant {
    /// The store as this team sees it.
    pub fn scope<'a>(&'a self, store: &'a Store) -> TeamScope<'a> {
        store.team(&self.team_id)
    }

    fn of(key: &KeyInfo) -> Tenant {
        Tenant { team_id: key.team_id.clone(), key_id: key.id.clone(), role: key.role }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only a route outside `require_key` lacks it: a bug, not the client's.
        parts.extensions.get::<Tenant>().cloned().ok_or_else(|| ApiError::internal("auth", "no tenant on the request"))
    }
}

/// A [`Tenant`] whose key is an admin key; any other key gets 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Tenant);

impl Admin {
    /// `tenant` if its key is an admin key, else 403. Routes with a body
    /// check this in the handler, after the body is read: a request answered
    /// before its body was read may cost the client its connection.
    pub fn check(tenant: Tenant) -> Result<Admin, ApiError> {
        if tenant.role != KeyRole::Admin {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "this route needs an admin API key"));
        }
        Ok(Admin(tenant))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Admin::check(Tenant::from_request_parts(parts, state).await?)
    }
}

/// Keys verified recently, by the SHA-256 of the secret.
#[derive(Debug, Default)]
pub struct KeyCache {
    verified: Mutex<HashMap<[u8; 32], (Tenant, Instant)>>,
}

impl KeyCache {
    fn fresh(&self, digest: &[u8; 32]) -> Option<Tenant> {
        let map = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(digest).filter(|(_, at)| at.elapsed() < CACHE_FOR).map(|(tenant, _)| tenant.clone())
    }

    fn remember(&self, digest: [u8; 32], tenant: Tenant) {
        let mut map = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        map.insert(digest, (tenant, Instant::now()));
    }

    /// Forgets key `key_id` (revoked through the API): it fails at once.
    pub fn forget_key(&self, key_id: &str) {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, (t, _)| t.key_id != key_id);
    }
}

/// The client's address: the connection's peer when the server was started
/// with connect info, else one shared stand-in (all such clients then share
/// one failed-key budget).
fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn too_many(wait: Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed API keys from this address; retry in {secs} s"),
    )
    .into_response();
    response.headers_mut().insert("retry-after", HeaderValue::from(secs));
    response
}

/// The middleware: 401 with a JSON body unless the request carries a valid
/// key, 429 once its address has tried too many wrong ones; otherwise the
/// request goes on with the key's [`Tenant`] in its extensions.
pub async fn require_key(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
    let Some(header) = request.headers().get("x-api-key") else {
        return unauthorized("missing X-API-KEY header");
    };
    let Ok(key) = header.to_str() else {
        return unauthorized("invalid X-API-KEY header");
    };
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let tenant = match app.keys.fresh(&digest) {
        Some(tenant) => tenant,
        None => {
            let ip = client_ip(&request);
            if let Err(wait) = app.failed_auth.acquire(ip, Instant::now()) {
                return too_many(wait);
            }
            match app.store.verify_key(key).await {
                Ok(Some(info)) => {
                    app.failed_auth.refund(ip, Instant::now());
                    let tenant = Tenant::of(&info);
                    app.keys.remember(digest, tenant.clone());
                    tenant
                }
                Ok(None) => return unauthorized("invalid API key"),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    request.extensions_mut().insert(tenant);
    next.run(request).await
}

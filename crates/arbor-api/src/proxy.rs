//! Where the envd proxy sends a request: the running sandbox named by its
//! id header or owning its access token, from the in-memory registry; a
//! paused sandbox with auto-resume is resumed first, the request held, if
//! the request carries the sandbox's credentials (otherwise a paused
//! sandbox answers as an unknown one).

use crate::app::{now_ms, App};
use arbor_proxy::{Access, Lookup, ProxyError, Resolver, Target};
use arbor_store::State;
use std::sync::Arc;

/// The deadline of a sandbox a request resumed (auto-resume): 5 minutes.
const AUTO_RESUME_TIMEOUT_MS: i64 = 300_000;

/// The control plane as the proxy's resolver.
#[derive(Debug)]
struct EnvdRoutes {
    app: Arc<App>,
}

impl EnvdRoutes {
    /// Whether `access` holds the credentials of sandbox `id` as its record
    /// has them (see [`Access::allows`]): the rule for paused sandboxes.
    async fn may_wake(&self, id: &str, access: &Access<'_>) -> bool {
        match self.app.store.get_sandbox(id).await {
            Ok(Some(r)) if r.state != State::Killed => {
                access.allows(&r.envd_token, r.traffic_token.as_deref(), arbor_proxy::unix_now())
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(%id, "reading the sandbox for the proxy: {e}");
                false
            }
        }
    }

    fn live(&self, id: &str) -> Option<Target> {
        self.app.registry.get(id).map(|live| {
            let mut target = Target::new(id, live.addr);
            target.generation = live.generation;
            target.traffic_token = live.traffic_token;
            target
        })
    }
}

#[async_trait::async_trait]
impl Resolver for EnvdRoutes {
    async fn resolve(&self, lookup: Lookup<'_>, access: &Access<'_>) -> Result<Target, ProxyError> {
        let app = &self.app;
        let id = match lookup {
            Lookup::Id(id) => id.to_string(),
            Lookup::Token(token) => match app.registry.id_by_token(token) {
                Some(id) => id,
                // A paused sandbox is not in the registry.
                None => match app.store.sandbox_by_token(token).await {
                    Ok(Some(r)) if r.state == State::Paused => r.id,
                    _ => return Err(ProxyError::UnknownToken),
                },
            },
        };
        if let Some(target) = self.live(&id) {
            return Ok(target);
        }
        // Not running. Only a request with the sandbox's credentials may
        // wake it, wait for it or learn that it exists: any other gets the
        // answer of an unknown id, at once (no wait on its lock either).
        if !self.may_wake(&id, access).await {
            return Err(ProxyError::NotFound(id));
        }
        // Wait out a pause or resume in progress.
        drop(app.locks.lock(&id).await);
        if let Some(target) = self.live(&id) {
            return Ok(target);
        }
        match app.store.get_sandbox(&id).await {
            Ok(Some(r)) if r.state == State::Paused && r.auto_resume => {
                let resumed = app.resume(&id, AUTO_RESUME_TIMEOUT_MS).await;
                match resumed {
                    Ok(_) => self.live(&id).ok_or_else(|| ProxyError::NotFound(id.clone())),
                    Err(e) => Err(ProxyError::Status {
                        status: e.status,
                        message: format!("resuming sandbox {id}: {}", e.message),
                    }),
                }
            }
            Ok(Some(r)) if r.state == State::Paused => Err(ProxyError::Paused(id)),
            _ => Err(ProxyError::NotFound(id)),
        }
    }

    fn activity(&self, sandbox_id: &str) {
        self.app.registry.touch(sandbox_id, now_ms());
    }
}

/// The proxy over `app`'s sandboxes.
pub fn proxy(app: Arc<App>) -> Arc<arbor_proxy::Proxy> {
    let tunnels = app.tunnels.clone();
    Arc::new(arbor_proxy::Proxy::new(Arc::new(EnvdRoutes { app })).with_tunnels(tunnels))
}

/// The envd proxy over `app`'s sandboxes, to serve as the API router's fallback.
pub fn router(app: Arc<App>) -> axum::Router {
    proxy(app).router()
}

/// Serves requests whose `Host` is a sandbox's public URL
/// (`<port>-<id>.<domain>`) through the proxy, whatever their path; all
/// others go on to the API.
pub async fn by_host(
    axum::extract::State((domain, proxy)): axum::extract::State<(Arc<str>, Arc<arbor_proxy::Proxy>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host.and_then(|h| arbor_proxy::parse_host(h, &domain)) {
        Some((port, id)) => proxy.handle_host(req, port, &id).await,
        None => next.run(req).await,
    }
}

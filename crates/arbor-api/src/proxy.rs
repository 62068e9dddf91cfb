//! Where the envd proxy sends a request: the running sandbox named by its
//! id header or owning its access token, from the in-memory registry.

use crate::app::{now_ms, App};
use arbor_proxy::{Lookup, ProxyError, Resolver, Target};
use arbor_store::State;
use axum::http::StatusCode;
use std::sync::Arc;

/// The control plane as the proxy's resolver.
#[derive(Debug)]
struct EnvdRoutes {
    app: Arc<App>,
}

#[async_trait::async_trait]
impl Resolver for EnvdRoutes {
    async fn resolve(&self, lookup: Lookup<'_>) -> Result<Target, ProxyError> {
        let id = match lookup {
            Lookup::Id(id) => id.to_string(),
            Lookup::Token(token) => self.app.registry.id_by_token(token).ok_or(ProxyError::UnknownToken)?,
        };
        if let Some(live) = self.app.registry.get(&id) {
            return Ok(Target::new(id, live.addr));
        }
        // Not running here: say why, if the store knows the sandbox.
        match self.app.store.get_sandbox(&id).await {
            Ok(Some(r)) if r.state == State::Paused => Err(ProxyError::Status {
                status: StatusCode::CONFLICT,
                message: format!("sandbox {id} is paused; connect to resume it"),
            }),
            _ => Err(ProxyError::NotFound(id)),
        }
    }

    fn activity(&self, sandbox_id: &str) {
        self.app.registry.touch(sandbox_id, now_ms());
    }
}

/// The envd proxy over `app`'s sandboxes, to serve as the API router's fallback.
pub fn router(app: Arc<App>) -> axum::Router {
    arbor_proxy::router(Arc::new(EnvdRoutes { app }))
}

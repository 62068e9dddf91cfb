//! `X-API-KEY` on every control-plane route.
//!
//! Keys are stored hashed; a verified key is remembered for a few seconds
//! so a burst of requests costs one lookup, and a revoked key stops working
//! within that time.

use crate::{app::App, error::ApiError};
use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a verified key is trusted without asking the store again.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// Keys verified recently, by the SHA-256 of the secret.
#[derive(Debug, Default)]
pub struct KeyCache {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl KeyCache {
    fn fresh(&self, digest: &[u8; 32]) -> bool {
        let map = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(digest).is_some_and(|at| at.elapsed() < CACHE_FOR)
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, at| at.elapsed() < CACHE_FOR);
        map.insert(digest, Instant::now());
    }
}

/// The middleware: 401 with a JSON body unless the request carries a valid key.
pub async fn require_key(State(app): State<Arc<App>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, msg);
    let key = request
        .headers()
        .get("x-api-key")
        .ok_or_else(|| unauthorized("missing X-API-KEY header"))?
        .to_str()
        .map_err(|_| unauthorized("invalid X-API-KEY header"))?;
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if !app.keys.fresh(&digest) {
        match app.store.verify_key(key).await? {
            Some(_) => app.keys.remember(digest),
            None => return Err(unauthorized("invalid API key")),
        }
    }
    Ok(next.run(request).await)
}

//! The HTTP router: Connect services, `/files`, `/health`, `/init`, `/envs`.

use crate::{connect, filesystem, http, process, state::Envd};
use arbor_proto::connect::{CallKind, Codec};
use axum::{
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use std::sync::Arc;

/// Builds the router over shared state.
pub fn router(envd: Arc<Envd>) -> Router {
    let rpc = Router::new()
        .route("/process.Process/{method}", post(process::rpc::serve))
        .route("/filesystem.Filesystem/{method}", post(filesystem::rpc::serve))
        .route_layer(middleware::from_fn_with_state(envd.clone(), require_token_rpc));
    let authenticated = Router::new()
        .route("/init", post(http::init::init))
        .route("/envs", get(http::envs))
        .route_layer(middleware::from_fn_with_state(envd.clone(), require_token));
    Router::new()
        .route("/health", get(http::health))
        // `/files` checks the token itself: a signed URL may stand in for it.
        .route("/files", get(http::files::download).post(http::files::upload).layer(DefaultBodyLimit::disable()))
        .merge(authenticated)
        .merge(rpc)
        .fallback(not_found)
        .with_state(envd)
}

async fn require_token(State(envd): State<Arc<Envd>>, req: Request, next: Next) -> Response {
    match envd.auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => http::error_response(&e),
    }
}

/// The token check of Connect routes answers in Connect's shape: a JSON
/// error with a string code for unary calls, an end-stream error for streams.
async fn require_token_rpc(State(envd): State<Arc<Envd>>, req: Request, next: Next) -> Response {
    let Err(e) = envd.auth.check(req.headers()) else { return next.run(req).await };
    let content_type = req.headers().get(::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match Codec::from_content_type(content_type) {
        Some((CallKind::Streaming, codec)) => connect::stream_error(codec, e.into()),
        _ => connect::error_response(::http::StatusCode::UNAUTHORIZED, &e.into()),
    }
}

async fn not_found(req: Request) -> Response {
    (
        ::http::StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "code": 404,
            "message": format!("no such envd endpoint: {} {}", req.method(), req.uri().path()),
        })),
    )
        .into_response()
}

//! envd's plain HTTP endpoints (everything that is not Connect-RPC).

pub mod files;
pub mod init;
pub mod signature;

use crate::{error::Error, state::Envd};
use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use std::sync::Arc;

/// `GET /health`: 204 while the daemon serves requests.
pub async fn health() -> http::StatusCode {
    http::StatusCode::NO_CONTENT
}

/// `GET /envs`: the environment variables every process gets.
pub async fn envs(State(envd): State<Arc<Envd>>) -> Json<std::collections::HashMap<String, String>> {
    Json(envd.defaults().envs)
}

/// An error as the SDKs expect it from envd's HTTP endpoints:
/// `{"code": <http status>, "message": "..."}`.
pub fn error_response(err: &Error) -> Response {
    let status = err.http_status();
    (status, Json(serde_json::json!({ "code": status.as_u16(), "message": err.to_string() }))).into_response()
}

//! `/files` (scaffold; replaced by the full implementation).
use crate::{error::Error, state::Envd};
use axum::{extract::State, response::Response};
use std::sync::Arc;

/// `GET /files`.
pub async fn download(State(_envd): State<Arc<Envd>>) -> Response {
    super::error_response(&Error::Unimplemented("download".into()))
}

/// `POST /files`.
pub async fn upload(State(_envd): State<Arc<Envd>>) -> Response {
    super::error_response(&Error::Unimplemented("upload".into()))
}

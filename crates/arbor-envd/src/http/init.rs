//! `POST /init` (scaffold; replaced by the full implementation).
use crate::{error::Error, state::Envd};
use axum::{extract::State, response::Response};
use std::sync::Arc;

/// `POST /init`.
pub async fn init(State(_envd): State<Arc<Envd>>) -> Response {
    super::error_response(&Error::Unimplemented("init".into()))
}

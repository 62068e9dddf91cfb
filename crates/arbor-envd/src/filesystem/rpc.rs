//! Filesystem RPC dispatch (scaffold; replaced by the full implementation).
use crate::{connect, state::Envd};
use arbor_proto::connect::{Code, ConnectError};
use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::HeaderMap;
use std::sync::Arc;

/// `POST /filesystem.Filesystem/{method}`.
pub async fn serve(
    State(_envd): State<Arc<Envd>>,
    Path(method): Path<String>,
    _headers: HeaderMap,
    _body: Body,
) -> Response {
    connect::error_response(
        http::StatusCode::NOT_IMPLEMENTED,
        &ConnectError::new(Code::Unimplemented, method),
    )
}

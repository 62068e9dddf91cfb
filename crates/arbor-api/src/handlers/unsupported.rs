//! Routes the SDKs know whose behaviour belongs to later work (pause,
//! snapshots, clone, templates, volumes): each answers a clear JSON error
//! rather than a bare 404, so the SDK raises a readable exception.

use crate::{app::App, auth::Tenant, error::ApiError, handlers::existing};
use axum::{
    extract::{Path, State as AxState},
    http::{StatusCode, Uri},
};
use std::sync::Arc;

/// A sandbox operation this server does not offer yet: 404 for an unknown
/// sandbox (the SDKs map it to "not found"), 501 otherwise.
pub async fn sandbox_operation(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path((id, op)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    existing(&app, &tenant, &id).await?;
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, format!("'{op}' is not available on this server yet")))
}

/// Any other path under the API: a JSON 404 naming it.
pub async fn unknown(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no API route for {}", uri.path()))
}

//! `PUT /sandboxes/{id}/network`: egress lists of a running sandbox, applied
//! at once.

use super::{existing, sandboxes::policy};
use crate::{
    app::App,
    auth::Tenant,
    error::{bad_json, ApiError, ApiResult},
    model::NetworkConfig,
};
use arbor_store::State;
use axum::{
    extract::{rejection::JsonRejection, Path, State as AxState},
    http::StatusCode,
    Json,
};
use std::sync::Arc;

/// Replaces the sandbox's `allowOut` / `denyOut` lists.
#[utoipa::path(put, path = "/sandboxes/{id}/network", params(("id" = String, Path)), request_body = NetworkConfig,
    responses((status = 204), (status = 400, body = crate::model::ErrorBody), (status = 404, body = crate::model::ErrorBody)))]
pub async fn set_network(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Result<Json<NetworkConfig>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body.map_err(bad_json)?;
    let mut record = existing(&app, &tenant, &id).await?;
    let mut network: NetworkConfig =
        record.network.clone().and_then(|n| serde_json::from_value(n).ok()).unwrap_or_default();
    network.allow_out = req.allow_out;
    network.deny_out = req.deny_out;
    let policy = policy(record.allow_internet, Some(&network))?;
    if record.state == State::Running {
        app.node.set_policy(&id, policy).await?;
    }
    record.network =
        Some(serde_json::to_value(&network).map_err(|e| ApiError::internal("encoding the network options", e))?);
    app.store.update_sandbox(&record).await?;
    Ok(StatusCode::NO_CONTENT)
}

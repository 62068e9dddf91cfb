//! Pause, snapshots (create, list, delete) and clone.

use super::existing;
use crate::{
    app::{now_ms, App},
    error::{ApiError, ApiResult},
    model::{CloneRequest, CloneResponse, ClonedSandbox, NewSnapshot, SnapshotInfo},
};
use arbor_store::{SnapshotKind, SnapshotQuery, SnapshotRecord, State};
use axum::{
    body::Bytes,
    extract::{Path, Query, State as AxState},
    http::{HeaderMap, HeaderValue, StatusCode},
    Json,
};
use serde::Deserialize;
use std::sync::Arc;

/// A JSON body that may also be empty (the SDKs send none, `{}` or fields).
fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn info(snap: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo { snapshot_id: snap.id.clone(), names: snap.names.clone() }
}

/// `POST /sandboxes/{id}/pause`: 204, 409 if already paused.
#[utoipa::path(post, path = "/sandboxes/{id}/pause", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::model::ErrorBody), (status = 409, body = crate::model::ErrorBody)))]
pub async fn pause(AxState(app): AxState<Arc<App>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/snapshots`: 201 with the snapshot's id and names.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", params(("id" = String, Path)), request_body = NewSnapshot,
    responses((status = 201, body = SnapshotInfo), (status = 404, body = crate::model::ErrorBody)))]
pub async fn create_snapshot(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    let req: NewSnapshot = optional_json(&body)?;
    let name = req.name.filter(|n| !n.trim().is_empty());
    let snap = app.snapshot(&id, SnapshotKind::Snapshot, name).await?;
    Ok((StatusCode::CREATED, Json(info(&snap))))
}

/// Query of `GET /snapshots`.
#[derive(Debug, Deserialize)]
pub struct SnapshotsQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    limit: Option<u32>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `GET /snapshots?sandboxID=&limit=&nextToken=`: oldest first, paginated
/// with `X-Next-Token`.
#[utoipa::path(get, path = "/snapshots",
    params(("sandboxID" = Option<String>, Query), ("limit" = Option<u32>, Query), ("nextToken" = Option<String>, Query)),
    responses((status = 200, body = [SnapshotInfo], headers(("X-Next-Token" = String))),
              (status = 400, body = crate::model::ErrorBody)))]
pub async fn list_snapshots(
    AxState(app): AxState<Arc<App>>,
    query: Result<Query<SnapshotsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(HeaderMap, Json<Vec<SnapshotInfo>>)> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(limit) = q.limit.filter(|l| !(1..=arbor_store::MAX_LIMIT).contains(l)) {
        return Err(ApiError::bad_request(format!("limit must be 1..={}, got {limit}", arbor_store::MAX_LIMIT)));
    }
    let query = SnapshotQuery {
        sandbox_id: q.sandbox_id.filter(|s| !s.is_empty()),
        kind: None,
        limit: q.limit.unwrap_or(0),
        next_token: q.next_token.filter(|t| !t.is_empty()),
    };
    let page = app.store.list_snapshots(&query).await.map_err(|e| match e {
        arbor_store::Error::InvalidArgument(msg) => ApiError::bad_request(msg),
        other => other.into(),
    })?;
    let mut headers = HeaderMap::new();
    if let Some(token) = page.next_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-next-token", token);
    }
    Ok((headers, Json(page.items.iter().map(info).collect())))
}

/// `DELETE /templates/{id}` for a snapshot: 204; 404 unknown; 409 in use.
#[utoipa::path(delete, path = "/templates/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::model::ErrorBody), (status = 409, body = crate::model::ErrorBody)))]
pub async fn delete_template(AxState(app): AxState<Arc<App>>, Path(rest): Path<String>) -> ApiResult<StatusCode> {
    app.delete_snapshot(&rest).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/clone`: running clones of the sandbox, from a
/// snapshot taken now.
#[utoipa::path(post, path = "/sandboxes/{id}/clone", params(("id" = String, Path)), request_body = CloneRequest,
    responses((status = 201, body = CloneResponse), (status = 400, body = crate::model::ErrorBody),
              (status = 404, body = crate::model::ErrorBody), (status = 429, body = crate::model::ErrorBody)))]
pub async fn clone(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<CloneResponse>)> {
    let req: CloneRequest = optional_json(&body)?;
    let origin = existing(&app, &id).await?;
    let count = req.count.unwrap_or(1);
    if count == 0 {
        return Err(ApiError::bad_request("count must be at least 1"));
    }
    let running = app.registry.ids().len() as u64;
    let free = app.cfg.max_sandboxes.saturating_sub(running);
    let count = if count <= free {
        count
    } else if req.strict || free == 0 {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{count} clones asked, but only {free} more sandboxes may run on this server"),
        ));
    } else {
        free
    };
    let timeout_ms = match (req.timeout, origin.state) {
        (Some(t), _) if t <= 0 => return Err(ApiError::bad_request(format!("timeout must be positive, got {t}"))),
        (Some(t), _) => t.saturating_mul(1000),
        (None, State::Running) => origin.end_at.saturating_sub(now_ms()).max(1000),
        (None, _) => i64::try_from(app.cfg.default_timeout.as_millis()).unwrap_or(i64::MAX),
    };
    let (clones, snapshot) = app.clone_sandbox(&origin, count, req.strict, timeout_ms).await?;
    let sandboxes: Vec<ClonedSandbox> = clones
        .iter()
        .map(|r| ClonedSandbox {
            sandbox_id: r.id.clone(),
            template_id: r.template_id.clone(),
            envd_version: arbor_proto::ENVD_VERSION.into(),
            envd_access_token: r.envd_token.clone(),
            traffic_access_token: r.traffic_token.clone(),
            domain: Some(app.cfg.domain.clone()),
        })
        .collect();
    tracing::info!(origin = %id, count = sandboxes.len(), %snapshot, "sandbox cloned");
    Ok((StatusCode::CREATED, Json(CloneResponse { count: sandboxes.len(), sandboxes, snapshot_template_id: snapshot })))
}

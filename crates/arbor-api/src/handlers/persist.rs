//! Pause, snapshots (create, list, delete), clone and fork.

use super::existing;
use crate::{
    app::{ms, now_ms, App},
    auth::Tenant,
    error::{ApiError, ApiResult},
    model::{
        CloneRequest, CloneResponse, ClonedSandbox, ErrorBody, ForkRequest, ForkResult, NewSnapshot, SnapshotInfo,
    },
};
use arbor_store::{SandboxRecord, SnapshotKind, SnapshotQuery, SnapshotRecord, State};
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
pub async fn pause(AxState(app): AxState<Arc<App>>, tenant: Tenant, Path(id): Path<String>) -> ApiResult<StatusCode> {
    // The team's, or 404; the pause itself then goes by id (ids never change team).
    existing(&app, &tenant, &id).await?;
    app.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/snapshots`: 201 with the snapshot's id and names.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", params(("id" = String, Path)), request_body = NewSnapshot,
    responses((status = 201, body = SnapshotInfo), (status = 404, body = crate::model::ErrorBody)))]
pub async fn create_snapshot(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    let req: NewSnapshot = optional_json(&body)?;
    existing(&app, &tenant, &id).await?;
    if req.memory == Some(false) {
        return Err(ApiError::bad_request("filesystem-only snapshots (memory: false) are not supported; omit it"));
    }
    let name = req.name.filter(|n| !n.trim().is_empty());
    let snap = app.snapshot(&id, SnapshotKind::Snapshot, name).await?;
    Ok((StatusCode::CREATED, Json(info(&snap))))
}

/// Query of `GET /snapshots`.
#[derive(Debug, Deserialize)]
pub struct SnapshotsQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<u32>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `GET /snapshots?sandboxID=&name=&limit=&nextToken=`: oldest first,
/// paginated with `X-Next-Token`.
#[utoipa::path(get, path = "/snapshots",
    params(("sandboxID" = Option<String>, Query), ("name" = Option<String>, Query), ("limit" = Option<u32>, Query),
           ("nextToken" = Option<String>, Query)),
    responses((status = 200, body = [SnapshotInfo], headers(("X-Next-Token" = String))),
              (status = 400, body = crate::model::ErrorBody)))]
pub async fn list_snapshots(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    query: Result<Query<SnapshotsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(HeaderMap, Json<Vec<SnapshotInfo>>)> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(limit) = q.limit.filter(|l| !(1..=arbor_store::MAX_LIMIT).contains(l)) {
        return Err(ApiError::bad_request(format!("limit must be 1..={}, got {limit}", arbor_store::MAX_LIMIT)));
    }
    let query = SnapshotQuery {
        sandbox_id: q.sandbox_id.filter(|s| !s.is_empty()),
        kind: None,
        name: q.name.filter(|n| !n.is_empty()),
        limit: q.limit.unwrap_or(0),
        next_token: q.next_token.filter(|t| !t.is_empty()),
    };
    let page = tenant.scope(&app.store).list_snapshots(&query).await.map_err(|e| match e {
        arbor_store::Error::InvalidArgument(msg) => ApiError::bad_request(msg),
        other => other.into(),
    })?;
    let mut headers = HeaderMap::new();
    if let Some(token) = page.next_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-next-token", token);
    }
    Ok((headers, Json(page.items.iter().map(info).collect())))
}

/// Checks a clone's `count` against the free sandbox quota: the count to
/// make, or 429 when `strict` (or nothing is free).
fn clone_count(app: &App, asked: Option<u64>, strict: bool) -> ApiResult<u64> {
    let count = asked.unwrap_or(1);
    if count == 0 {
        return Err(ApiError::bad_request("count must be at least 1"));
    }
    let free = app.cfg.max_sandboxes.saturating_sub(app.registry.ids().len() as u64);
    if count <= free {
        Ok(count)
    } else if strict || free == 0 {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{count} clones asked, but only {free} more sandboxes may run on this server"),
        ))
    } else {
        Ok(free)
    }
}

/// A clone's lifetime: as asked, else the origin's remaining time if it
/// runs, else the default timeout.
fn clone_timeout_ms(app: &App, origin: &SandboxRecord, asked: Option<i64>) -> ApiResult<i64> {
    match (asked, origin.state) {
        (Some(t), _) if t <= 0 => Err(ApiError::bad_request(format!("timeout must be positive, got {t}"))),
        (Some(t), _) => Ok(t.saturating_mul(1000)),
        (None, State::Running) => Ok(origin.end_at.saturating_sub(now_ms()).max(1000)),
        (None, _) => Ok(ms(app.cfg.default_timeout)),
    }
}

/// `POST /sandboxes/{id}/clone`: running clones of the sandbox, from a
/// snapshot taken now.
#[utoipa::path(post, path = "/sandboxes/{id}/clone", params(("id" = String, Path)), request_body = CloneRequest,
    responses((status = 201, body = CloneResponse), (status = 400, body = crate::model::ErrorBody),
              (status = 404, body = crate::model::ErrorBody), (status = 429, body = crate::model::ErrorBody)))]
pub async fn clone(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<CloneResponse>)> {
    let req: CloneRequest = optional_json(&body)?;
    let origin = existing(&app, &tenant, &id).await?;
    let count = clone_count(&app, req.count, req.strict)?;
    let timeout_ms = clone_timeout_ms(&app, &origin, req.timeout)?;
    let (results, snapshot) = app.clone_sandbox(&origin, count, req.strict, timeout_ms).await?;
    let sandboxes: Vec<ClonedSandbox> = results
        .iter()
        .flatten()
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

/// `POST /sandboxes/{id}/fork` (the `e2b` SDK's clone): 201 with one
/// `{sandbox}` or `{error}` per fork.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", params(("id" = String, Path)), request_body = ForkRequest,
    responses((status = 201, body = [ForkResult]), (status = 404, body = crate::model::ErrorBody),
              (status = 429, body = crate::model::ErrorBody)))]
pub async fn fork(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Vec<ForkResult>>)> {
    let req: ForkRequest = optional_json(&body)?;
    let origin = existing(&app, &tenant, &id).await?;
    let count = clone_count(&app, req.count, false)?;
    let timeout_ms = clone_timeout_ms(&app, &origin, req.timeout)?;
    let (results, _) = app.clone_sandbox(&origin, count, false, timeout_ms).await?;
    let forks = results
        .into_iter()
        .map(|r| match r {
            Ok(record) => ForkResult { sandbox: Some(super::sandbox_json(&app, &record)), error: None },
            Err(e) => {
                ForkResult { sandbox: None, error: Some(ErrorBody { code: e.status.as_u16(), message: e.message }) }
            }
        })
        .collect();
    Ok((StatusCode::CREATED, Json(forks)))
}

//! `GET /sandboxes/{id}/metrics` and `GET /sandboxes/quota`.

use crate::{
    app::{now_ms, rfc3339, App},
    auth::Tenant,
    error::{ApiError, ApiResult},
    model::{Quota, QuotaLimit, QuotaUsage, SandboxMetric},
};
use axum::{
    extract::{Path, Query, State as AxState},
    Json,
};
use serde::Deserialize;
use std::sync::Arc;

/// The time range of a metrics request, in unix seconds.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Range {
    /// From (inclusive); the sandbox's start when absent.
    pub start: Option<i64>,
    /// To (inclusive); now when absent.
    pub end: Option<i64>,
}

/// `GET /sandboxes/{id}/metrics?start=&end=`: samples taken every 2 s.
#[utoipa::path(get, path = "/sandboxes/{id}/metrics", params(("id" = String, Path), Range),
    responses((status = 200, body = [SandboxMetric]), (status = 404, body = crate::model::ErrorBody)))]
pub async fn metrics(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    range: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<SandboxMetric>>> {
    let Query(range) = range.map_err(|e| ApiError::bad_request(format!("invalid range: {}", e.body_text())))?;
    let start = range.start.map_or(0, |s| s.saturating_mul(1000));
    let end = range.end.map_or_else(now_ms, |e| e.saturating_mul(1000).saturating_add(999));
    let team = tenant.scope(&app.store);
    let samples = team.metrics(&id, start, end).await?;
    if samples.is_empty() && team.get_sandbox(&id).await?.is_none() {
        return Err(ApiError::sandbox_not_found(&id));
    }
    Ok(Json(
        samples
            .into_iter()
            .map(|m| SandboxMetric {
                cpu_count: m.cpu_count,
                cpu_used_pct: m.cpu_used_pct,
                mem_total: m.mem_total_mib << 20,
                mem_used: m.mem_used_mib << 20,
                mem_total_mib: m.mem_total_mib,
                mem_used_mib: m.mem_used_mib,
                disk_total: m.disk_total,
                disk_used: m.disk_used,
                timestamp: rfc3339(m.timestamp),
                timestamp_unix: m.timestamp / 1000,
            })
            .collect(),
    ))
}

/// `GET /sandboxes/quota`: this server's limits and what the key's team runs now.
#[utoipa::path(get, path = "/sandboxes/quota", responses((status = 200, body = Quota)))]
pub async fn quota(AxState(app): AxState<Arc<App>>, tenant: Tenant) -> ApiResult<Json<Quota>> {
    let usage = tenant.scope(&app.store).usage().await?;
    Ok(Json(Quota {
        limit: QuotaLimit {
            concurrent_instances: app.cfg.max_sandboxes,
            concurrent_vcpu: app.cfg.max_sandboxes.saturating_mul(8),
            concurrent_ram_mb: app.cfg.max_sandboxes.saturating_mul(65536),
            max_length_hours: app.cfg.max_lifetime.as_secs().div_ceil(3600),
            disk_mb: arbor_node::DEFAULT_DISK_MB,
            max_vcpu: 8,
            max_ram_mb: 65536,
        },
        usage: QuotaUsage {
            concurrent_instances: usage.running,
            concurrent_vcpu: usage.vcpu,
            concurrent_ram_mb: usage.memory_mb,
        },
    }))
}

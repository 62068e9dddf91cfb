//! Route handlers, one module per resource.

pub mod list;
pub mod metrics;
pub mod network;
pub mod persist;
pub mod sandboxes;
pub mod teams;
pub mod templates;
pub mod unsupported;

use crate::{
    app::{rfc3339, App},
    auth::Tenant,
    error::ApiError,
    model::{Lifecycle, NetworkConfig, Sandbox, SandboxDetail},
};
use arbor_store::{SandboxRecord, State};

/// The record of a sandbox of `tenant`'s team that exists (running or
/// paused), or 404 — the same 404 for another team's sandbox.
pub async fn existing(app: &App, tenant: &Tenant, id: &str) -> Result<SandboxRecord, ApiError> {
    match tenant.scope(&app.store).get_sandbox(id).await? {
        Some(r) if r.state != State::Killed => Ok(r),
        _ => Err(ApiError::sandbox_not_found(id)),
    }
}

/// What create and connect answer.
pub fn sandbox_json(app: &App, r: &SandboxRecord) -> Sandbox {
    Sandbox {
        sandbox_id: r.id.clone(),
        template_id: r.template_id.clone(),
        client_id: CLIENT_ID.into(),
        envd_version: arbor_proto::ENVD_VERSION.into(),
        envd_access_token: r.envd_token.clone(),
        traffic_access_token: r.traffic_token.clone(),
        domain: Some(app.cfg.domain.clone()),
        alias: r.alias.clone(),
    }
}

/// What get_info and the lists answer; `detail` adds the per-sandbox secrets
/// and options only `GET /sandboxes/{id}` shows.
pub fn detail_json(app: &App, r: &SandboxRecord, detail: bool) -> SandboxDetail {
    let network: Option<NetworkConfig> = r.network.clone().and_then(|n| serde_json::from_value(n).ok());
    SandboxDetail {
        sandbox_id: r.id.clone(),
        template_id: r.template_id.clone(),
        client_id: CLIENT_ID.into(),
        team_id: r.team_id.clone(),
        alias: r.alias.clone(),
        envd_version: arbor_proto::ENVD_VERSION.into(),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_mb,
        started_at: rfc3339(r.started_at),
        end_at: rfc3339(r.end_at),
        state: r.state.as_str().into(),
        metadata: r.metadata.clone(),
        envd_access_token: detail.then(|| r.envd_token.clone()),
        domain: detail.then(|| app.cfg.domain.clone()),
        allow_internet_access: detail.then_some(r.allow_internet),
        network: if detail { network } else { None },
        lifecycle: detail.then(|| Lifecycle {
            auto_resume: r.auto_resume,
            on_timeout: if r.auto_pause { "pause" } else { "kill" }.into(),
        }),
    }
}

/// The `clientID` every response carries (legacy SDKs need one).
pub const CLIENT_ID: &str = "arbor";

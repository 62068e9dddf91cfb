//! Create, connect, get, kill and set the timeout of a sandbox.

use super::{detail_json, existing, sandbox_json};
use crate::{
    app::{ms, now_ms, App, Source},
    auth::Tenant,
    error::{bad_json, ApiError, ApiResult},
    ids,
    model::{ConnectSandbox, NetworkConfig, NewSandbox, Sandbox, SandboxDetail, SetTimeout},
};
use arbor_node::StartSpec;
use arbor_store::{SandboxRecord, SnapshotState, State};
use axum::{
    extract::{rejection::JsonRejection, Path, State as AxState},
    http::StatusCode,
    Json,
};
use std::sync::Arc;

/// Seconds of a requested timeout, checked against the maximum lifetime.
fn timeout_ms(app: &App, seconds: i64) -> ApiResult<i64> {
    let max = i64::try_from(app.cfg.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    if seconds < 0 {
        return Err(ApiError::bad_request(format!("timeout must not be negative, got {seconds}")));
    }
    if seconds > max {
        return Err(ApiError::bad_request(format!("timeout {seconds} s exceeds the maximum lifetime of {max} s")));
    }
    Ok(seconds * 1000)
}

/// A requested timeout in milliseconds, or the default when none was given.
fn requested_timeout_ms(app: &App, seconds: Option<i64>) -> ApiResult<i64> {
    match seconds {
        Some(t) => timeout_ms(app, t),
        None => Ok(ms(app.cfg.default_timeout)),
    }
}

/// The latest deadline a sandbox started at `started_at` may have.
fn lifetime_end(app: &App, started_at: i64) -> i64 {
    started_at.saturating_add(ms(app.cfg.max_lifetime))
}

/// Egress policy from create's options; bad CIDRs are the caller's error.
pub fn policy(internet: bool, network: Option<&NetworkConfig>) -> ApiResult<arbor_net::Policy> {
    let parse = |list: Option<&Vec<String>>, what: &str| -> ApiResult<Vec<arbor_net::Ipv4Net>> {
        list.into_iter()
            .flatten()
            .map(|c| {
                let c = c.trim();
                c.parse::<arbor_net::Ipv4Net>()
                    .or_else(|_| c.parse::<std::net::Ipv4Addr>().map(arbor_net::Ipv4Net::from))
                    .map_err(|_| ApiError::bad_request(format!("{what}: '{c}' is not an IPv4 address or CIDR")))
            })
            .collect()
    };
    Ok(arbor_net::Policy {
        internet,
        allow_out: parse(network.and_then(|n| n.allow_out.as_ref()), "allowOut")?,
        deny_out: parse(network.and_then(|n| n.deny_out.as_ref()), "denyOut")?,
    })
}

/// `POST /sandboxes`.
#[utoipa::path(post, path = "/sandboxes", request_body = NewSandbox,
    responses((status = 201, body = Sandbox), (status = 400, body = crate::model::ErrorBody),
              (status = 401, body = crate::model::ErrorBody), (status = 404, body = crate::model::ErrorBody)))]
pub async fn create(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    body: Result<Json<NewSandbox>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let Json(req) = body.map_err(bad_json)?;
    let team = tenant.scope(&app.store);
    if req.auto_pause_memory == Some(false) {
        return Err(ApiError::bad_request("auto-pause without memory (autoPauseMemory: false) is not supported"));
    }
    let template_id = req.template_id.clone().unwrap_or_else(|| "base".into());
    // A built template (name, name:version, id) is held under its
    // version's lock until the new sandbox's record names it, and a
    // snapshot's id (it works as a template) likewise, so neither can be
    // deleted meanwhile.
    // Built-in templates first: `base`, the common case, costs no store query.
    // They are every team's; built templates and snapshots only their team's.
    let mut held = None;
    let mut build_id = None;
    let mut snapshot = None;
    let (source, defaults) = match app.builtin_template(&template_id) {
        Ok(template) => {
            let defaults = (template.name.clone(), template.cpu_count, template.memory_mb, template.disk_mb);
            (app.builtin_source(template).await?, defaults)
        }
        Err(arbor_node::Error::TemplateNotFound(_)) => {
            if let Some((t, b)) = app.resolve_template(team, &template_id).await? {
                held = Some(app.locks.lock(&b.id).await);
                build_id = Some(b.id.clone());
                (app.build_source(&b)?, (t.id.clone(), b.cpu_count, b.memory_mb, b.disk_mb))
            } else {
                held = Some(app.locks.lock(&template_id).await);
                let snap = team.get_snapshot(&template_id).await?.filter(|s| s.state == SnapshotState::Ready);
                let Some(snap) = snap else {
                    return Err(ApiError::new(StatusCode::NOT_FOUND, format!("template '{template_id}' not found")));
                };
                let source = Source::Checkpoint { name: snap.id.clone(), saved_token: snap.envd_token.clone() };
                let defaults = (snap.id.clone(), snap.cpu_count, snap.memory_mb, snap.disk_mb);
                snapshot = Some(snap);
                (source, defaults)
            }
        }
        Err(e) => return Err(e.into()),
    };
    let (template_name, default_cpus, default_memory, disk_mb) = defaults;
    let timeout = requested_timeout_ms(&app, req.timeout)?;
    let metadata = req.metadata.clone().unwrap_or_default();
    let min_idle = i64::try_from(app.cfg.min_idle_timeout.as_secs()).unwrap_or(i64::MAX);
    let idle_timeout_s = match metadata.get("idle_timeout") {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(s) if s >= min_idle => u64::try_from(s).ok(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "metadata idle_timeout must be a number of seconds >= {min_idle}, got '{v}'"
                )))
            }
        },
    };
    let cpu_count = req.cpu_count.unwrap_or(default_cpus);
    if !(1..=8).contains(&cpu_count) {
        return Err(ApiError::bad_request(format!("cpuCount must be between 1 and 8, got {cpu_count}")));
    }
    let memory_mb = req.memory_mb.unwrap_or(default_memory);
    if !(64..=65536).contains(&memory_mb) {
        return Err(ApiError::bad_request(format!("memoryMB must be between 64 and 65536, got {memory_mb}")));
    }
    let internet = req.allow_internet_access.unwrap_or(true);
    let policy = policy(internet, req.network.as_ref())?;
    let running = app.registry.ids().len() as u64;
    if running >= app.cfg.max_sandboxes {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{running} sandboxes are running, the most this server allows"),
        ));
    }
    let auto_resume =
        req.auto_resume.as_ref().is_some_and(|a| a.enabled) || metadata.get("auto_resume").is_some_and(|v| v == "true");
    let now = now_ms();
    let public = req.network.as_ref().and_then(|n| n.allow_public_traffic).unwrap_or(true);
    let record = SandboxRecord {
        id: ids::sandbox_id(),
        team_id: tenant.team_id.clone(),
        template_id: template_name,
        alias: None,
        state: State::Running,
        node_id: app.cfg.node_id.clone(),
        cpu_count,
        memory_mb,
        disk_mb,
        metadata,
        env_vars: req.env_vars.clone().unwrap_or_default(),
        envd_token: ids::token(),
        traffic_token: (!public).then(ids::token),
        secure: req.secure.unwrap_or(true),
        allow_internet: internet,
        network: req.network.as_ref().and_then(|n| serde_json::to_value(n).ok()),
        auto_pause: req.auto_pause.unwrap_or(false),
        auto_resume,
        idle_timeout_s,
        started_at: now,
        end_at: now.saturating_add(timeout),
        last_activity_at: now,
        paused_at: None,
        host_addr: None,
        init_pid: None,
        envd_version: arbor_proto::ENVD_VERSION.into(),
        domain: Some(app.cfg.domain.clone()),
        snapshot_id: snapshot.as_ref().map(|s| s.id.clone()),
        build_id,
    };
    app.store.insert_sandbox(&record).await?;
    drop(held);
    let spec = StartSpec {
        id: record.id.clone(),
        cpu_count,
        memory_mb,
        disk_mb: record.disk_mb,
        env_vars: record.env_vars.clone(),
        access_token: record.envd_token.clone(),
        policy,
    };
    let record = app.start(source, record, spec).await?;
    tracing::info!(id = %record.id, template = %record.template_id, "sandbox created");
    Ok((StatusCode::CREATED, Json(sandbox_json(&app, &record))))
}

/// `GET /sandboxes/{id}`.
#[utoipa::path(get, path = "/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxDetail), (status = 404, body = crate::model::ErrorBody)))]
pub async fn get(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxDetail>> {
    let record = existing(&app, &tenant, &id).await?;
    Ok(Json(detail_json(&app, &record, true)))
}

/// `DELETE /sandboxes/{id}`.
#[utoipa::path(delete, path = "/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::model::ErrorBody)))]
pub async fn kill(AxState(app): AxState<Arc<App>>, tenant: Tenant, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let record = existing(&app, &tenant, &id).await?;
    app.kill(record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/timeout`: the deadline becomes now + timeout,
/// within the maximum lifetime.
#[utoipa::path(post, path = "/sandboxes/{id}/timeout", params(("id" = String, Path)), request_body = SetTimeout,
    responses((status = 204), (status = 400, body = crate::model::ErrorBody), (status = 404, body = crate::model::ErrorBody)))]
pub async fn set_timeout(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Result<Json<SetTimeout>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body.map_err(bad_json)?;
    let timeout = timeout_ms(&app, req.timeout)?;
    let record = existing(&app, &tenant, &id).await?;
    let end_at = now_ms().saturating_add(timeout).min(lifetime_end(&app, record.started_at));
    app.store.set_end_at(&id, end_at).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/connect`: a paused sandbox is resumed with a
/// deadline `timeout` from now (201); a running one's deadline grows to now +
/// timeout if that is later (200).
#[utoipa::path(post, path = "/sandboxes/{id}/connect", params(("id" = String, Path)), request_body = ConnectSandbox,
    responses((status = 200, body = Sandbox), (status = 201, body = Sandbox), (status = 404, body = crate::model::ErrorBody)))]
pub async fn connect(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Result<Json<ConnectSandbox>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let Json(req) = body.map_err(bad_json)?;
    if req.memory == Some(false) {
        return Err(ApiError::bad_request("resuming without memory (a cold boot) is not supported; omit memory"));
    }
    let timeout = requested_timeout_ms(&app, req.timeout)?;
    // The team's, or 404; a sandbox never changes team, so the resume below
    // may look it up by id alone.
    existing(&app, &tenant, &id).await?;
    let (mut record, resumed) = app.resume(&id, timeout).await?;
    if resumed {
        return Ok((StatusCode::CREATED, Json(sandbox_json(&app, &record))));
    }
    let wanted = now_ms().saturating_add(timeout).min(lifetime_end(&app, record.started_at));
    if wanted > record.end_at {
        app.store.set_end_at(&id, wanted).await?;
        record.end_at = wanted;
    }
    Ok((StatusCode::OK, Json(sandbox_json(&app, &record))))
}

/// `POST /sandboxes/{id}/resume` (older `e2b` SDKs): resumes a paused
/// sandbox (201); 409 for a running one.
#[utoipa::path(post, path = "/sandboxes/{id}/resume", params(("id" = String, Path)), request_body = ConnectSandbox,
    responses((status = 201, body = Sandbox), (status = 404, body = crate::model::ErrorBody),
              (status = 409, body = crate::model::ErrorBody)))]
pub async fn resume(
    state: AxState<Arc<App>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Result<Json<ConnectSandbox>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    if existing(&state.0, &tenant, &id).await?.state == State::Running {
        return Err(ApiError::conflict(format!("sandbox {id} is already running")));
    }
    connect(state, tenant, Path(id), body).await
}

//! Teams and their keys: `GET /teams` for any key (E2B's shape), and the
//! admin routes under `/admin/teams` (E2B's paths for team keys) for admin
//! keys, which answer 403 to any other key.

use crate::{
    app::{rfc3339, App},
    auth::{Admin, Tenant},
    error::{bad_json, ApiError, ApiResult},
};
use arbor_store::{KeyInfo, KeyRole, TeamRecord};
use axum::{
    extract::{rejection::JsonRejection, Path, State as AxState},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A team as `GET /teams` answers it (E2B's `Team`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    /// The team's id.
    #[serde(rename = "teamID")]
    pub team_id: String,
    /// Its name.
    pub name: String,
    /// The key the request came with (the SDKs' and CLIs' key for the team).
    pub api_key: String,
    /// Always true: a key belongs to exactly one team.
    pub is_default: bool,
}

/// A team as the admin routes answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminTeam {
    /// The team's id.
    #[serde(rename = "teamID")]
    pub team_id: String,
    /// Its unique name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// `POST /admin/teams`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewTeam {
    /// A unique name, 1-64 characters.
    pub name: String,
}

/// `POST /admin/teams/{teamID}/api-keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewTeamKey {
    /// A name to recognise the key by.
    pub name: String,
    /// Whether the key may use the admin routes too (default false).
    #[serde(default)]
    pub admin: bool,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamKey {
    /// The key's id (`k_…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its team.
    #[serde(rename = "teamID")]
    pub team_id: String,
    /// Whether it is an admin key.
    pub admin: bool,
    /// The first characters of its secret.
    pub prefix: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last used, to a minute.
    pub last_used: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// A key just created: the only answer that carries its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedTeamKey {
    /// The key.
    #[serde(flatten)]
    pub info: TeamKey,
    /// The secret to send as `X-API-KEY`; shown only now.
    pub key: String,
}

fn team_json(t: &TeamRecord) -> AdminTeam {
    AdminTeam { team_id: t.id.clone(), name: t.name.clone(), created_at: rfc3339(t.created_at) }
}

fn key_json(k: &KeyInfo) -> TeamKey {
    TeamKey {
        id: k.id.clone(),
        name: k.name.clone(),
        team_id: k.team_id.clone(),
        admin: k.role == KeyRole::Admin,
        prefix: k.prefix.clone(),
        created_at: rfc3339(k.created_at),
        last_used: k.last_used_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}

/// Store errors the caller caused (a bad or taken name) as 400 / 409.
fn caller_error(e: arbor_store::Error) -> ApiError {
    match e {
        arbor_store::Error::InvalidArgument(m) => ApiError::bad_request(m),
        arbor_store::Error::Conflict(_) => ApiError::conflict("a team with this name exists"),
        other => other.into(),
    }
}

/// The team named by the path (its id or name), or 404.
async fn team(app: &App, id_or_name: &str) -> ApiResult<TeamRecord> {
    app.store
        .get_team(id_or_name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("team {id_or_name} not found")))
}

/// `GET /teams`: the key's team.
#[utoipa::path(get, path = "/teams", responses((status = 200, body = [Team])))]
pub async fn mine(AxState(app): AxState<Arc<App>>, tenant: Tenant, headers: HeaderMap) -> ApiResult<Json<Vec<Team>>> {
    let t = team(&app, &tenant.team_id).await?;
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok(Json(vec![Team { team_id: t.id, name: t.name, api_key, is_default: true }]))
}

/// `GET /admin/teams`: every team, oldest first.
#[utoipa::path(get, path = "/admin/teams",
    responses((status = 200, body = [AdminTeam]), (status = 403, body = crate::model::ErrorBody)))]
pub async fn list(AxState(app): AxState<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<AdminTeam>>> {
    Ok(Json(app.store.list_teams().await?.iter().map(team_json).collect()))
}

/// `POST /admin/teams`: a new team (it has no keys yet).
#[utoipa::path(post, path = "/admin/teams", request_body = NewTeam,
    responses((status = 201, body = AdminTeam), (status = 400, body = crate::model::ErrorBody),
              (status = 403, body = crate::model::ErrorBody), (status = 409, body = crate::model::ErrorBody)))]
pub async fn create(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    body: Result<Json<NewTeam>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<AdminTeam>)> {
    let Admin(admin) = Admin::check(tenant)?;
    let Json(req) = body.map_err(bad_json)?;
    let t = app.store.create_team(&req.name).await.map_err(caller_error)?;
    tracing::info!(team = %t.id, name = %t.name, by = %admin.key_id, "team created");
    Ok((StatusCode::CREATED, Json(team_json(&t))))
}

/// `GET /admin/teams/{teamID}/api-keys`: the team's keys, revoked ones too.
#[utoipa::path(get, path = "/admin/teams/{teamID}/api-keys", params(("teamID" = String, Path)),
    responses((status = 200, body = [TeamKey]), (status = 403, body = crate::model::ErrorBody),
              (status = 404, body = crate::model::ErrorBody)))]
pub async fn keys(
    AxState(app): AxState<Arc<App>>,
    _: Admin,
    Path(team_id): Path<String>,
) -> ApiResult<Json<Vec<TeamKey>>> {
    let t = team(&app, &team_id).await?;
    Ok(Json(app.store.team(&t.id).list_keys().await?.iter().map(key_json).collect()))
}

/// `POST /admin/teams/{teamID}/api-keys`: a new key of the team, its secret
/// in the answer (and nowhere else, ever).
#[utoipa::path(post, path = "/admin/teams/{teamID}/api-keys", params(("teamID" = String, Path)),
    request_body = NewTeamKey,
    responses((status = 201, body = CreatedTeamKey), (status = 403, body = crate::model::ErrorBody),
              (status = 404, body = crate::model::ErrorBody)))]
pub async fn create_key(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(team_id): Path<String>,
    body: Result<Json<NewTeamKey>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedTeamKey>)> {
    let Admin(admin) = Admin::check(tenant)?;
    let Json(req) = body.map_err(bad_json)?;
    let t = team(&app, &team_id).await?;
    let role = if req.admin { KeyRole::Admin } else { KeyRole::Member };
    let new = app.store.create_key(&t.id, &req.name, role).await?;
    tracing::info!(team = %t.id, key = %new.info.id, ?role, by = %admin.key_id, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedTeamKey { info: key_json(&new.info), key: new.secret })))
}

/// `DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}`: revokes the key at
/// once (on this server; other replicas within their key cache's 10 s).
#[utoipa::path(delete, path = "/admin/teams/{teamID}/api-keys/{apiKeyID}",
    params(("teamID" = String, Path), ("apiKeyID" = String, Path)),
    responses((status = 204), (status = 403, body = crate::model::ErrorBody), (status = 404, body = crate::model::ErrorBody)))]
pub async fn revoke_key(
    AxState(app): AxState<Arc<App>>,
    Admin(admin): Admin,
    Path((team_id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = team(&app, &team_id).await?;
    if !app.store.team(&t.id).revoke_key(&key_id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no live API key {key_id} in team {team_id}")));
    }
    app.keys.forget_key(&key_id);
    tracing::info!(team = %t.id, key = %key_id, by = %admin.key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

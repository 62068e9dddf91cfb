//! Template endpoints as the SDKs' `Template.build()` and `arbor template`
//! use them: request a build (a new version), upload COPY files, start the
//! build, poll its status and logs; list, describe and delete templates.

use crate::{
    app::{rfc3339, App},
    auth::Tenant,
    error::{bad_json, ApiError, ApiResult},
    ids,
    templates::valid_name,
};
use arbor_build::BuildRequest;
use arbor_store::{BuildRecord, BuildStatus, TemplateRecord};
use axum::{
    body::Body,
    extract::{rejection::JsonRejection, Path, Query, State as AxState},
    http::StatusCode,
    Json,
};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// `POST /v3/templates`'s body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewBuild {
    name: Option<String>,
    alias: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u64>,
    #[serde(rename = "diskSizeMB")]
    disk_mb: Option<u64>,
}

/// `POST /v3/templates`: a new version of the template `name` (created if
/// new), waiting for its steps.
pub async fn request_build(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    body: Result<Json<NewBuild>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let team = tenant.scope(&app.store);
    let Json(req) = body.map_err(bad_json)?;
    let name = req.name.or(req.alias).unwrap_or_default();
    if !valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "template name {name:?}: use 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'"
        )));
    }
    if name == "base" || app.builtin_template(&name).is_ok() {
        return Err(ApiError::bad_request(format!("template name {name:?} is taken by a built-in template")));
    }
    let cpu_count = req.cpu_count.unwrap_or(arbor_node::DEFAULT_CPU_COUNT);
    if !(1..=8).contains(&cpu_count) {
        return Err(ApiError::bad_request(format!("cpuCount must be between 1 and 8, got {cpu_count}")));
    }
    let memory_mb = req.memory_mb.unwrap_or(1024);
    if !(128..=65536).contains(&memory_mb) {
        return Err(ApiError::bad_request(format!("memoryMB must be between 128 and 65536, got {memory_mb}")));
    }
    let disk_mb = req.disk_mb.unwrap_or(arbor_node::DEFAULT_DISK_MB);
    // Names are per team: another team's `app` is another template.
    let template = match team.template_by_name(&name).await? {
        Some(t) => t,
        None => {
            let t = TemplateRecord {
                id: ids::sandbox_id(),
                team_id: tenant.team_id.clone(),
                name: name.clone(),
                created_at: crate::app::now_ms(),
            };
            match app.store.insert_template(&t).await {
                Ok(()) => t,
                // Another request made it first.
                Err(arbor_store::Error::Conflict(_)) => {
                    team.template_by_name(&name).await?.ok_or_else(|| not_found(&name))?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut build = BuildRecord {
        id: ids::sandbox_id(),
        template_id: template.id.clone(),
        version: 0,
        status: BuildStatus::Waiting,
        cpu_count,
        memory_mb,
        disk_mb,
        request: None,
        node_ref: None,
        checkpoint: None,
        envd_token: None,
        reason: None,
        created_at: crate::app::now_ms(),
        finished_at: None,
    };
    build.version = app.store.insert_build(&build).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "templateID": template.id, "buildID": build.id, "version": build.version,
            "aliases": [name], "names": [name], "tags": req.tags, "public": false,
        })),
    ))
}

async fn template_and_build(
    app: &App,
    tenant: &Tenant,
    template_id: &str,
    build_id: &str,
) -> ApiResult<(TemplateRecord, BuildRecord)> {
    let team = tenant.scope(&app.store);
    let b = team.get_build(build_id).await?.ok_or_else(|| not_found(&format!("build {build_id}")))?;
    let t = team.get_template(&b.template_id).await?.ok_or_else(|| not_found(&format!("template {template_id}")))?;
    if t.id != template_id && t.name != template_id {
        return Err(not_found(&format!("build {build_id} of template {template_id}")));
    }
    Ok((t, b))
}

fn valid_hash(hash: &str) -> ApiResult<()> {
    if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(format!("files hash {hash:?} must be 1-128 alphanumeric characters")));
    }
    Ok(())
}

/// `GET /templates/{id}/files/{hash}`: whether this template has a COPY's
/// files, and where to upload them if not. Uploads belong to one template
/// (another template's upload of the same hash is not "present" here), and
/// the URL's base is the configured `public_api_url`, not the `Host` the
/// client sent. Only the template's team gets a link: whoever holds one
/// may fill a hash the template's builds will read.
pub async fn file_link(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path((template_id, hash)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    valid_hash(&hash)?;
    let Some(t) = tenant.scope(&app.store).get_template(&template_id).await? else {
        return Err(not_found(&format!("template {template_id}")));
    };
    let present = app.builder.uploads().is_present(&t.id, &hash);
    let expires = crate::app::now_ms() / 1000 + UPLOAD_URL_LIFETIME_S;
    let signature = upload_signature(&app.upload_key, &t.id, &hash, expires);
    let base = &app.cfg.public_api_url;
    let url = format!("{base}/templates/{}/files/{hash}?expires={expires}&signature={signature}", t.id);
    Ok((StatusCode::CREATED, Json(json!({ "present": present, "url": url }))))
}

fn already_uploaded(hash: &str) -> ApiError {
    ApiError::conflict(format!(
        "template files {hash} are already uploaded with other content; an upload is never replaced"
    ))
}

/// How long an upload URL works, in seconds.
const UPLOAD_URL_LIFETIME_S: i64 = 3600;

/// The signature of an upload URL: HMAC-SHA256 over what it allows, hex.
fn upload_signature(key: &str, template_id: &str, hash: &str, expires: i64) -> String {
    use hmac::Mac as _;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else { return String::new() };
    mac.update(format!("{template_id}\n{hash}\n{expires}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// `?expires=&signature=` of an upload URL.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// `PUT /templates/{id}/files/{hash}`: a COPY's files (a tar, gzip or
/// not), streamed to disk with their sha256, which every build reading
/// them checks. Like a presigned object-storage URL, the URL
/// `GET /templates/{id}/files/{hash}` handed out is its own credential (the
/// JS SDK uploads without the API key): signed by this server, for this
/// template and hash, for an hour. An upload is never replaced: sent again
/// with the same tar (the SDKs' `forceUpload`) it is 201 and changes
/// nothing, with another tar 409.
pub async fn file_upload(
    AxState(app): AxState<Arc<App>>,
    Path((template_id, hash)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    valid_hash(&hash)?;
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "upload URLs come from GET /templates/{id}/files/{hash}"));
    };
    let expected = upload_signature(&app.upload_key, &template_id, &hash, expires);
    let matches = bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()));
    if !matches || expires < crate::app::now_ms() / 1000 {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "the upload URL is invalid or expired; ask for a new one"));
    }
    let Some(t) = app.store.get_template(&template_id).await? else {
        return Err(not_found(&format!("template {template_id}")));
    };
    let uploads = app.builder.uploads();
    let storing = |e: arbor_build::Error| match e {
        arbor_build::Error::Invalid(m) => ApiError::bad_request(m),
        e => ApiError::internal("storing the files", e),
    };
    // Dropped on an error, the upload leaves nothing behind.
    let mut upload = uploads.begin(&t.id, &hash).map_err(storing)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        upload.write(&chunk).map_err(storing)?;
    }
    match upload.finish().map_err(storing)? {
        arbor_build::Published::Stored => Ok(StatusCode::CREATED),
        // The SDKs' `forceUpload` sends present files again: the same tar
        // changes nothing and is no error.
        arbor_build::Published::Identical => Ok(StatusCode::CREATED),
        arbor_build::Published::Conflict => Err(already_uploaded(&hash)),
    }
}

/// `POST /v2/templates/{id}/builds/{buildID}`: starts a waiting build.
pub async fn start(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path((template_id, build_id)): Path<(String, String)>,
    body: Result<Json<BuildRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body.map_err(bad_json)?;
    let _op = app.locks.lock(&build_id).await;
    let (t, b) = template_and_build(&app, &tenant, &template_id, &build_id).await?;
    if b.status != BuildStatus::Waiting {
        return Err(ApiError::conflict(format!("build {build_id} was already started (it is {})", b.status)));
    }
    app.start_build(b, t, req).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `?logsOffset=N` of the status poll.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    logs_offset: Option<usize>,
}

/// `GET /templates/{id}/builds/{buildID}/status`.
pub async fn status(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path((template_id, build_id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<Value>> {
    let (t, b) = template_and_build(&app, &tenant, &template_id, &build_id).await?;
    let running = app.builds.get(&b.id);
    let entries = running.log.since(q.logs_offset.unwrap_or(0));
    let logs: Vec<String> = entries.iter().map(|e| format!("[{}] {}", e.timestamp, e.message)).collect();
    let (done, total, current) = running.progress.get();
    let mut out = json!({
        "templateID": t.id, "buildID": b.id, "status": b.status.as_str(), "version": b.version,
        "logs": logs, "logEntries": entries, "stepsDone": done, "stepsTotal": total, "currentStep": current,
        "startedAt": rfc3339(b.created_at),
    });
    if let Some(reason) = &b.reason {
        let step = reason.strip_prefix("step ").and_then(|r| r.split([' ', ',']).next()).map(str::to_string);
        out["reason"] = json!({ "message": reason, "step": step, "logEntries": running.log.tail(20) });
    }
    Ok(Json(out))
}

fn build_json(b: &BuildRecord, in_use: usize) -> Value {
    json!({
        "buildID": b.id, "version": b.version, "status": b.status.as_str(),
        "cpuCount": b.cpu_count, "memoryMB": b.memory_mb, "diskSizeMB": b.disk_mb,
        "startCmd": b.request.as_deref().and_then(|r| serde_json::from_str::<BuildRequest>(r).ok()).and_then(|r| r.start_cmd),
        "memorySnapshot": b.checkpoint.is_some(),
        "createdAt": rfc3339(b.created_at), "finishedAt": b.finished_at.map(rfc3339),
        "reason": b.reason, "inUse": in_use,
    })
}

fn template_json(t: &TemplateRecord, builds: &[BuildRecord]) -> Value {
    let latest = builds.iter().rev().find(|b| b.status == BuildStatus::Ready).or(builds.last());
    json!({
        "templateID": t.id, "teamID": t.team_id, "name": t.name, "aliases": [t.name], "names": [t.name],
        "public": false,
        "buildID": latest.map(|b| b.id.clone()), "version": latest.map(|b| b.version),
        "buildStatus": latest.map(|b| b.status.as_str()), "versions": builds.len(), "buildCount": builds.len(),
        "cpuCount": latest.map(|b| b.cpu_count), "memoryMB": latest.map(|b| b.memory_mb),
        "diskSizeMB": latest.map(|b| b.disk_mb), "createdAt": rfc3339(t.created_at),
        "updatedAt": latest.map(|b| rfc3339(b.finished_at.unwrap_or(b.created_at))),
        "envdVersion": arbor_proto::ENVD_VERSION, "spawnCount": 0,
    })
}

/// `?teamID=` of `GET /templates` (the SDKs' filter).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "teamID")]
    team_id: Option<String>,
}

/// `GET /templates` (and `/v2/templates`): `base` and the key's team's
/// templates. A `teamID` other than the key's team is a 404, as an unknown
/// team is.
pub async fn list(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Value>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(asked) = q.team_id.filter(|t| !t.is_empty() && *t != tenant.team_id) {
        return Err(not_found(&format!("team {asked}")));
    }
    let mut out = Vec::new();
    if let Ok(base) = app.builtin_template("base") {
        out.push(json!({
            "templateID": "base", "name": "base", "aliases": ["base"], "names": ["base"], "public": true,
            "buildID": "base", "version": 1, "buildStatus": "ready", "versions": 1, "buildCount": 1,
            "cpuCount": base.cpu_count, "memoryMB": base.memory_mb, "diskSizeMB": base.disk_mb,
            "envdVersion": arbor_proto::ENVD_VERSION, "spawnCount": 0,
        }));
    }
    for t in tenant.scope(&app.store).list_templates().await? {
        let builds = app.store.builds_of(&t.id).await?;
        out.push(template_json(&t, &builds));
    }
    Ok(Json(out))
}

/// `GET /templates/{id}`: a template (by id or name) with its versions.
pub async fn info(AxState(app): AxState<Arc<App>>, tenant: Tenant, Path(x): Path<String>) -> ApiResult<Json<Value>> {
    let name = x.split(':').next().unwrap_or_default();
    let team = tenant.scope(&app.store);
    let t = app.template_by_id_or_name(team, name).await?.ok_or_else(|| not_found(&format!("template {x}")))?;
    let builds = app.store.builds_of(&t.id).await?;
    let mut out = template_json(&t, &builds);
    let mut versions = Vec::new();
    for b in &builds {
        versions.push(build_json(b, app.store.build_users(&b.id).await?.len()));
    }
    out["builds"] = Value::Array(versions);
    Ok(Json(out))
}

/// `GET /templates/aliases/{alias}`: 200 when the name exists (the SDK's
/// `Template.exists`), 404 when not.
pub async fn alias(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    match tenant.scope(&app.store).template_by_name(&alias).await? {
        Some(t) => Ok(Json(json!({ "templateID": t.id, "public": false }))),
        None if app.builtin_template(&alias).is_ok() => Ok(Json(json!({ "templateID": alias, "public": true }))),
        None => Err(not_found(&format!("template {alias}"))),
    }
}

/// `DELETE /templates/{id}`: a snapshot, a template (all versions) or one
/// version (`name:version`, build id) of the key's team. 409 while in use,
/// 403 for a built-in template, 404 for another team's.
#[utoipa::path(delete, path = "/templates/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::model::ErrorBody),
              (status = 404, body = crate::model::ErrorBody), (status = 409, body = crate::model::ErrorBody)))]
pub async fn delete(AxState(app): AxState<Arc<App>>, tenant: Tenant, Path(x): Path<String>) -> ApiResult<StatusCode> {
    let team = tenant.scope(&app.store);
    if team.get_snapshot(&x).await?.is_some() {
        app.delete_snapshot(&x).await?;
    } else if app.builtin_template(&x).is_ok() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("{x} is a built-in template; it cannot be deleted")));
    } else {
        app.delete_template_or_version(team, &x).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

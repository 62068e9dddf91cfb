//! Template endpoints as the SDKs' `Template.build()` and `arbor template`
//! use them: request a build (a new version), upload COPY files, start the
//! build, poll its status and logs; list, describe and delete templates.

use crate::{
    app::{rfc3339, App},
    error::{bad_json, ApiError, ApiResult},
    ids,
    templates::valid_name,
};
use arbor_build::BuildRequest;
use arbor_store::{BuildRecord, BuildStatus, TemplateRecord};
use axum::{
    body::Body,
    extract::{rejection::JsonRejection, Path, Query, State as AxState},
    http::{HeaderMap, StatusCode},
    Json,
};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::{io::Write, sync::Arc};

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
    body: Result<Json<NewBuild>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(req) = body.map_err(bad_json)?;
    let name = req.name.or(req.alias).unwrap_or_default();
    if !valid_name(&name) {
        return Err(ApiError::bad_request(format!(
            "template name {name:?}: use 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'"
        )));
    }
    if name == "base" || app.node.template(&name).is_ok() {
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
    let template = match app.store.template_by_name(&name).await? {
        Some(t) => t,
        None => {
            let t = TemplateRecord { id: ids::sandbox_id(), name: name.clone(), created_at: crate::app::now_ms() };
            match app.store.insert_template(&t).await {
                Ok(()) => t,
                // Another request made it first.
                Err(arbor_store::Error::Conflict(_)) => {
                    app.store.template_by_name(&name).await?.ok_or_else(|| not_found(&name))?
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

async fn template_and_build(app: &App, template_id: &str, build_id: &str) -> ApiResult<(TemplateRecord, BuildRecord)> {
    let b = app.store.get_build(build_id).await?.ok_or_else(|| not_found(&format!("build {build_id}")))?;
    let t =
        app.store.get_template(&b.template_id).await?.ok_or_else(|| not_found(&format!("template {template_id}")))?;
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

/// `GET /templates/{id}/files/{hash}`: whether the server has a COPY's
/// files, and where to upload them if not.
pub async fn file_link(
    AxState(app): AxState<Arc<App>>,
    Path((template_id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    valid_hash(&hash)?;
    if app.store.get_template(&template_id).await?.is_none() {
        return Err(not_found(&format!("template {template_id}")));
    }
    let present = app.builder.files_path(&hash).exists();
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:3000");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let expires = crate::app::now_ms() / 1000 + UPLOAD_URL_LIFETIME_S;
    let signature = upload_signature(&app.upload_key, &template_id, &hash, expires);
    let url = format!("{scheme}://{host}/templates/{template_id}/files/{hash}?expires={expires}&signature={signature}");
    Ok((StatusCode::CREATED, Json(json!({ "present": present, "url": url }))))
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
/// not), streamed to disk. Like a presigned object-storage URL, the URL
/// `GET /templates/{id}/files/{hash}` handed out is its own credential (the
/// JS SDK uploads without the API key): signed by this server, for this
/// template and hash, for an hour.
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
    if app.store.get_template(&template_id).await?.is_none() {
        return Err(not_found(&format!("template {template_id}")));
    }
    let dest = app.builder.files_path(&hash);
    let dir = dest.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal("creating the files directory", e))?;
    let tmp = dir.join(format!(".{hash}.{}", ids::sandbox_id()));
    let written = async {
        let mut file = std::fs::File::create(&tmp).map_err(|e| ApiError::internal("storing the files", e))?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
            file.write_all(&chunk).map_err(|e| ApiError::internal("storing the files", e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| ApiError::internal("storing the files", e))
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    Ok(StatusCode::CREATED)
}

/// `POST /v2/templates/{id}/builds/{buildID}`: starts a waiting build.
pub async fn start(
    AxState(app): AxState<Arc<App>>,
    Path((template_id, build_id)): Path<(String, String)>,
    body: Result<Json<BuildRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body.map_err(bad_json)?;
    let _op = app.locks.lock(&build_id).await;
    let (t, b) = template_and_build(&app, &template_id, &build_id).await?;
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
    Path((template_id, build_id)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<Value>> {
    let (t, b) = template_and_build(&app, &template_id, &build_id).await?;
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
        "templateID": t.id, "name": t.name, "aliases": [t.name], "names": [t.name], "public": false,
        "buildID": latest.map(|b| b.id.clone()), "version": latest.map(|b| b.version),
        "buildStatus": latest.map(|b| b.status.as_str()), "versions": builds.len(), "buildCount": builds.len(),
        "cpuCount": latest.map(|b| b.cpu_count), "memoryMB": latest.map(|b| b.memory_mb),
        "diskSizeMB": latest.map(|b| b.disk_mb), "createdAt": rfc3339(t.created_at),
        "updatedAt": latest.map(|b| rfc3339(b.finished_at.unwrap_or(b.created_at))),
        "envdVersion": arbor_proto::ENVD_VERSION, "spawnCount": 0,
    })
}

/// `GET /templates` (and `/v2/templates`): every template, `base` first.
pub async fn list(AxState(app): AxState<Arc<App>>) -> ApiResult<Json<Vec<Value>>> {
    let mut out = Vec::new();
    if let Ok(base) = app.node.template("base") {
        out.push(json!({
            "templateID": "base", "name": "base", "aliases": ["base"], "names": ["base"], "public": true,
            "buildID": "base", "version": 1, "buildStatus": "ready", "versions": 1, "buildCount": 1,
            "cpuCount": base.cpu_count, "memoryMB": base.memory_mb, "diskSizeMB": base.disk_mb,
            "envdVersion": arbor_proto::ENVD_VERSION, "spawnCount": 0,
        }));
    }
    for t in app.store.list_templates().await? {
        let builds = app.store.builds_of(&t.id).await?;
        out.push(template_json(&t, &builds));
    }
    Ok(Json(out))
}

/// `GET /templates/{id}`: a template (by id or name) with its versions.
pub async fn info(AxState(app): AxState<Arc<App>>, Path(x): Path<String>) -> ApiResult<Json<Value>> {
    let name = x.split(':').next().unwrap_or_default();
    let t = app.template_by_id_or_name(name).await?.ok_or_else(|| not_found(&format!("template {x}")))?;
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
pub async fn alias(AxState(app): AxState<Arc<App>>, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    match app.store.template_by_name(&alias).await? {
        Some(t) => Ok(Json(json!({ "templateID": t.id, "public": false }))),
        None if app.node.template(&alias).is_ok() => Ok(Json(json!({ "templateID": alias, "public": true }))),
        None => Err(not_found(&format!("template {alias}"))),
    }
}

/// `DELETE /templates/{id}`: a snapshot, a template (all versions) or one
/// version (`name:version`, build id). 409 while in use.
#[utoipa::path(delete, path = "/templates/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::model::ErrorBody), (status = 409, body = crate::model::ErrorBody)))]
pub async fn delete(AxState(app): AxState<Arc<App>>, Path(x): Path<String>) -> ApiResult<StatusCode> {
    if app.store.get_snapshot(&x).await?.is_some() {
        app.delete_snapshot(&x).await?;
    } else {
        app.delete_template_or_version(&x).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

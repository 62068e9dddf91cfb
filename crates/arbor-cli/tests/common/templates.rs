//! Template routes of the fixture (template-api.md): a build "runs" one
//! step per status poll, logging each step; a RUN step containing
//! `exit 3` fails the build at that step. Uploads are kept for inspection.

use super::Shared;
use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Default)]
pub struct Templates {
    pub uploads: Vec<(String, Vec<u8>)>,
    pub build: Option<Value>,
    pub polls: usize,
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v3/templates", post(create))
        .route("/templates", get(list))
        .route("/templates/{x}", get(info).delete(delete))
        .route("/templates/{id}/files/{hash}", get(files))
        .route("/upload/{hash}", put(upload))
        .route("/v2/templates/{id}/builds/{bid}", post(start))
        .route("/templates/{id}/builds/{bid}/status", get(status))
}

async fn create(State(st): State<Shared>, Json(body): Json<Value>) -> Response {
    st.lock().unwrap().templates.polls = 0;
    let name = body["name"].clone();
    let v = json!({"templateID":"tpl1","buildID":"bld1","aliases":[name],"names":[name],"tags":[],"public":false,"version":2});
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

async fn files(State(st): State<Shared>, headers: HeaderMap, Path((_id, hash)): Path<(String, String)>) -> Response {
    let present = st.lock().unwrap().templates.uploads.iter().any(|(h, _)| *h == hash);
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let v = if present {
        json!({"present": true})
    } else {
        json!({"present": false, "url": format!("http://{host}/upload/{hash}")})
    };
    (StatusCode::CREATED, Json(v)).into_response()
}

async fn upload(State(st): State<Shared>, Path(hash): Path<String>, body: Bytes) -> StatusCode {
    st.lock().unwrap().templates.uploads.push((hash, body.to_vec()));
    StatusCode::CREATED
}

async fn start(State(st): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    st.lock().unwrap().templates.build = Some(body);
    StatusCode::ACCEPTED
}

async fn status(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let offset: usize = q.get("logsOffset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let mut g = st.lock().unwrap();
    g.templates.polls += 1;
    let steps = g.templates.build.as_ref().and_then(|b| b["steps"].as_array().cloned()).unwrap_or_default();
    let done = (g.templates.polls - 1).min(steps.len());
    let failing = steps.iter().position(|s| s["args"][0].as_str().is_some_and(|c| c.contains("exit 3")));
    let upto = failing.map_or(done, |f| done.min(f + 1));
    let logs: Vec<String> = steps[..upto]
        .iter()
        .enumerate()
        .map(|(i, s)| format!("step {}: {} {}", i + 1, s["type"], s["args"][0]))
        .collect();
    let mut v = json!({"templateID":"tpl1","buildID":"bld1","status":"building","version":2,
                       "logs": logs[offset.min(logs.len())..], "stepsTotal": steps.len(), "stepsDone": upto});
    if let Some(step) = steps.get(upto) {
        v["currentStep"] = json!(format!("{} {}", step["type"].as_str().unwrap(), step["args"][0].as_str().unwrap()));
    }
    match failing {
        Some(f) if upto == f + 1 => {
            v["status"] = json!("error");
            v["reason"] = json!({"message": "command exited with 3", "step": (f + 1).to_string()});
        }
        _ if done == steps.len() && g.templates.build.is_some() => v["status"] = json!("ready"),
        _ => {}
    }
    Json(v).into_response()
}

fn template(version: u64) -> Value {
    json!({"templateID":"tpl1","buildID":"bld1","name":"app","aliases":["app"],"names":["app"],"version":version,
           "versions":2,"cpuCount":2,"memoryMB":1024,"diskSizeMB":2048,"public":false,"buildStatus":"ready",
           "createdAt":"2026-11-25T11:00:00Z","updatedAt":"2026-11-25T11:30:00Z","spawnCount":0,"buildCount":2})
}

async fn list() -> Json<Value> {
    Json(json!([template(2)]))
}

async fn info(Path(x): Path<String>) -> Response {
    if x != "app" && x != "app:1" && x != "tpl1" {
        return (StatusCode::NOT_FOUND, Json(json!({"code":404,"message":format!("template {x} not found")})))
            .into_response();
    }
    let mut t = template(2);
    t["builds"] = json!([{"buildID":"bld0","version":1,"status":"ready","cpuCount":2,"memoryMB":1024,"layers":3,"inUse":1,
                          "createdAt":"2026-11-25T11:00:00Z"},
                         {"buildID":"bld1","version":2,"status":"ready","cpuCount":2,"memoryMB":1024,"layers":4,"inUse":0,
                          "startCmd":"python3 -m http.server","createdAt":"2026-11-25T11:30:00Z"}]);
    Json(t).into_response()
}

async fn delete(Path(x): Path<String>) -> Response {
    if x == "app:1" {
        let msg = "version 1 of app is used by 1 sandbox";
        return (StatusCode::CONFLICT, Json(json!({"code":409,"message":msg}))).into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

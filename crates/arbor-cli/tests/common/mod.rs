//! A tiny HTTP server on 127.0.0.1 that answers the documented shapes of the
//! Arbor REST API (wire notes §2–§3) from a fixed set of sandboxes and
//! records every request, so tests can check what the CLI sends and how it
//! reads the answers. It is a fixture for testing the CLI's encoding and
//! parsing, not a stand-in for the server. With `envd`, a real in-process
//! arbor-envd serves the envd routes on the same port, as the server's envd
//! proxy does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::{
    extract::{Path, RawQuery, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

/// The API key the fixture accepts.
pub const KEY: &str = "test-key";
/// The envd access token of every fixture sandbox.
pub const TOKEN: &str = "envd-token";

/// One request as the fixture saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: Option<Value>,
}

pub mod templates;

#[derive(Default)]
pub struct Inner {
    pub seen: Vec<Seen>,
    pub sandboxes: Vec<Value>,
    pub templates: templates::Templates,
}

pub type Shared = Arc<Mutex<Inner>>;

pub struct Api {
    pub addr: SocketAddr,
    pub state: Shared,
    pub dir: tempfile::TempDir,
}

fn sandbox(id: &str, state: &str, meta: Value) -> Value {
    json!({"sandboxID": id, "templateID": "base", "clientID": "", "envdVersion": "0.6.4", "cpuCount": 1,
           "memoryMB": 512, "diskSizeMB": 1024, "startedAt": "2026-11-25T11:00:00.5Z",
           "endAt": "2026-11-25T11:05:00Z", "state": state, "metadata": meta, "envdAccessToken": TOKEN})
}

fn not_found(id: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"code": 404, "message": format!("sandbox {id} not found")}))).into_response()
}

async fn auth_and_record(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let is_envd = req.uri().path().starts_with("/process.");
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    if !is_envd {
        st.lock().unwrap().seen.push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            body: serde_json::from_slice(&bytes).ok(),
        });
        if parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
            return (StatusCode::UNAUTHORIZED, Json(json!({"code": 401, "message": "invalid API key"})))
                .into_response();
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

async fn create(State(st): State<Shared>, Json(body): Json<Value>) -> Response {
    let id = format!("sbx{}", st.lock().unwrap().sandboxes.len());
    let sbx = sandbox(&id, "running", body["metadata"].clone());
    st.lock().unwrap().sandboxes.push(sbx);
    let resp = json!({"sandboxID": id, "templateID": body["templateID"], "clientID": "", "envdVersion": "0.6.4",
                      "envdAccessToken": TOKEN});
    (StatusCode::CREATED, Json(resp)).into_response()
}

/// Pages of `limit` (default 2) with the next index as token; filters by state only.
async fn list(State(st): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let params: Vec<(String, String)> = q.as_deref().map(url_decode_pairs).unwrap_or_default();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let limit: usize = param("limit").map(|l| l.parse().unwrap()).unwrap_or(2);
    let start: usize = param("nextToken").map(|t| t.parse().unwrap()).unwrap_or(0);
    let states: Vec<String> = param("state").map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
    let all: Vec<Value> = st
        .lock()
        .unwrap()
        .sandboxes
        .iter()
        .filter(|s| states.is_empty() || states.iter().any(|w| s["state"] == **w))
        .cloned()
        .collect();
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let mut headers = HeaderMap::new();
    if start + limit < all.len() {
        headers.insert("x-next-token", (start + limit).to_string().parse().unwrap());
    }
    (StatusCode::OK, headers, Json(page)).into_response()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (percent_decode(k), percent_decode(v))).collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

fn find(st: &Shared, id: &str) -> Option<Value> {
    st.lock().unwrap().sandboxes.iter().find(|s| s["sandboxID"] == id).cloned()
}

async fn info(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match find(&st, &id) {
        Some(s) => Json(s).into_response(),
        None => not_found(&id),
    }
}

async fn kill(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let mut g = st.lock().unwrap();
    let before = g.sandboxes.len();
    g.sandboxes.retain(|s| s["sandboxID"] != id);
    if g.sandboxes.len() == before {
        return not_found(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn timeout(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match find(&st, &id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    }
}

async fn metrics(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match find(&st, &id) {
        Some(_) => Json(json!([{"timestamp": "2026-11-25T11:00:02Z", "timestampUnix": 1, "cpuCount": 1,
                                "cpuUsedPct": 2.5, "memUsedMiB": 30, "memTotalMiB": 512}]))
        .into_response(),
        None => not_found(&id),
    }
}

async fn connect(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match find(&st, &id) {
        Some(_) => Json(json!({"sandboxID": id, "templateID": "base", "clientID": "", "envdVersion": "0.6.4",
                               "envdAccessToken": TOKEN}))
        .into_response(),
        None => not_found(&id),
    }
}

/// `passwd`/`group` for envd with `user` = the current uid, home in `dir`.
fn user_db(dir: &std::path::Path) -> PathBuf {
    let etc = dir.join("etc");
    let home = dir.join("home");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    std::fs::write(etc.join("passwd"), format!("user:x:{uid}:{gid}::{}:/bin/bash\n", home.display())).unwrap();
    std::fs::write(etc.join("group"), format!("user:x:{gid}:\n")).unwrap();
    etc
}

impl Api {
    /// Serves the fixture with three sandboxes (two running, one paused);
    /// with `envd`, a real envd answers the envd routes.
    pub async fn start(envd: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state: Shared = Arc::new(Mutex::new(Inner::default()));
        {
            let mut g = state.lock().unwrap();
            g.sandboxes.push(sandbox("sbx-a", "running", json!({"team": "x"})));
            g.sandboxes.push(sandbox("sbx-b", "paused", json!({})));
            g.sandboxes.push(sandbox("sbx-c", "running", json!({"a b": "c&d=e"})));
        }
        let mut app = Router::new()
            .route("/sandboxes", post(create))
            .route("/v2/sandboxes", get(list))
            .route("/sandboxes/{id}", get(info).delete(kill))
            .route("/sandboxes/{id}/timeout", post(timeout))
            .route("/sandboxes/{id}/metrics", get(metrics))
            .route("/sandboxes/{id}/connect", post(connect))
            .merge(templates::routes())
            .with_state(state.clone());
        if envd {
            let config = arbor_envd::config::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                access_token: Some(TOKEN.into()),
                default_user: "user".into(),
                etc_dir: user_db(dir.path()),
                envs: vec![],
                ready_fd: None,
            };
            let envd = Arc::new(arbor_envd::state::Envd::new(&config));
            envd.processes.start_reaper().unwrap();
            app = app.merge(arbor_envd::server::router(envd));
        }
        let app = app.layer(middleware::from_fn_with_state(state.clone(), auth_and_record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state, dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.state.lock().unwrap().sandboxes.iter().map(|s| s["sandboxID"].as_str().unwrap().to_string()).collect()
    }
}

/// Output of one run of the `arbor` binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `arbor ARGS` against `url` with the fixture's key, a private config
/// file and a 60 s bound.
pub async fn arbor(url: &str, args: &[&str]) -> Run {
    arbor_env(url, Some(KEY), args).await
}

pub async fn arbor_env(url: &str, key: Option<&str>, args: &[&str]) -> Run {
    let cfg = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(args)
        .env_remove("ARBOR_API_KEY")
        .env("ARBOR_API_URL", url)
        .env("ARBOR_CONFIG", cfg.path().join("config.toml"))
        .kill_on_drop(true);
    if let Some(key) = key {
        cmd.env("ARBOR_API_KEY", key);
    }
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output()).await.expect("arbor timed out").unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

//! The HTTP side on port 49999 (protocol notes §5): `/health`, `POST /execute`
//! (NDJSON stream) and the `/contexts` CRUD. Every route but `/health` checks
//! the access token first.

use crate::auth::{Auth, AuthError, Globals};
use crate::contexts::{Context, Contexts};
use crate::error::Error;
use crate::language::{valid_env_key, Language};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

/// Shared server state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// All contexts and their kernels.
    pub contexts: Arc<Contexts>,
    /// Token checks against envd.
    pub auth: Arc<Auth>,
}

/// `POST /execute` body. The Python SDK sends all four keys, null when unset.
#[derive(Debug, Default, Deserialize)]
pub struct ExecuteBody {
    /// Code to run.
    pub code: String,
    /// Context to run in; null for the language's default context.
    #[serde(default)]
    pub context_id: Option<String>,
    /// Language of the default context to use.
    #[serde(default)]
    pub language: Option<String>,
    /// Environment variables for this run only.
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// `POST /contexts` body; both keys optional (the JS SDK omits undefined ones).
#[derive(Debug, Default, Deserialize)]
pub struct CreateContextBody {
    /// Language of the new context (normalised like `/execute`'s).
    #[serde(default)]
    pub language: Option<String>,
    /// Working directory; the default cwd if absent.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/execute", post(execute))
        .route("/contexts", get(list_contexts).post(create_context))
        .route("/contexts/{id}", delete(remove_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .with_state(state)
}

/// An error response: JSON `{"code", "message"}`, except 404, whose plain-text
/// body the SDKs show to the user as is.
fn error_response(status: StatusCode, message: String) -> Response {
    if status == StatusCode::NOT_FOUND {
        return (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response();
    }
    (status, Json(serde_json::json!({ "code": status.as_u16(), "message": message }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(self.status(), self.to_string())
    }
}

impl AppState {
    /// Checks the access token; returns the sandbox-wide env vars on success.
    async fn admit(&self, headers: &HeaderMap) -> Result<Globals, Response> {
        let token = headers.get("x-access-token").and_then(|v| v.to_str().ok());
        self.auth.check(token).await.map_err(|e| match e {
            AuthError::Unauthorized(m) => error_response(StatusCode::UNAUTHORIZED, m),
            AuthError::Unavailable(_) => error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8], allow_empty: bool) -> Result<T, Error> {
    if allow_empty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// Picks the context an execution runs in.
async fn execution_context(state: &AppState, body: &ExecuteBody) -> Result<Arc<Context>, Error> {
    let language = body.language.as_deref().filter(|l| !l.is_empty());
    match (&body.context_id, language) {
        (Some(_), Some(_)) => Err(Error::BadRequest("language and context_id are mutually exclusive".into())),
        (Some(id), None) => state.contexts.get(id),
        (None, lang) => {
            let language = Language::parse(lang)
                .map_err(|language| Error::NoKernel { language, available: state.contexts.available() })?;
            state.contexts.default_for(language).await
        }
    }
}

async fn execute(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let globals = match state.admit(&headers).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let body: ExecuteBody = match parse_json(&body, false) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let env = body.env_vars.clone().unwrap_or_default();
    if let Some(bad) = env.keys().find(|k| !valid_env_key(k)) {
        return Error::BadRequest(format!("invalid environment variable name {bad:?}")).into_response();
    }
    let context = match execution_context(&state, &body).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let kernel = match state.contexts.kernel(&context).await {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let lines = ReceiverStream::new(kernel.execute(body.code, env, globals))
        .map(|line| Ok::<_, Infallible>(Bytes::from(line.to_ndjson())));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn create_context(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = state.admit(&headers).await {
        return r;
    }
    let body: CreateContextBody = match parse_json(&body, true) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let language = match Language::parse(body.language.as_deref()) {
        Ok(l) => l,
        Err(language) => {
            return Error::NoKernel { language, available: state.contexts.available() }.into_response();
        }
    };
    match state.contexts.create(language, body.cwd.as_deref()).await {
        Ok(context) => Json(context.info()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_contexts(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = state.admit(&headers).await {
        return r;
    }
    match state.contexts.list() {
        Ok(list) => Json(list).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove_context(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = state.admit(&headers).await {
        return r;
    }
    match state.contexts.remove(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn restart_context(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = state.admit(&headers).await {
        return r;
    }
    match state.contexts.restart(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

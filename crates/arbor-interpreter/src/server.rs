//! The HTTP side on port 49999 (protocol notes §5): `/health`, `POST /execute`
//! (NDJSON stream) and the `/contexts` CRUD. Every route but `/health` checks
//! the access token first.

use crate::auth::{Auth, Globals};
use crate::contexts::{Context, Contexts};
use crate::error::Error;
use crate::language::valid_env_key;
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
    async fn admit(&self, headers: &HeaderMap) -> Result<Globals, Error> {
        let token = headers.get("x-access-token").and_then(|v| v.to_str().ok());
        Ok(self.auth.check(token).await?)
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
        (None, lang) => state.contexts.default_for(state.contexts.language(lang)?).await,
    }
}

async fn execute(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    let globals = state.admit(&headers).await?;
    let body: ExecuteBody = parse_json(&body, false)?;
    let env = body.env_vars.clone().unwrap_or_default();
    if let Some(bad) = env.keys().find(|k| !valid_env_key(k)) {
        return Err(Error::BadRequest(format!("invalid environment variable name {bad:?}")));
    }
    let context = execution_context(&state, &body).await?;
    let kernel = state.contexts.kernel(&context).await?;
    let lines = ReceiverStream::new(kernel.execute(body.code, env, globals))
        .map(|line| Ok::<_, Infallible>(Bytes::from(line.to_ndjson())));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn create_context(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    state.admit(&headers).await?;
    let body: CreateContextBody = parse_json(&body, true)?;
    let language = state.contexts.language(body.language.as_deref())?;
    let context = state.contexts.create(language, body.cwd.as_deref()).await?;
    Ok(Json(context.info()).into_response())
}

async fn list_contexts(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    state.admit(&headers).await?;
    Ok(Json(state.contexts.list()?).into_response())
}

async fn remove_context(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.admit(&headers).await?;
    state.contexts.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_context(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.admit(&headers).await?;
    state.contexts.restart(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The HTTP side on port 49999: `/health` and `POST /execute` (protocol notes §5).
//! This prototype serves one default python context.

use crate::kernel::Kernel;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

/// Shared server state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The default python context's kernel.
    pub python: Arc<Kernel>,
}

/// `POST /execute` body. The Python SDK sends all four keys, null when unset.
#[derive(Debug, Deserialize)]
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
    pub env_vars: Option<HashMap<String, String>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new().route("/health", get(|| async { StatusCode::OK })).route("/execute", post(execute)).with_state(state)
}

/// Upstream's language names: `js`→`javascript`, `ts`→`typescript`, empty→`python`.
pub fn normalise_language(lang: Option<&str>) -> String {
    match lang.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => "python".into(),
        Some("js") => "javascript".into(),
        Some("ts") => "typescript".into(),
        Some(other) => other.into(),
    }
}

async fn execute(State(state): State<AppState>, Json(body): Json<ExecuteBody>) -> Response {
    if body.context_id.is_some() && body.language.is_some() {
        return (StatusCode::BAD_REQUEST, "language and context_id are mutually exclusive").into_response();
    }
    let kernel = match (&body.context_id, normalise_language(body.language.as_deref())) {
        (Some(id), _) if id != "python" => {
            return (StatusCode::NOT_FOUND, format!("context {id} not found")).into_response()
        }
        (_, lang) if lang != "python" => {
            return (StatusCode::NOT_FOUND, format!("no kernel for language {lang} in this prototype")).into_response()
        }
        _ => state.python.clone(),
    };
    if body.env_vars.as_ref().is_some_and(|e| !e.is_empty()) {
        tracing::warn!("env_vars are not applied yet");
    }
    let lines =
        ReceiverStream::new(kernel.execute(body.code)).map(|line| Ok::<_, Infallible>(Bytes::from(line.to_ndjson())));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::normalise_language;

    #[test]
    fn languages_are_normalised() {
        assert_eq!(normalise_language(None), "python");
        assert_eq!(normalise_language(Some("")), "python");
        assert_eq!(normalise_language(Some("js")), "javascript");
        assert_eq!(normalise_language(Some("TS")), "typescript");
        assert_eq!(normalise_language(Some("r")), "r");
    }
}

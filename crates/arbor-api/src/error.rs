//! API errors: every failure answers `{"code": <status>, "message": "..."}`.

use crate::model::ErrorBody;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

/// An error answer of the REST API.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status (also the body's `code`).
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for a sandbox.
    pub fn sandbox_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 409: `what` may not be deleted while `users` (sandbox ids) use it.
    pub fn in_use(what: &str, users: &[String]) -> Self {
        let plural = if users.len() == 1 { "" } else { "es" };
        Self::conflict(format!("{what} is in use by sandbox{plural} {}", users.join(", ")))
    }

    /// 500; the detail is logged, and said.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {err}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.status.as_u16(), message: self.message };
        (self.status, Json(body)).into_response()
    }
}

impl From<arbor_store::Error> for ApiError {
    fn from(e: arbor_store::Error) -> Self {
        ApiError::internal("store", e)
    }
}

impl From<arbor_node::Error> for ApiError {
    fn from(e: arbor_node::Error) -> Self {
        match e {
            arbor_node::Error::TemplateNotFound(name) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("template '{name}' not found"))
            }
            arbor_node::Error::Invalid(msg) => ApiError::bad_request(msg),
            arbor_node::Error::Exhausted(msg) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, msg),
            arbor_node::Error::NoSpace(msg) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, msg),
            arbor_node::Error::Runtime(arbor_runtime::Error::InvalidSpec(msg)) => ApiError::bad_request(msg),
            arbor_node::Error::Runtime(e @ arbor_runtime::Error::FuseMounted(_)) => ApiError::conflict(e.to_string()),
            other => ApiError::internal("node", other),
        }
    }
}

impl From<arbor_build::Error> for ApiError {
    fn from(e: arbor_build::Error) -> Self {
        match e {
            arbor_build::Error::Node(e) => e.into(),
            e @ (arbor_build::Error::Invalid(_) | arbor_build::Error::Step { .. } | arbor_build::Error::Start(_)) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::internal("build", other),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// A JSON body the SDK sent wrong, as a 400 with serde's reason.
pub fn bad_json(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::bad_request(format!("invalid request body: {}", rejection.body_text()))
}

//! Proxy errors and the response shapes the SDKs understand.
//!
//! * `/files`, `/health` and other plain envd paths: HTTP status with
//!   `{"code": <status>, "message": "..."}`. The Python SDK maps the status
//!   (400 → `InvalidArgumentException`, 401 → `AuthenticationException`,
//!   502 → `TimeoutException` "likely due to sandbox timeout") and shows
//!   `message`.
//! * Connect unary calls (`application/json`, `application/proto`): HTTP
//!   status with a Connect error body `{"code": "unavailable", "message": ...}`,
//!   which both SDKs parse into the same exceptions as envd's own errors.
//! * Connect streaming calls (`application/connect+json`/`+proto`): HTTP 200
//!   and a single end-stream envelope carrying the error, as the Connect
//!   protocol does; the JS SDK reads only the status of a failed stream, not
//!   its body, so this is the only way it sees the message.

use arbor_proto::connect::{self, CallKind, Code, Codec, ConnectError};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request carries neither a sandbox id header nor an access token.
    #[error("the request names no sandbox: send Novita-Sandbox-Id or X-Access-Token")]
    NoSandbox,
    /// A header the proxy routes on is not valid text.
    #[error("header {0} is not valid text")]
    BadHeader(&'static str),
    /// No sandbox has this id.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// No sandbox holds this access token.
    #[error("no sandbox has this access token (it may have been killed)")]
    UnknownToken,
    /// The sandbox is paused and may not be resumed by traffic (no
    /// auto-resume); only said to a request with its credentials.
    #[error("sandbox {0} is paused; connect to resume it")]
    Paused(String),
    /// envd of the sandbox could not be reached or broke the exchange.
    #[error("sandbox {sandbox_id} is not reachable: {reason}")]
    Unreachable {
        /// The sandbox whose envd failed.
        sandbox_id: String,
        /// What went wrong, e.g. "connection refused".
        reason: String,
    },
    /// Any other refusal, with the status the client should see.
    #[error("{message}")]
    Status {
        /// HTTP status, e.g. that of a resume that failed.
        status: StatusCode,
        /// Human-readable reason.
        message: String,
    },
}

impl ProxyError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoSandbox => StatusCode::UNAUTHORIZED,
            ProxyError::BadHeader(_) => StatusCode::BAD_REQUEST,
            // 502, not 404: as upstream E2B's proxy does. The SDKs read 502 /
            // `unavailable` as "the sandbox is gone, likely timed out", while
            // a 404 on /files would surface as FileNotFoundException.
            // A paused sandbox is not running: the SDKs' `is_running()` reads
            // 502 from `/health` as `False` (any other error raises).
            ProxyError::NotFound(_)
            | ProxyError::UnknownToken
            | ProxyError::Paused(_)
            | ProxyError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Status { status, .. } => *status,
        }
    }

    /// The Connect code for this error's status.
    pub fn connect_code(&self) -> Code {
        connect_code(self.status())
    }

    /// Renders the error in the shape the caller of `path` understands (see
    /// the module doc); `content_type` is the request's.
    pub fn into_response_for(self, path: &str, content_type: Option<&str>) -> Response {
        self.into_response_shaped(ErrorShape::of(path, content_type))
    }

    pub(crate) fn into_response_shaped(self, shape: ErrorShape) -> Response {
        let message = self.to_string();
        let status = self.status();
        match shape {
            ErrorShape::Plain => {
                let body = serde_json::json!({ "code": status.as_u16(), "message": message });
                json_response(status, body.to_string())
            }
            ErrorShape::ConnectUnary => {
                json_response(status, ConnectError::new(self.connect_code(), message).to_json().to_string())
            }
            ErrorShape::ConnectStream(codec) => {
                let error = ConnectError::new(self.connect_code(), message);
                let ct = HeaderValue::from_static(codec.content_type(CallKind::Streaming));
                (StatusCode::OK, [(header::CONTENT_TYPE, ct)], connect::end_stream(Some(&error))).into_response()
            }
        }
    }
}

/// How a request wants the proxy's errors, decided before the request is
/// consumed (so nothing is copied out of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"code": <status>, "message"}` with the HTTP status.
    Plain,
    /// A Connect error body with the HTTP status.
    ConnectUnary,
    /// HTTP 200 and an end-stream envelope with the error.
    ConnectStream(Codec),
}

impl ErrorShape {
    pub(crate) fn of(path: &str, content_type: Option<&str>) -> Self {
        if !crate::is_connect_path(path) {
            return ErrorShape::Plain;
        }
        match content_type.and_then(Codec::from_content_type) {
            Some((CallKind::Streaming, codec)) => ErrorShape::ConnectStream(codec),
            _ => ErrorShape::ConnectUnary,
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let ct = HeaderValue::from_static("application/json");
    (status, [(header::CONTENT_TYPE, ct)], Bytes::from(body)).into_response()
}

/// Maps an HTTP status to the Connect code both SDKs turn into the matching
/// exception.
fn connect_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        409 | 412 => Code::FailedPrecondition,
        429 | 507 => Code::ResourceExhausted,
        499 => Code::Canceled,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        500..=599 => Code::Internal,
        _ => Code::Unknown,
    }
}

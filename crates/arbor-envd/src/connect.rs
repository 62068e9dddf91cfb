//! Serving Connect protocol v1 over axum: decoding a call, answering unary
//! calls, and turning a stream of messages into enveloped frames with
//! keepalives, a deadline and the closing end-stream frame.

use crate::error::Error;
use arbor_proto::connect::{self, CallKind, Code, Codec, ConnectError, EnvelopeDecoder};
use axum::{
    body::Body,
    extract::FromRequest,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use std::{future::Future, time::Duration};

/// Largest unary request body envd reads.
const MAX_UNARY_BODY: usize = 16 << 20;

/// A decoded Connect call, before its message is read.
#[derive(Debug)]
pub struct Call {
    /// Wire codec of request and response.
    pub codec: Codec,
    /// Unary or streaming, from the content type.
    pub kind: CallKind,
    /// `Connect-Timeout-Ms`, if the client set one.
    pub timeout: Option<Duration>,
    /// `Keepalive-Ping-Interval` (seconds), if the client set one.
    pub keepalive: Option<Duration>,
    body: Body,
}

/// A handler takes the call as its last argument; a request with an
/// unsupported content type is answered with 415 before the handler runs.
impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        Call::new(&parts.headers, body)
    }
}

/// Per-stream settings the handler may need (the process service uses the
/// timeout as the process's lifetime, as upstream envd does).
#[derive(Debug, Clone, Copy)]
pub struct StreamCtx {
    /// `Connect-Timeout-Ms`, if set.
    pub timeout: Option<Duration>,
}

impl Call {
    /// Reads codec, kind, timeout and keepalive from the request headers.
    /// The error is the finished 415 response, so handlers can return it.
    #[allow(clippy::result_large_err)]
    pub fn new(headers: &HeaderMap, body: Body) -> Result<Self, Response> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some((kind, codec)) = Codec::from_content_type(ct) else {
            let err = ConnectError::new(
                Code::InvalidArgument,
                format!("unsupported content type '{ct}'; use application/json, application/proto or application/connect+json"),
            );
            return Err(error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &err));
        };
        let number = |name: &str| -> Option<u64> {
            headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
        };
        Ok(Self {
            codec,
            kind,
            timeout: number("connect-timeout-ms").filter(|ms| *ms > 0).map(Duration::from_millis),
            keepalive: number("keepalive-ping-interval").filter(|s| *s > 0).map(Duration::from_secs),
            body,
        })
    }

    /// Reads the single request message of a unary or server-streaming call.
    pub async fn message<T>(self) -> Result<T, ConnectError>
    where
        T: prost::Message + DeserializeOwned + Default,
    {
        let body = axum::body::to_bytes(self.body, MAX_UNARY_BODY)
            .await
            .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("reading request body: {e}")))?;
        match self.kind {
            CallKind::Unary => self.codec.decode(&body),
            CallKind::Streaming => {
                let mut dec = EnvelopeDecoder::default();
                dec.push(&body);
                match dec.next_envelope()? {
                    Some(env) if env.flags & connect::FLAG_END_STREAM == 0 => self.codec.decode(&env.payload),
                    _ => Err(ConnectError::new(Code::InvalidArgument, "request stream holds no message")),
                }
            }
        }
    }

    /// The request messages of a client-streaming call, as they arrive.
    pub fn messages<T>(self) -> impl Stream<Item = Result<T, ConnectError>> + Send
    where
        T: prost::Message + DeserializeOwned + Default + Send,
    {
        let codec = self.codec;
        let mut body = self.body.into_data_stream();
        async_stream::stream! {
            let mut dec = EnvelopeDecoder::default();
            loop {
                loop {
                    match dec.next_envelope() {
                        Ok(Some(env)) if env.flags & connect::FLAG_END_STREAM != 0 => return,
                        Ok(Some(env)) => yield codec.decode::<T>(&env.payload),
                        Ok(None) => break,
                        Err(e) => { yield Err(e); return; }
                    }
                }
                match body.next().await {
                    Some(Ok(chunk)) => dec.push(&chunk),
                    Some(Err(e)) => {
                        yield Err(ConnectError::new(Code::Canceled, format!("request stream broke: {e}")));
                        return;
                    }
                    None if dec.has_partial() => {
                        yield Err(ConnectError::new(Code::InvalidArgument, "request stream ended inside a message"));
                        return;
                    }
                    None => return,
                }
            }
        }
    }
}

/// The answer to a method `service` does not have: 404 with `unimplemented`.
pub fn no_such_method(service: &str, method: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &ConnectError::new(Code::Unimplemented, format!("{service} has no method '{method}'")),
    )
}

/// A unary error: the Connect code's HTTP status and a JSON body.
pub fn error_response(status: StatusCode, err: &ConnectError) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], err.to_json().to_string())
        .into_response()
}

fn unary_error(err: &ConnectError) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, err)
}

/// Serves a unary call with `handler`.
pub async fn unary<Req, Resp, F, Fut>(call: Call, handler: F) -> Response
where
    Req: prost::Message + DeserializeOwned + Default,
    Resp: prost::Message + Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Error>>,
{
    if call.kind != CallKind::Unary {
        return stream_error(call.codec, ConnectError::new(Code::Unimplemented, "this method is unary"));
    }
    let codec = call.codec;
    let req = match call.message::<Req>().await {
        Ok(r) => r,
        Err(e) => return unary_error(&e),
    };
    match handler(req).await {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(codec.content_type(CallKind::Unary)))],
            codec.encode(&resp),
        )
            .into_response(),
        Err(e) => unary_error(&e.into()),
    }
}

/// Serves a server-streaming call: `handler` turns the request into a stream
/// of messages; `keepalive` makes the message sent after a quiet interval.
pub async fn server_stream<Req, Resp, S, F, Fut>(call: Call, keepalive: fn() -> Resp, handler: F) -> Response
where
    Req: prost::Message + DeserializeOwned + Default,
    Resp: prost::Message + Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Error>> + Send + 'static,
    F: FnOnce(Req, StreamCtx) -> Fut,
    Fut: Future<Output = Result<S, Error>>,
{
    let codec = call.codec;
    if call.kind != CallKind::Streaming {
        return unary_error(&ConnectError::new(
            Code::InvalidArgument,
            "this method is server-streaming; send application/connect+json",
        ));
    }
    let (timeout, interval) = (call.timeout, call.keepalive);
    let req = match call.message::<Req>().await {
        Ok(r) => r,
        Err(e) => return stream_error(codec, e),
    };
    match handler(req, StreamCtx { timeout }).await {
        Ok(messages) => stream_response(codec, timeout, interval, keepalive, messages),
        Err(e) => stream_error(codec, e.into()),
    }
}

/// A streaming response that fails before its first message: HTTP 200 with
/// only an end-stream frame, which both SDKs decode into the right error.
pub fn stream_error(codec: Codec, err: ConnectError) -> Response {
    stream_body(codec, Body::from(connect::end_stream(Some(&err))))
}

fn stream_body(codec: Codec, body: Body) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(codec.content_type(CallKind::Streaming)))], body)
        .into_response()
}

/// Frames `messages`, inserting keepalives after `interval` without one, and
/// ends with an end-stream frame: `deadline_exceeded` once `timeout` passes,
/// the error if the stream yields one, `{}` otherwise.
pub fn stream_response<Resp, S>(
    codec: Codec,
    timeout: Option<Duration>,
    interval: Option<Duration>,
    keepalive: fn() -> Resp,
    messages: S,
) -> Response
where
    Resp: prost::Message + Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Error>> + Send + 'static,
{
    let frames = async_stream::stream! {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut messages = std::pin::pin!(messages);
        let mut error = None;
        loop {
            let quiet = interval.map(|i| tokio::time::Instant::now() + i);
            let next = tokio::select! {
                m = messages.next() => m,
                () = sleep_until(deadline) => {
                    error = Some(ConnectError::new(Code::DeadlineExceeded, "the stream's timeout (Connect-Timeout-Ms) elapsed"));
                    break;
                }
                () = sleep_until(quiet) => Some(Ok(keepalive())),
            };
            match next {
                Some(Ok(msg)) => yield Ok::<Bytes, std::convert::Infallible>(
                    connect::envelope(0, &codec.encode(&msg)),
                ),
                Some(Err(e)) => {
                    error = Some(e.into());
                    break;
                }
                None => break,
            }
        }
        yield Ok(connect::end_stream(error.as_ref()));
    };
    stream_body(codec, Body::from_stream(frames))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

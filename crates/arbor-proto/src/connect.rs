//! Connect protocol v1: codecs, 5-byte envelopes and error codes.
//!
//! Unary calls carry one bare message (`application/json` or
//! `application/proto`); streaming calls carry enveloped messages
//! (`application/connect+json` / `application/connect+proto`), and a stream's
//! last envelope has the end-stream flag and a JSON body with an optional
//! error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

/// Envelope flag: the payload is compressed (never produced by Arbor).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: this is the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Largest envelope Arbor accepts (64 MiB), so a bad length cannot make us
/// buffer without bound.
pub const MAX_MESSAGE_LEN: usize = 64 << 20;

/// How messages are serialised on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Canonical protobuf JSON (what the official SDKs use).
    Json,
    /// Binary protobuf.
    Proto,
}

/// Whether a call is unary or streaming, as told by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// One bare message each way.
    Unary,
    /// Enveloped messages.
    Streaming,
}

impl Codec {
    /// Parses a request `Content-Type` into the call kind and codec.
    pub fn from_content_type(content_type: &str) -> Option<(CallKind, Codec)> {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some((CallKind::Unary, Codec::Json)),
            "application/proto" => Some((CallKind::Unary, Codec::Proto)),
            "application/connect+json" => Some((CallKind::Streaming, Codec::Json)),
            "application/connect+proto" => Some((CallKind::Streaming, Codec::Proto)),
            _ => None,
        }
    }

    /// The response `Content-Type` for this codec and call kind.
    pub fn content_type(self, kind: CallKind) -> &'static str {
        match (kind, self) {
            (CallKind::Unary, Codec::Json) => "application/json",
            (CallKind::Unary, Codec::Proto) => "application/proto",
            (CallKind::Streaming, Codec::Json) => "application/connect+json",
            (CallKind::Streaming, Codec::Proto) => "application/connect+proto",
        }
    }

    /// Decodes one message.
    pub fn decode<T>(self, bytes: &[u8]) -> Result<T, ConnectError>
    where
        T: prost::Message + DeserializeOwned + Default,
    {
        match self {
            Codec::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
            Codec::Json => serde_json::from_slice(bytes)
                .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("invalid JSON request: {e}"))),
            Codec::Proto => T::decode(bytes)
                .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("invalid protobuf request: {e}"))),
        }
    }

    /// Encodes one message.
    pub fn encode<T>(self, msg: &T) -> Bytes
    where
        T: prost::Message + Serialize,
    {
        match self {
            // Serialising generated messages into a Vec cannot fail: every
            // field maps to a JSON value and the writer is infallible.
            Codec::Json => Bytes::from(serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec())),
            Codec::Proto => Bytes::from(msg.encode_to_vec()),
        }
    }
}

/// Wraps a payload in a Connect envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(flags);
    // Payloads are bounded by MAX_MESSAGE_LEN, far below u32::MAX.
    buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    buf.put_slice(payload);
    buf.freeze()
}

/// The end-stream envelope: `{}` on success or `{"error": {...}}`.
pub fn end_stream(error: Option<&ConnectError>) -> Bytes {
    let body = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::to_vec(&serde_json::json!({ "error": e.to_json() })).unwrap_or_else(|_| b"{}".to_vec()),
    };
    envelope(FLAG_END_STREAM, &body)
}

/// One envelope read off a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope flags.
    pub flags: u8,
    /// The message bytes.
    pub payload: Bytes,
}

/// Incremental envelope parser for request bodies that arrive in pieces.
#[derive(Debug, Default)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
}

impl EnvelopeDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete envelope, if one has arrived.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("message of {len} bytes exceeds the {MAX_MESSAGE_LEN} byte limit"),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "compressed messages are not supported; send identity encoding",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Whether bytes of an incomplete envelope remain.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The code's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error response with this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 412,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    /// The error code.
    pub code: Code,
    /// What went wrong, for a person.
    pub message: String,
}

impl ConnectError {
    /// Creates an error.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The JSON object of a unary error body or an end-stream error.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_round_trip() {
        for ct in ["application/json", "application/proto", "application/connect+json", "application/connect+proto"] {
            let (kind, codec) = Codec::from_content_type(ct).unwrap_or((CallKind::Unary, Codec::Json));
            assert_eq!(codec.content_type(kind), ct);
        }
        assert_eq!(Codec::from_content_type("application/json; charset=utf-8"), Some((CallKind::Unary, Codec::Json)));
        assert_eq!(Codec::from_content_type("text/plain"), None);
    }

    #[test]
    fn envelopes_decode_incrementally() {
        let a = envelope(0, b"{\"a\":1}");
        let b = end_stream(None);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut dec = EnvelopeDecoder::default();
        dec.push(&all[..3]);
        assert_eq!(dec.next_envelope(), Ok(None));
        dec.push(&all[3..9]);
        assert_eq!(dec.next_envelope(), Ok(None));
        dec.push(&all[9..]);
        let first = dec.next_envelope().ok().flatten();
        assert_eq!(first.map(|e| e.payload), Some(Bytes::from_static(b"{\"a\":1}")));
        let last = dec.next_envelope().ok().flatten();
        assert_eq!(last.map(|e| (e.flags, e.payload)), Some((FLAG_END_STREAM, Bytes::from_static(b"{}"))));
        assert!(!dec.has_partial());
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut dec = EnvelopeDecoder::default();
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(dec.next_envelope().map_err(|e| e.code), Err(Code::ResourceExhausted));
        let mut dec = EnvelopeDecoder::default();
        dec.push(&envelope(FLAG_COMPRESSED, b"x"));
        assert_eq!(dec.next_envelope().map_err(|e| e.code), Err(Code::Unimplemented));
    }

    #[test]
    fn end_stream_carries_the_error() {
        let e = ConnectError::new(Code::DeadlineExceeded, "too slow");
        let frame = end_stream(Some(&e));
        assert_eq!(frame[0], FLAG_END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&frame[5..]).unwrap_or_default();
        assert_eq!(v["error"]["code"], "deadline_exceeded");
        assert_eq!(v["error"]["message"], "too slow");
    }
}

//! Ending a Connect stream cleanly when envd goes away in the middle of it.
//!
//! If envd dies (the sandbox is killed or times out) while a server stream is
//! open, the upstream body fails. Passed on as is, the client's connection is
//! cut mid-response: Python raises a bare `httpcore.RemoteProtocolError` and
//! JS "missing EndStreamResponse". When the failure falls between two
//! envelopes (the usual case: envd writes whole envelopes), this wrapper
//! instead ends the stream with an end-stream envelope carrying `unavailable`,
//! which both SDKs report like any sandbox that stopped answering.

use arbor_proto::connect::{self, Code, ConnectError, FLAG_END_STREAM};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// Wraps the body of a 200 Connect streaming response.
pub(crate) struct ConnectStream<B> {
    inner: B,
    sandbox_id: std::sync::Arc<str>,
    /// Bytes of the current envelope header seen so far (0..=5).
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current envelope still to come.
    remaining: u64,
    /// envd sent its own end-stream envelope.
    ended: bool,
    /// We ended the stream ourselves after an upstream failure.
    done: bool,
}

impl<B> ConnectStream<B> {
    pub(crate) fn new(inner: B, sandbox_id: std::sync::Arc<str>) -> Self {
        Self { inner, sandbox_id, header: [0; 5], header_len: 0, remaining: 0, ended: false, done: false }
    }

    /// Follows envelope boundaries through one chunk of the body.
    fn track(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(chunk.len());
                chunk.advance(n);
                self.remaining -= n as u64;
                continue;
            }
            let n = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[..n]);
            chunk.advance(n);
            self.header_len += n;
            if self.header_len == 5 {
                self.ended |= self.header[0] & FLAG_END_STREAM != 0;
                let len = [self.header[1], self.header[2], self.header[3], self.header[4]];
                self.remaining = u64::from(u32::from_be_bytes(len));
                self.header_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }
}

impl<B> Body for ConnectStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.track(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if this.at_boundary() && !this.ended => {
                this.done = true;
                tracing::debug!(sandbox = %this.sandbox_id, error = %e, "envd broke a stream; ending it with unavailable");
                let message = format!("sandbox {} is not reachable: envd closed the stream ({e})", this.sandbox_id);
                let end = connect::end_stream(Some(&ConnectError::new(Code::Unavailable, message)));
                Poll::Ready(Some(Ok(Frame::data(end))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The appended envelope may make the body longer than envd said.
        SizeHint::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_envelopes_split_across_chunks() {
        let mut s = ConnectStream::new((), "x".into());
        let mut body = connect::envelope(0, b"{\"a\":1}").to_vec();
        body.extend_from_slice(&connect::end_stream(None));
        for (i, b) in body.iter().enumerate() {
            s.track(std::slice::from_ref(b));
            // Inside the first envelope (5 + 7 bytes) we are never at a boundary.
            if i < 11 {
                assert!(!s.at_boundary(), "{i}");
            }
        }
        assert!(s.at_boundary());
        assert!(s.ended);
    }
}

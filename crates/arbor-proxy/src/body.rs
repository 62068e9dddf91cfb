//! A body wrapper that reports sandbox activity while data can still flow.

use crate::resolver::Resolver;
use http_body::{Body, Frame, SizeHint};
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Wraps a request or response body; calls [`Resolver::activity`] every
/// `every` while the body is open, and once when it is dropped (finished or
/// abandoned by either side).
///
/// The timer is polled with the body, so it needs no task of its own: when it
/// fires it wakes whoever is waiting for the body, which polls us again.
pub(crate) struct ActivityBody<B> {
    inner: B,
    resolver: Arc<dyn Resolver>,
    sandbox_id: Arc<str>,
    every: Duration,
    /// Created on the first poll that has to wait, so short unary exchanges
    /// never touch the timer wheel.
    tick: Option<Interval>,
}

impl<B> ActivityBody<B> {
    pub(crate) fn new(inner: B, resolver: Arc<dyn Resolver>, sandbox_id: Arc<str>, every: Duration) -> Self {
        Self { inner, resolver, sandbox_id, every, tick: None }
    }

    fn poll_tick(&mut self, cx: &mut Context<'_>) {
        if let Some(tick) = &mut self.tick {
            while tick.poll_tick(cx).is_ready() {
                self.resolver.activity(&self.sandbox_id);
            }
        }
    }
}

impl<B> Body for ActivityBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() && this.tick.is_none() && !this.every.is_zero() {
            let mut tick = tokio::time::interval_at(Instant::now() + this.every, this.every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            this.tick = Some(tick);
        }
        if !matches!(polled, Poll::Ready(None)) {
            this.poll_tick(cx);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ActivityBody<B> {
    fn drop(&mut self) {
        self.resolver.activity(&self.sandbox_id);
    }
}

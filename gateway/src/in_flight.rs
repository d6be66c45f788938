//! Counting model requests in flight: a permit of the `max_in_flight` semaphore and a gauge, held
//! until the answer has been sent (or dropped), because a streamed answer holds an upstream
//! connection for as long as it runs.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

/// One request in flight: its permit, and its count in the gauge until dropped.
pub(crate) struct InFlightGuard {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl InFlightGuard {
    pub(crate) fn new(permit: OwnedSemaphorePermit, gauge: Gauge) -> Self {
        gauge.inc();
        InFlightGuard {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

pin_project! {
    /// An answer's body that keeps its request in flight until it ends.
    pub(crate) struct InFlight {
        #[pin]
        body: Body,
        guard: InFlightGuard,
    }
}

impl InFlight {
    pub(crate) fn new(body: Body, guard: InFlightGuard) -> Self {
        InFlight { body, guard }
    }
}

impl http_body::Body for InFlight {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

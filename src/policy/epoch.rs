use std::time::Duration;

use tokio::time::Instant;

/// A policy's clock in a form that fits an atomic: nanoseconds after the policy was made, counted
/// from one so that zero can mean "not set". tokio's clock, so that tests can pause it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch {
    origin: Instant,
}

impl Epoch {
    /// Starts counting now.
    pub(crate) fn start() -> Self {
        Epoch {
            origin: Instant::now(),
        }
    }

    /// The stamp of `at` (never zero).
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.origin)).saturating_add(1)
    }

    /// The stamp of now (never zero).
    pub(crate) fn now(&self) -> u64 {
        self.stamp(Instant::now())
    }
}

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

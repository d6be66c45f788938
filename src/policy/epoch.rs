use std::time::Duration;

use tokio::time::Instant;

/// A policy's clock in a form that fits an atomic: nanoseconds after the policy was made, counted
/// from one so that zero can mean "not set".
///
/// It reads tokio's clock, so tests that pause time (`#[tokio::test(start_paused = true)]`) control
/// it. Keep one per policy and store its stamps in `AtomicU64`s.
///
/// ```
/// use tower_model_fallback::policy::Epoch;
///
/// let epoch = Epoch::start();
/// let now = epoch.now();
/// assert!(now > 0, "zero is left free to mean 'not set'");
/// assert!(epoch.stamp(tokio::time::Instant::now()) >= now);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    origin: Instant,
}

impl Epoch {
    /// Starts counting now.
    pub fn start() -> Self {
        Epoch { origin: now() }
    }

    /// The stamp of `at` (never zero; instants before the start map to 1).
    pub fn stamp(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.origin)).saturating_add(1)
    }

    /// The stamp of now (never zero).
    pub fn now(&self) -> u64 {
        self.stamp(now())
    }

    /// The instant of now, from the same clock as [`now`](Self::now).
    pub fn instant(&self) -> Instant {
        now()
    }
}

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// tokio's clock.
#[cfg(not(loom_model))]
fn now() -> Instant {
    Instant::now()
}

/// Under the model checker time stands still unless a model moves it, so that every interleaving it
/// replays sees the same clock.
#[cfg(loom_model)]
fn now() -> Instant {
    use std::sync::OnceLock;
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now) + Duration::from_nanos(model_clock::offset())
}

#[cfg(loom_model)]
pub(crate) mod model_clock {
    use std::cell::Cell;

    // Per test: loom runs a model's threads on the test's own OS thread, while tests run in parallel.
    thread_local! {
        static OFFSET: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn offset() -> u64 {
        OFFSET.with(Cell::get)
    }

    /// Sets the model's time, in nanoseconds after the first reading.
    pub(crate) fn set(nanos: u64) {
        OFFSET.with(|offset| offset.set(nanos));
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When one model's cooldown ends, readable without a lock and without the clock while no cooldown is
/// set.
///
/// The end is stored as nanoseconds after `origin` plus one, so that zero means "no cooldown".
#[derive(Debug, Default)]
pub(crate) struct CooldownCell {
    until: AtomicU64,
}

impl CooldownCell {
    /// Extends the cooldown to end at `until` at the earliest.
    pub(crate) fn extend_to(&self, origin: Instant, until: Instant) {
        let stamp = until.saturating_duration_since(origin).as_nanos();
        let stamp = u64::try_from(stamp).unwrap_or(u64::MAX - 1) + 1;
        self.until.fetch_max(stamp, Ordering::AcqRel);
    }

    /// Ends the cooldown.
    pub(crate) fn clear(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Time left, or `None` when no cooldown is running. Reads the clock only when one is set, and
    /// forgets a cooldown that has run out so later reads skip the clock again.
    pub(crate) fn remaining(&self, origin: Instant) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = Instant::now().saturating_duration_since(origin).as_nanos();
        let now = u64::try_from(now).unwrap_or(u64::MAX - 1) + 1;
        if until > now {
            Some(Duration::from_nanos(until - now))
        } else {
            // Only clear the value we read: a concurrent throttle may have set a new one.
            let _ = self
                .until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
            None
        }
    }
}

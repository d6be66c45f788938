use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::epoch::Epoch;

/// When one model's cooldown ends, readable without a lock and without the clock while no cooldown is
/// set.
///
/// The end is stored as an [`Epoch`] stamp; zero means "no cooldown".
#[derive(Debug, Default)]
pub(crate) struct CooldownCell {
    until: AtomicU64,
}

impl CooldownCell {
    /// Extends the cooldown to end at `until` at the earliest.
    pub(crate) fn extend_to(&self, epoch: &Epoch, until: Instant) {
        self.until.fetch_max(epoch.stamp(until), Ordering::AcqRel);
    }

    /// Ends the cooldown.
    pub(crate) fn clear(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Time left, or `None` when no cooldown is running. Reads the clock only when one is set, and
    /// forgets a cooldown that has run out so later reads skip the clock again.
    pub(crate) fn remaining(&self, epoch: &Epoch) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = epoch.now();
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

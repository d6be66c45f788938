use std::time::Duration;

use tokio::time::Instant;

use super::epoch::Epoch;
use crate::sync::{AtomicU64, Ordering};

/// When one model's cooldown ends, readable without a lock and without the clock while no cooldown is
/// set: the building block of a policy's per-request read path.
///
/// The end is stored as an [`Epoch`] stamp; zero means "no cooldown". Writers only ever extend it or
/// clear it, so concurrent throttles keep the longest cooldown.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::policy::{CooldownCell, Epoch};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let epoch = Epoch::start();
/// let cell = CooldownCell::default();
/// assert_eq!(cell.remaining(&epoch), None);
/// cell.extend_to(&epoch, epoch.instant() + Duration::from_secs(10));
/// assert!(cell.remaining(&epoch).is_some());
/// cell.clear();
/// assert_eq!(cell.remaining(&epoch), None);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct CooldownCell {
    until: AtomicU64,
}

impl CooldownCell {
    /// Extends the cooldown to end at `until` at the earliest.
    pub fn extend_to(&self, epoch: &Epoch, until: Instant) {
        self.until.fetch_max(epoch.stamp(until), Ordering::AcqRel);
    }

    /// Ends the cooldown.
    pub fn clear(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Time left, or `None` when no cooldown is running. Reads the clock only when one is set, and
    /// forgets a cooldown that has run out so later reads skip the clock again.
    pub fn remaining(&self, epoch: &Epoch) -> Option<Duration> {
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

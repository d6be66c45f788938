use crate::sync::{AtomicU64, Ordering, fence};

/// A rate and the time it was measured, read together without a lock.
///
/// A sequence lock made of atomics: the one writer (who holds the policy's per-model lock) makes the
/// sequence odd, writes both values and makes it even again; a reader retries when the sequence was
/// odd or changed while it read. Readers never see a new rate with an old time.
#[derive(Debug, Default)]
pub(crate) struct RateCell {
    sequence: AtomicU64,
    rate: AtomicU64,
    at: AtomicU64,
}

impl RateCell {
    /// The rate (per second) and its [`Epoch`](super::Epoch) stamp; `(0.0, 0)` before the first store.
    pub(crate) fn load(&self) -> (f64, u64) {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            let rate = self.rate.load(Ordering::Relaxed);
            let at = self.at.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let after = self.sequence.load(Ordering::Relaxed);
            if before == after && before.is_multiple_of(2) {
                return (f64::from_bits(rate), at);
            }
            std::hint::spin_loop();
            #[cfg(loom_model)]
            loom::thread::yield_now();
        }
    }

    /// Stores both values. Callers must not store concurrently (they hold a lock).
    pub(crate) fn store(&self, rate: f64, at: u64) {
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        self.at.store(at, Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }
}

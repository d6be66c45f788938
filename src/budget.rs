//! A lock-free retry budget for [`FallbackLayerBuilder::retry_budget`](crate::FallbackLayerBuilder::retry_budget).

use std::time::Duration;

use tower::retry::budget::Budget;

use crate::error::ConfigError;
use crate::policy::Epoch;
use crate::sync::{AtomicU64, Ordering};

/// Slots the window is divided into.
const SLOTS: u64 = 10;
/// Bits of a slot counter that hold its generation; the rest hold the count.
const GENERATION_BITS: u32 = 24;
const COUNT_BITS: u32 = 64 - GENERATION_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// Fallback attempts allowed as a share of the requests of a recent window, plus a floor per second:
/// the semantics of tower's [`TpsBudget`](tower::retry::budget::TpsBudget), without its lock.
///
/// Every request deposits one; a fallback attempt withdraws one while the withdrawals of the window
/// stay under `percent` of its deposits plus `min_per_sec` for each second of it. With every model
/// failing, a layer with a 20% budget makes at most about 1.2 attempts per request once the floor is
/// spent, however long its chains.
///
/// The window is kept as ten slots of counters, each tagged with the slot's generation, so a
/// deposit is one compare-and-swap on a shared counter and nothing waits for a lock. Withdrawals that
/// race for the last unit of budget may both succeed: the overshoot is bounded by the number of
/// concurrent requests.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::{FallbackBudget, FallbackLayer, ModelChain, policy::AdaptiveCooldown};
///
/// let chain = ModelChain::new(["primary", "fallback"])?;
/// let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
///     .retry_budget(FallbackBudget::new(Duration::from_secs(10), 10, 0.2)?)
///     .build()?;
/// # Ok::<(), tower::BoxError>(())
/// ```
#[derive(Debug)]
pub struct FallbackBudget {
    epoch: Epoch,
    slot_nanos: u64,
    percent: f64,
    reserve: u64,
    deposits: Box<[AtomicU64]>,
    withdrawals: Box<[AtomicU64]>,
}

impl FallbackBudget {
    /// A budget over a window of `ttl` (1 to 60 s): `min_per_sec` fallbacks per second always, plus
    /// `percent` (0 to 10, such as 0.2 for 20%) of the window's requests.
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f64) -> Result<Self, ConfigError> {
        let in_range = (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl);
        if !in_range || !(0.0..=10.0).contains(&percent) {
            return Err(ConfigError::InvalidRetryBudget);
        }
        let slot_nanos = u64::try_from(ttl.as_nanos() / u128::from(SLOTS)).unwrap_or(u64::MAX);
        let counters = || (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        Ok(FallbackBudget {
            epoch: Epoch::start(),
            slot_nanos,
            percent,
            reserve: u64::from(min_per_sec) * ttl.as_secs(),
            deposits: counters(),
            withdrawals: counters(),
        })
    }

    /// The current slot's generation.
    fn generation(&self) -> u64 {
        (self.epoch.now() / self.slot_nanos) & GENERATION_MASK
    }

    /// Adds one to the current slot of `counters`, starting the slot afresh if it is from an older
    /// generation.
    fn count(&self, counters: &[AtomicU64], generation: u64) {
        let Some(slot) = counters.get((generation % SLOTS) as usize) else {
            return;
        };
        let mut seen = slot.load(Ordering::Relaxed);
        loop {
            let next = if seen >> COUNT_BITS == generation {
                seen + u64::from(seen & COUNT_MASK < COUNT_MASK)
            } else {
                (generation << COUNT_BITS) | 1
            };
            match slot.compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => seen = actual,
            }
        }
    }

    /// The sum of the counts of the window ending in `generation`.
    fn sum(counters: &[AtomicU64], generation: u64) -> u64 {
        counters
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|v| (generation.wrapping_sub(v >> COUNT_BITS) & GENERATION_MASK) < SLOTS)
            .map(|v| v & COUNT_MASK)
            .sum()
    }
}

impl Budget for FallbackBudget {
    fn deposit(&self) {
        self.count(&self.deposits, self.generation());
    }

    fn withdraw(&self) -> bool {
        let generation = self.generation();
        let deposits = Self::sum(&self.deposits, generation);
        let withdrawn = Self::sum(&self.withdrawals, generation);
        let allowed = self.reserve + (deposits as f64 * self.percent) as u64;
        if withdrawn >= allowed {
            return false;
        }
        self.count(&self.withdrawals, generation);
        true
    }
}

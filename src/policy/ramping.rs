use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{AdaptiveCooldown, AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::chain::ModelChain;
use crate::classify::ErrorClass;
use crate::error::ConfigError;
use crate::request::TokenCost;

/// Shares are fixed-point numbers: `ONE` is the whole of the traffic.
const ONE: u64 = 1 << 20;

/// [`AdaptiveCooldown`]'s cooldowns as a share of traffic instead of a block: a throttle halves the
/// share of new requests a model gets, and the share climbs back to all of them in a straight line
/// over the cooldown the adaptive tiers set (10 s after one throttle, 30 s after two, 60 s after
/// four in a minute).
///
/// Bedrock throttles when a model's quota bucket is empty, and the bucket refills continuously. A
/// blind cooldown sends all of the model's traffic elsewhere and reopens it all at once, so the
/// reopened model is drained again at once; a single probe finds the refill sooner but reopens just
/// as abruptly. Halving the share lets the bucket refill while the model keeps serving most of the
/// requests it can, and the ramp finds the rate the quota sustains.
///
/// - Only a *fresh* throttle lowers the share: the attempts that were already running when the
///   share was lowered are not evidence about the lowered share, so their throttles are counted in
///   stats but do not lower it again.
/// - Requests are admitted by a lock-free credit counter, so a 50 % share admits every second new
///   request rather than a random half.
/// - A success does not reopen the model early: the ramp already gives it back its traffic.
/// - While a model has its full share, [`hint`](CooldownPolicy::hint) costs what
///   `AdaptiveCooldown`'s does: one atomic load and no clock read.
///
/// The simulator's table (`cargo run --release --example simulate`) compares it with the other
/// policies.
#[derive(Debug)]
pub struct RampingCooldown {
    inner: AdaptiveCooldown,
    decrease: u64,
    ramps: Box<[Ramp]>,
}

#[derive(Debug, Default)]
struct Ramp {
    /// The share the ramp starts from, set by the latest fresh throttle.
    start: AtomicU64,
    /// The ramp's length in nanoseconds (the cooldown set by that throttle).
    length: AtomicU64,
    /// Admission credit: a request is admitted when adding the share crosses a multiple of `ONE`.
    credit: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Ramp {
    /// The share while `remaining` of the ramp is left.
    fn share(&self, remaining: Duration) -> u64 {
        let start = self.start.load(Ordering::Acquire).min(ONE);
        let length = self.length.load(Ordering::Acquire);
        if length == 0 {
            return ONE;
        }
        let done = length.saturating_sub(nanos(remaining));
        let climbed = u128::from(ONE - start) * u128::from(done) / u128::from(length);
        start + u64::try_from(climbed).unwrap_or(ONE)
    }

    fn admit(&self, share: u64) -> bool {
        let before = self.credit.fetch_add(share, Ordering::Relaxed);
        (before % ONE) + share >= ONE
    }
}

impl RampingCooldown {
    /// The adaptive defaults, halving the share on each fresh throttle.
    pub fn new(chain: ModelChain) -> Self {
        RampingCooldown::wrap(AdaptiveCooldown::new(chain), ONE / 2)
    }

    /// Ramps over `inner`'s cooldowns; a fresh throttle multiplies the share by `decrease`, which
    /// must be at least 0 and below 1 (0 makes every ramp start from nothing).
    pub fn with_decrease(inner: AdaptiveCooldown, decrease: f64) -> Result<Self, ConfigError> {
        if !(0.0..1.0).contains(&decrease) {
            return Err(ConfigError::InvalidDecrease);
        }
        // In range by the check above, so the cast cannot saturate.
        let decrease = (decrease * ONE as f64) as u64;
        Ok(RampingCooldown::wrap(inner, decrease))
    }

    fn wrap(inner: AdaptiveCooldown, decrease: u64) -> Self {
        let ramps = (0..inner.chain().len()).map(|_| Ramp::default()).collect();
        RampingCooldown {
            inner,
            decrease,
            ramps,
        }
    }

    /// The share of new requests `model` gets now, from 0 to 1.
    pub fn share(&self, model: usize) -> f64 {
        let share = match (self.inner.cooldown_remaining(model), self.ramps.get(model)) {
            (Some(remaining), Some(ramp)) => ramp.share(remaining),
            _ => ONE,
        };
        share as f64 / ONE as f64
    }
}

impl CooldownPolicy for RampingCooldown {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }

    fn hint(&self, model: usize, _cost: Option<TokenCost>) -> Hint {
        let Some(remaining) = self.inner.cooldown_remaining(model) else {
            return Hint::Available;
        };
        match self.ramps.get(model) {
            Some(ramp) if !ramp.admit(ramp.share(remaining)) => Hint::Cooling { remaining },
            _ => Hint::Available,
        }
    }

    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }

    fn on_success(&self, _attempt: &AttemptInfo) {}

    fn on_throttle(&self, attempt: &AttemptInfo, retry_after: Option<Duration>) -> Duration {
        let running = self.inner.cooldown_remaining(attempt.model);
        let (Some(ramp), Some(count)) = (
            self.ramps.get(attempt.model),
            self.inner.throttle_count(attempt.model),
        ) else {
            return Duration::ZERO;
        };
        if count != attempt.ticket.get() {
            return running.unwrap_or_default();
        }
        let before = running.map_or(ONE, |remaining| ramp.share(remaining));
        let cooldown = self.inner.on_throttle(attempt, retry_after);
        let start = u128::from(before) * u128::from(self.decrease) / u128::from(ONE);
        ramp.start
            .store(u64::try_from(start).unwrap_or(0), Ordering::Release);
        ramp.length.store(nanos(cooldown), Ordering::Release);
        // The bucket was just found empty: the next request is admitted only once the new share has
        // added up to a whole request, not at once because of credit left from before.
        ramp.credit.store(0, Ordering::Relaxed);
        cooldown
    }

    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        self.inner.on_failure(attempt, class);
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.inner.cooldown_remaining(model)
    }

    fn reset_cooldowns(&self) {
        self.inner.reset_cooldowns();
    }
}

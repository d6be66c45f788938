use std::collections::VecDeque;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::cell::CooldownCell;
use super::epoch::{Epoch, nanos};
use super::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::chain::ModelChain;
use crate::classify::Throttle;
use crate::cluster::{ClusterEvent, ClusterPolicy};
use crate::error::ConfigError;
use crate::request::TokenCost;
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};

/// One step of [`AdaptiveCooldown`]'s scale: from `throttles` throttles in the window on, a throttle
/// cools the model for `cooldown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Throttles within the window (counting the new one) at which this tier starts.
    pub throttles: u32,
    /// The cooldown this tier sets.
    pub cooldown: Duration,
}

impl Tier {
    /// Creates a tier.
    pub const fn new(throttles: u32, cooldown: Duration) -> Self {
        Tier {
            throttles,
            cooldown,
        }
    }
}

const DEFAULT_TIERS: [Tier; 3] = [
    Tier::new(1, Duration::from_secs(10)),
    Tier::new(2, Duration::from_secs(30)),
    Tier::new(4, Duration::from_secs(60)),
];

/// Cooldowns that grow with how often a model was throttled recently, and end on the first fresh
/// success. The default policy.
///
/// - A throttle counts the model's throttles in the last `window` (60 s) and cools the model for the
///   tier that count reaches: 1 throttle 10 s, 2-3 throttles 30 s, 4 or more 60 s. A retry-after hint
///   longer than that (capped at `max_retry_after`) lengthens the cooldown.
/// - New requests skip a model while more than `skip_threshold` (2 s) of its cooldown is left; in the
///   last 2 s they try it again, so a recovered primary is found without waiting out the full time.
/// - A success clears the model's history and cooldown, but only if its attempt started after the
///   latest throttle: a slow request that began before the throttle proves nothing about now.
/// - By the same rule, a throttle of an attempt that started before the latest throttle is the same
///   empty quota seen again and does not count in the window, so four attempts throttled together
///   cool the model for 10 s, not 60 s (a retry-after hint on it still lengthens the cooldown).
///
/// [`hint`](CooldownPolicy::hint) is one atomic load per model while the model is not cooling.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::{ModelChain, policy::{AdaptiveCooldown, Tier}};
///
/// let chain = ModelChain::new(["sonnet", "haiku"])?;
/// let policy = AdaptiveCooldown::builder()
///     .window(Duration::from_secs(120))
///     .tiers([Tier::new(1, Duration::from_secs(5)), Tier::new(3, Duration::from_secs(45))])
///     .skip_threshold(Duration::from_secs(1))
///     .build(chain)?;
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct AdaptiveCooldown {
    chain: ModelChain,
    window: Duration,
    tiers: Box<[Tier]>,
    skip_threshold: Duration,
    max_retry_after: Duration,
    epoch: Epoch,
    models: Box<[ModelState]>,
}

#[derive(Debug, Default)]
struct ModelState {
    cooldown: CooldownCell,
    /// Throttles recorded so far; an attempt's ticket holds the value at its start.
    throttles: AtomicU64,
    /// Set while there is history or a cooldown for a success to clear; lets successes skip the lock.
    dirty: AtomicBool,
    /// Times of the recent throttles, at most as many as the top tier needs.
    history: Mutex<VecDeque<Instant>>,
    /// When this replica last saw the model throttle (an epoch stamp; 0: never), for
    /// [`ClusterPolicy::apply`].
    seen_here: AtomicU64,
}

impl ModelState {
    fn history(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        // Nothing panics while the lock is held; if something ever did, the history is still usable.
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the cooldown and forgets the throttles of the window; the caller holds `history`.
    fn forget(&self, history: &mut VecDeque<Instant>) {
        history.clear();
        self.cooldown.clear();
        self.dirty.store(false, Ordering::Release);
    }
}

impl AdaptiveCooldown {
    /// The default policy for `chain`.
    pub fn new(chain: ModelChain) -> Self {
        AdaptiveCooldown::with_config(
            chain,
            Duration::from_secs(60),
            DEFAULT_TIERS.into(),
            Duration::from_secs(2),
            Duration::from_secs(300),
        )
    }

    /// Starts a policy with non-default numbers.
    pub fn builder() -> AdaptiveCooldownBuilder {
        AdaptiveCooldownBuilder {
            window: Duration::from_secs(60),
            tiers: DEFAULT_TIERS.to_vec(),
            skip_threshold: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(300),
        }
    }

    fn with_config(
        chain: ModelChain,
        window: Duration,
        tiers: Box<[Tier]>,
        skip_threshold: Duration,
        max_retry_after: Duration,
    ) -> Self {
        let models = (0..chain.len()).map(|_| ModelState::default()).collect();
        AdaptiveCooldown {
            chain,
            window,
            tiers,
            skip_threshold,
            max_retry_after,
            epoch: Epoch::start(),
            models,
        }
    }

    /// The window in which throttles are counted.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The cooldown tiers.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// New requests skip a model while more than this much of its cooldown is left.
    pub fn skip_threshold(&self) -> Duration {
        self.skip_threshold
    }

    /// The cooldown for `throttles` throttles within the window.
    pub fn cooldown_for(&self, throttles: u32) -> Duration {
        self.tiers
            .iter()
            .rev()
            .find(|tier| tier.throttles <= throttles)
            .map_or(Duration::ZERO, |tier| tier.cooldown)
    }

    fn max_history(&self) -> usize {
        self.tiers.last().map_or(1, |t| t.throttles as usize)
    }
}

impl CooldownPolicy for AdaptiveCooldown {
    fn chain(&self) -> &ModelChain {
        &self.chain
    }

    fn hint(&self, model: usize, _cost: Option<TokenCost>) -> Hint {
        match self.reopens_in(model) {
            Some(remaining) => Hint::Cooling { remaining },
            None => Hint::Available,
        }
    }

    fn on_attempt(&self, model: usize, _cost: Option<TokenCost>) -> Ticket {
        self.models.get(model).map_or(Ticket::default(), |m| {
            Ticket::new(m.throttles.load(Ordering::Acquire))
        })
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        let Some(state) = self.models.get(attempt.model) else {
            return;
        };
        if !state.dirty.load(Ordering::Acquire) {
            return;
        }
        let mut history = state.history();
        // A throttle recorded after this attempt started is newer evidence than this success.
        if state.throttles.load(Ordering::Acquire) != attempt.ticket.get() {
            return;
        }
        state.forget(&mut history);
    }

    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        if let Some(state) = self.models.get(attempt.model) {
            state.seen_here.store(self.epoch.now(), Ordering::Relaxed);
        }
        self.record_throttle(attempt, throttle.retry_after)
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.models.get(model)?.cooldown.remaining(&self.epoch)
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        let remaining = self.cooldown_remaining(model)?;
        (remaining > self.skip_threshold).then(|| remaining - self.skip_threshold)
    }

    fn reset_cooldowns(&self) {
        for state in self.models.iter() {
            state.forget(&mut state.history());
        }
    }
}

impl AdaptiveCooldown {
    /// Counts a throttle of `attempt` (seen here or at another replica) and sets the cooldown.
    fn record_throttle(&self, attempt: &AttemptInfo, retry_after: Option<Duration>) -> Duration {
        let Some(state) = self.models.get(attempt.model) else {
            return Duration::ZERO;
        };
        let mut history = state.history();
        let now = self.epoch.instant();
        let hinted = retry_after.map_or(Duration::ZERO, |d| d.min(self.max_retry_after));
        if state.throttles.load(Ordering::Acquire) != attempt.ticket.get() {
            // The attempt started before the latest throttle: the same empty quota seen again, not a
            // new throttle in the window. Its retry-after hint still counts.
            if !hinted.is_zero() {
                state.cooldown.extend_to(&self.epoch, now + hinted);
            }
            return state.cooldown.remaining(&self.epoch).unwrap_or_default();
        }
        while history
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            history.pop_front();
        }
        if history.len() >= self.max_history() {
            history.pop_front();
        }
        history.push_back(now);
        let count = u32::try_from(history.len()).unwrap_or(u32::MAX);
        let cooldown = self.cooldown_for(count).max(hinted);
        let running = state.cooldown.remaining(&self.epoch).unwrap_or_default();
        if !cooldown.is_zero() {
            state.cooldown.extend_to(&self.epoch, now + cooldown);
        }
        state.throttles.fetch_add(1, Ordering::AcqRel);
        state.dirty.store(true, Ordering::Release);
        cooldown.max(running)
    }
}

impl ClusterPolicy for AdaptiveCooldown {
    fn is_new_throttle(&self, attempt: &AttemptInfo) -> bool {
        self.models
            .get(attempt.model)
            .is_some_and(|m| m.throttles.load(Ordering::Acquire) == attempt.ticket.get())
    }

    /// A remote throttle counts as a new throttle here (in the window, for the tier, and against the
    /// successes of requests that started before it), with a cooldown at least as long as what is
    /// left of the one the throttled replica set. A remote clearing success clears, unless this
    /// replica saw the model throttle after the success was sent. A remote reset resets.
    fn apply(&self, event: &ClusterEvent, sent_ago: Duration) {
        match event {
            ClusterEvent::Throttled { model, cooldown } => {
                if let Some(index) = self.chain.index_of(model.as_str()) {
                    let ticket = self.on_attempt(index, None);
                    let left = cooldown.saturating_sub(sent_ago);
                    self.record_throttle(&AttemptInfo::new(index, ticket, None), Some(left));
                }
            }
            ClusterEvent::Cleared { model } => {
                let Some(state) = self
                    .chain
                    .index_of(model.as_str())
                    .and_then(|i| self.models.get(i))
                else {
                    return;
                };
                let mut history = state.history();
                let seen_here = state.seen_here.load(Ordering::Relaxed);
                if seen_here != 0 && self.epoch.now().saturating_sub(seen_here) < nanos(sent_ago) {
                    return;
                }
                state.forget(&mut history);
            }
            ClusterEvent::Reset => self.reset_cooldowns(),
        }
    }

    /// The end of the cooldown's skipped part: from then on new requests try the model again.
    fn probe_in(&self, model: usize) -> Option<Duration> {
        self.reopens_in(model)
    }
}

/// Builds an [`AdaptiveCooldown`] with non-default numbers; see [`AdaptiveCooldown::builder`].
#[derive(Clone, Debug)]
pub struct AdaptiveCooldownBuilder {
    window: Duration,
    tiers: Vec<Tier>,
    skip_threshold: Duration,
    max_retry_after: Duration,
}

impl AdaptiveCooldownBuilder {
    /// How far back throttles are counted (default 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The cooldown scale (default 1 throttle 10 s, 2 throttles 30 s, 4 throttles 60 s). Thresholds
    /// must strictly increase and cooldowns must not shrink.
    pub fn tiers(mut self, tiers: impl IntoIterator<Item = Tier>) -> Self {
        self.tiers = tiers.into_iter().collect();
        self
    }

    /// New requests skip a model while more than this much of its cooldown is left (default 2 s).
    /// Must be shorter than the shortest tier's cooldown.
    pub fn skip_threshold(mut self, threshold: Duration) -> Self {
        self.skip_threshold = threshold;
        self
    }

    /// The longest cooldown a retry-after hint may ask for (default 300 s), so one odd header cannot
    /// shut a model off for hours.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Validates the numbers and builds the policy for `chain`.
    pub fn build(self, chain: ModelChain) -> Result<AdaptiveCooldown, ConfigError> {
        if self.window.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        let Some(first) = self.tiers.first() else {
            return Err(ConfigError::NoTiers);
        };
        if self
            .tiers
            .iter()
            .any(|t| t.throttles == 0 || t.cooldown.is_zero())
        {
            return Err(ConfigError::ZeroTier);
        }
        if self
            .tiers
            .windows(2)
            .any(|w| w[1].throttles <= w[0].throttles || w[1].cooldown < w[0].cooldown)
        {
            return Err(ConfigError::TiersNotIncreasing);
        }
        if self.skip_threshold >= first.cooldown {
            return Err(ConfigError::SkipThresholdTooLarge {
                threshold: self.skip_threshold,
                shortest: first.cooldown,
            });
        }
        Ok(AdaptiveCooldown::with_config(
            chain,
            self.window,
            self.tiers.into(),
            self.skip_threshold,
            self.max_retry_after,
        ))
    }
}

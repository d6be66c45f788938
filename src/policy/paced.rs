use std::sync::{PoisonError, TryLockError};
use std::time::Duration;

use super::epoch::{Epoch, nanos};
use super::rate_cell::RateCell;
use super::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::chain::ModelChain;
use crate::classify::Throttle;
use crate::cluster::{ClusterEvent, ClusterPolicy};
use crate::error::ConfigError;
use crate::per_thread::PerThreadCounter;
use crate::request::TokenCost;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// Successes between two marks of the recent served rate.
const MARK_EVERY: u64 = 16;
/// Fewest successes a recent-rate window must hold to be trusted.
const MIN_COUNT: u64 = 8;
/// How fast the pace creeps up between throttles, per second, relative to the measured rate: it
/// finds quota that grew (or that other clients stopped using) without overrunning it often.
const RISE_PER_SECOND: f64 = 0.001;
/// An open model's throttle paces it only when another fresh one came this soon before it.
const SUSPICION: Duration = Duration::from_secs(30);
/// ... or when the model was throttled while paced this recently: it is known to run at its quota.
const MEMORY: Duration = Duration::from_secs(120);
/// Throttles closer together than this are too close to measure a rate from.
const MIN_WINDOW: Duration = Duration::from_secs(5);

/// Paces a throttled model at the rate its quota was measured to refill, instead of blocking it.
///
/// Bedrock throttles when a model's quota bucket is empty, and the bucket refills at a steady rate.
/// A throttle is therefore a measurement: the bucket is empty *now*. Between two throttles, what the
/// model served is what its quota refilled, and that is the rate it can sustain.
///
/// - A model starts *open*: every request may try it. The policy then costs one atomic load per
///   request, like [`AdaptiveCooldown`](super::AdaptiveCooldown), and one count per success in a
///   cell of the thread's own (it counts what each model served).
/// - A lone throttle leaves an open model open: it is as likely the provider's on-demand capacity
///   as an empty bucket, and pacing a model with quota to spare would hold back part of its demand
///   for a minute. A throttle is not alone when another fresh one came within 30 s, when a
///   throttle paced the model within the last 2 minutes (it runs at its quota), or when it carries
///   a retry-after. Shared through a cluster, a lone throttle reaches the other replicas as one too.
/// - Such a throttle starts *pacing*: new requests are admitted at 95 % (`margin`) of the rate
///   the model served lately (over its last 8 to 32 successes; with fewer, its mean rate since the
///   last measurement or the start, at least one per second),
///   with a burst of up to `burst` (2 s) of that rate; the rest go to the next model at once. The
///   admission is a lock-free cell-rate check (one compare-and-swap per admitted request).
/// - Every later throttle resynchronises the pace (the bucket is empty now) and, when it comes at
///   least 5 s after the previous measurement, measures the rate again. What the model served
///   between the two, per second, is a lower bound of the refill (the pace or the demand capped
///   it), and the pace is an upper one when it drained the bucket: the measurement is their
///   midpoint (the served rate when that is higher), so a pace moves at most halfway down on one
///   window. A throttle sooner than 5 s is still evidence: the quota refilled at most one request
///   more than the model served since the measurement, so the pace drops to that bound when it is
///   lower. A first estimate taken from a burst (a full bucket drained in milliseconds) is
///   therefore corrected within a few throttles instead of flooding the model until the next
///   measurement. Between throttles the pace creeps up by 0.1 % of the rate per second, so
///   capacity that grows is found.
/// - A model that has not been throttled for `quiet` (60 s) and whose pace is not holding requests
///   back goes back to open.
/// - Only a *fresh* throttle counts: attempts that started before the latest throttle say nothing
///   new about the pace, so a burst of throttles from one moment counts once.
/// - A retry-after hint holds the model for at least that long, up to `max_retry_after` (300 s), so
///   one odd header cannot shut a model off for hours.
/// - An admitted attempt that is cancelled is not given back: it may have reached Bedrock and used
///   the quota.
///
/// The per-request path (`hint`, `on_success`) is lock-free; throttles and resets take a short
/// per-model lock so that a measurement is written whole.
///
/// Compared with the other policies in the simulator
/// (`cargo run --release -p tower-model-fallback-sim`), it keeps more of the primary than
/// [`AdaptiveCooldown`](super::AdaptiveCooldown) with fewer throttled calls, on every scenario.
/// It is not better everywhere: over the simulator's sweep of 720 workloads
/// (`--sweep --sweep-seeds 8`) a paired test shows it worse than `AdaptiveCooldown` on some metric
/// in 8 % of them (the test flags `AdaptiveCooldown` against itself in 4 %), mostly on the
/// primary's share where a light load meets an ample quota or a bucket only a few requests deep:
/// the pace, measured from a demand below the quota, holds back requests the primary could have
/// answered. Where the primary runs out of tokens, most of what it loses is requests, not quota:
/// measured by the primary's share of the tokens instead, the test flags it in 5 % of the
/// workloads, as often as `AdaptiveCooldown` against itself. With a second
/// [pass](crate::FallbackLayerBuilder::passes) it answered at least 99.9 % of the requests on
/// every workload the sweep counts as within capacity (under 0.8 of the quotas, buckets of 2 s or
/// more), and was never shown more than 2 points worse on success.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::{ModelChain, policy::PacedCooldown};
///
/// let chain = ModelChain::new(["sonnet", "haiku"])?;
/// let policy = PacedCooldown::builder()
///     .margin(0.9)
///     .burst(Duration::from_secs(1))
///     .quiet(Duration::from_secs(120))
///     .build(chain)?;
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct PacedCooldown {
    chain: ModelChain,
    margin: f64,
    burst: u64,
    quiet: u64,
    max_retry_after: u64,
    epoch: Epoch,
    models: Box<[Pace]>,
}

/// One model's pace. Times are [`Epoch`] stamps.
#[derive(Debug, Default)]
struct Pace {
    /// When the next request may start, plus `burst`: the cell-rate algorithm's theoretical arrival
    /// time. 0 while the model is open.
    due: AtomicU64,
    /// The measured rate, in requests per second, and when it was measured (a throttle: the bucket
    /// was empty).
    rate: RateCell,
    last_throttle: AtomicU64,
    /// Throttles counted so far; an attempt's ticket holds the value at its start. Written under
    /// `measure`.
    throttles: AtomicU64,
    /// Successes so far, counted per thread: one is counted on every success.
    served: PerThreadCounter,
    /// Attempts started while the model was paced.
    admitted: AtomicU64,
    measure: Mutex<Measure>,
}

/// What only throttles (and, when the lock is free, every `MARK_EVERY`th success) read and write.
#[derive(Debug, Default)]
struct Measure {
    /// `served` when the rate was measured.
    served_then: u64,
    /// `admitted` when the rate was measured, and the ticket of attempts admitted after that.
    admitted_then: u64,
    anchor_ticket: u64,
    /// Throttles since the measurement of attempts admitted after it.
    rejected: u64,
    /// `(time, served)` every `MARK_EVERY` successes, in two slots, for the first measurement.
    marks: [(u64, u64); 2],
    /// When the latest fresh throttle of the open model came, and the latest that paced it.
    open_throttle: Option<u64>,
    paced_throttle: Option<u64>,
}

impl Pace {
    fn measure(&self) -> MutexGuard<'_, Measure> {
        self.measure.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

impl PacedCooldown {
    /// Default numbers: pace at 95 % of the measured rate, 2 s of burst, open again after 60 s
    /// without a throttle.
    pub fn new(chain: ModelChain) -> Self {
        PacedCooldown::builder().finish(chain)
    }

    /// Starts a policy with non-default numbers.
    pub fn builder() -> PacedCooldownBuilder {
        PacedCooldownBuilder {
            margin: 0.95,
            burst: Duration::from_secs(2),
            quiet: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }

    /// The pace in requests per second: the measured rate, crept up since it was measured.
    fn rate(&self, pace: &Pace, now: u64) -> f64 {
        let (measured, measured_at) = pace.rate.load();
        let since = seconds(now.saturating_sub(measured_at));
        (measured * (1.0 + RISE_PER_SECOND * since)).max(0.01)
    }

    fn interval(&self, pace: &Pace, now: u64) -> u64 {
        (1e9 / self.rate(pace, now)) as u64
    }

    /// What the model served per second lately: the faster of the windows since the two latest marks
    /// that hold at least `MIN_COUNT` successes. The faster one, because a model that was quiet
    /// until a moment ago shows its capacity only in the most recent window.
    fn recent_rate(measure: &Measure, served: u64, now: u64) -> Option<f64> {
        measure
            .marks
            .iter()
            .copied()
            .filter(|(at, _)| *at != 0)
            .filter_map(|(at, count)| {
                let elapsed = seconds(now.saturating_sub(at));
                let count = served.saturating_sub(count);
                (elapsed > 0.0 && count >= MIN_COUNT).then(|| count as f64 / elapsed)
            })
            .reduce(f64::max)
    }

    /// Requests per second `model` is paced at, or `None` while it is open.
    pub fn pace(&self, model: usize) -> Option<f64> {
        let pace = self.models.get(model)?;
        (pace.due.load(Ordering::Acquire) != 0).then(|| self.rate(pace, self.epoch.now()))
    }
}

impl CooldownPolicy for PacedCooldown {
    fn chain(&self) -> &ModelChain {
        &self.chain
    }

    fn hint(&self, model: usize, _cost: Option<TokenCost>) -> Hint {
        let Some(pace) = self.models.get(model) else {
            return Hint::Available;
        };
        let mut due = pace.due.load(Ordering::Acquire);
        if due == 0 {
            return Hint::Available;
        }
        let now = self.epoch.now();
        loop {
            if now.saturating_add(self.burst) < due {
                let remaining = Duration::from_nanos(due - self.burst - now);
                return Hint::Cooling { remaining };
            }
            // Not holding anything back and quiet for long enough: open again.
            let quiet = now.saturating_sub(pace.last_throttle.load(Ordering::Acquire)) > self.quiet;
            let next = if quiet && due <= now {
                0
            } else {
                due.max(now).saturating_add(self.interval(pace, now))
            };
            match pace
                .due
                .compare_exchange(due, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) | Err(0) => return Hint::Available,
                Err(current) => due = current,
            }
        }
    }

    fn on_attempt(&self, model: usize, _cost: Option<TokenCost>) -> Ticket {
        self.models.get(model).map_or(Ticket::default(), |pace| {
            // The ticket first: a throttle stores `due` before the count, so an attempt that sees
            // the new count also sees the model paced.
            let ticket = Ticket::new(pace.throttles.load(Ordering::Acquire));
            if pace.due.load(Ordering::Acquire) != 0 {
                pace.admitted.fetch_add(1, Ordering::Relaxed);
            }
            ticket
        })
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        let Some(pace) = self.models.get(attempt.model) else {
            return;
        };
        if pace.served.increment() % MARK_EVERY == 0 {
            // Never wait on a success: a mark is an estimate, and skipping one is harmless.
            let mut measure = match pace.measure.try_lock() {
                Ok(measure) => measure,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            // The older mark makes room.
            let slot = usize::from(measure.marks[1].0 < measure.marks[0].0);
            measure.marks[slot] = (self.epoch.now(), pace.served.sum());
        }
    }

    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        self.record_throttle(attempt, throttle.retry_after, true)
    }

    /// While the model is paced, the time until it admits the next request (zero when it would admit
    /// one now); `None` while it is open.
    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        let due = self.models.get(model)?.due.load(Ordering::Acquire);
        (due != 0).then(|| {
            let admits_at = self.epoch.now().saturating_add(self.burst);
            Duration::from_nanos(due.saturating_sub(admits_at))
        })
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        self.cooldown_remaining(model).filter(|d| !d.is_zero())
    }

    fn reset_cooldowns(&self) {
        for pace in self.models.iter() {
            let _measure = pace.measure();
            pace.due.store(0, Ordering::Release);
        }
    }
}

impl PacedCooldown {
    /// Records a throttle of `attempt`, seen here (`local`) or at another replica; a throttle from
    /// elsewhere paces this replica without counting against what its own admissions achieved.
    fn record_throttle(
        &self,
        attempt: &AttemptInfo,
        retry_after: Option<Duration>,
        local: bool,
    ) -> Duration {
        let Some(pace) = self.models.get(attempt.model) else {
            return Duration::ZERO;
        };
        let mut measure = pace.measure();
        let now = self.epoch.now();
        let hinted = retry_after.map_or(0, |d| nanos(d).min(self.max_retry_after));
        let ticket = attempt.ticket.get();
        let paced = pace.due.load(Ordering::Acquire) != 0;
        if local && paced && ticket >= measure.anchor_ticket {
            measure.rejected += 1;
        }
        if pace.throttles.load(Ordering::Acquire) != ticket {
            // A throttle was recorded after this attempt started: this one says nothing new about
            // the pace, but its retry-after hint still holds the model.
            if hinted != 0 {
                let due = now.saturating_add(hinted).saturating_add(self.burst);
                pace.due.fetch_max(due, Ordering::AcqRel);
            }
            return self.cooldown_remaining(attempt.model).unwrap_or_default();
        }
        let next_ticket = ticket.wrapping_add(1);
        // A lone throttle of an open model is as likely the provider's capacity as an empty
        // bucket: pacing the model for it would hold back a model with quota to spare (at light
        // load, at about its demand rate for a minute). Another fresh throttle soon after, or one
        // soon after the model was last paced, is the bucket.
        let within = |at: Option<u64>, span: Duration| {
            at.is_some_and(|at| now.saturating_sub(at) <= nanos(span))
        };
        if !paced {
            let previous = measure.open_throttle.replace(now);
            let lone = !within(previous, SUSPICION) && !within(measure.paced_throttle, MEMORY);
            if lone && hinted == 0 {
                // The model stays open; this throttle is the evidence if another fresh one follows.
                pace.throttles.store(next_ticket, Ordering::Release);
                return Duration::ZERO;
            }
        }
        measure.paced_throttle = Some(now);
        let served = pace.served.sum();
        let admitted = pace.admitted.load(Ordering::Acquire);
        let (_, measured_at) = pace.rate.load();
        let window = now.saturating_sub(measured_at);
        let measured = if !paced || measured_at == 0 {
            // First throttle since open: the recent served rate is the best estimate there is; too
            // few recent successes to trust it, then the mean rate since the last measurement (or
            // the start), at least one a second.
            Some(Self::recent_rate(&measure, served, now).unwrap_or_else(|| {
                let count = served.saturating_sub(measure.served_then);
                (count as f64 / seconds(window).max(1.0)).max(1.0)
            }))
        } else if window >= nanos(MIN_WINDOW) {
            // The served rate is a lower bound of the refill, the pace an upper one when it drained
            // the bucket. Taken alone, the served rate could never exceed the pace that capped it,
            // and each measurement would lower the pace by the margin.
            let count = served.saturating_sub(measure.served_then);
            let served_rate = count as f64 / seconds(window);
            Some(served_rate.max((served_rate + self.rate(pace, now)) / 2.0))
        } else {
            if window > 0 {
                // Too soon to measure, but the quota refilled at most one request more than it
                // accepted since the measurement (admitted and not throttled, answered or not yet).
                let accepted = admitted
                    .saturating_sub(measure.admitted_then)
                    .saturating_sub(measure.rejected);
                // Only a bound well below the pace is news: a pace that limited what was admitted
                // cannot have admitted more than itself, and a token quota refills unevenly in
                // requests.
                let bound = (accepted + 1) as f64 / seconds(window);
                if bound * 2.0 < self.rate(pace, now) {
                    pace.rate
                        .store((bound * self.margin).max(0.01), measured_at);
                }
            }
            None
        };
        if let Some(rate) = measured {
            pace.rate.store((rate * self.margin).max(0.01), now);
            measure.served_then = served;
            measure.admitted_then = admitted;
            measure.anchor_ticket = next_ticket;
            measure.rejected = 0;
        }
        // The bucket is empty now: the next request one interval from now, and no burst yet.
        let hold = self.interval(pace, now).max(hinted);
        let due = now.saturating_add(hold).saturating_add(self.burst);
        pace.due.store(due, Ordering::Release);
        pace.last_throttle.store(now, Ordering::Release);
        pace.throttles.store(next_ticket, Ordering::Release);
        Duration::from_nanos(hold)
    }
}

impl ClusterPolicy for PacedCooldown {
    fn is_new_throttle(&self, attempt: &AttemptInfo) -> bool {
        self.models
            .get(attempt.model)
            .is_some_and(|p| p.throttles.load(Ordering::Acquire) == attempt.ticket.get())
    }

    /// A remote throttle paces the model here as a local one would, at the rate this replica's own
    /// successes were measured at: its share of the quota the replicas draw from together. Pacing
    /// ends by itself after a quiet period, so clearing successes carry nothing; a reset resets.
    fn apply(&self, event: &ClusterEvent, sent_ago: Duration) {
        match event {
            ClusterEvent::Throttled { model, cooldown } => {
                let Some((index, pace)) = self
                    .chain
                    .index_of(model.as_str())
                    .and_then(|i| Some((i, self.models.get(i)?)))
                else {
                    return;
                };
                let ticket = Ticket::new(pace.throttles.load(Ordering::Acquire));
                let attempt = AttemptInfo::new(index, ticket, None);
                let hint = cooldown.saturating_sub(sent_ago);
                self.record_throttle(&attempt, (!hint.is_zero()).then_some(hint), false);
            }
            ClusterEvent::Cleared { .. } => {}
            ClusterEvent::Reset => self.reset_cooldowns(),
        }
    }
}

/// Builds a [`PacedCooldown`] with non-default numbers; see [`PacedCooldown::builder`].
#[derive(Clone, Debug)]
pub struct PacedCooldownBuilder {
    margin: f64,
    burst: Duration,
    quiet: Duration,
    max_retry_after: Duration,
}

impl PacedCooldownBuilder {
    /// The share of the measured rate to pace at (default 0.95): above 0, at most 1. Lower throttles
    /// less and leaves more quota unused.
    pub fn margin(mut self, margin: f64) -> Self {
        self.margin = margin;
        self
    }

    /// How many seconds' worth of the pace may start at once after a lull (default 2 s).
    pub fn burst(mut self, burst: Duration) -> Self {
        self.burst = burst;
        self
    }

    /// How long without a throttle before a model is open again (default 60 s); not zero.
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The longest a retry-after hint may hold a model (default 300 s).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Validates the numbers and builds the policy for `chain`.
    pub fn build(self, chain: ModelChain) -> Result<PacedCooldown, ConfigError> {
        if !(self.margin > 0.0 && self.margin <= 1.0) {
            return Err(ConfigError::InvalidMargin);
        }
        if self.quiet.is_zero() {
            return Err(ConfigError::ZeroQuietPeriod);
        }
        Ok(self.finish(chain))
    }

    fn finish(self, chain: ModelChain) -> PacedCooldown {
        let models = (0..chain.len()).map(|_| Pace::default()).collect();
        PacedCooldown {
            chain,
            margin: self.margin,
            burst: nanos(self.burst),
            quiet: nanos(self.quiet),
            max_retry_after: nanos(self.max_retry_after),
            epoch: Epoch::start(),
            models,
        }
    }
}

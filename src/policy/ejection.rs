use std::sync::PoisonError;
use std::time::Duration;

use super::epoch::{Epoch, nanos};
use super::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::chain::ModelChain;
use crate::classify::{ErrorClass, Throttle};
use crate::error::ConfigError;
use crate::request::TokenCost;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// `until` while the one probe after an ejection is in flight.
const PROBING: u64 = u64::MAX;
/// `until` of an ejection that has run out and waits for its probe (a stamp in the past).
const EXPIRED: u64 = 1;

/// Outlier ejection around any policy: a model whose calls fail with
/// [`Transient`](ErrorClass::Transient) errors (connection failures, timeouts, 5xx) several times in a
/// row is skipped like a cooling one, for a time that grows with each ejection in a row; when it runs
/// out, one request probes the model, and only an answer brings it back for everyone.
///
/// Throttles tell the policy when a model is over its quota, but an unreachable model never
/// throttles: without ejection every request pays a doomed attempt (often a connect timeout) before
/// it falls back. The anchors are Envoy's consecutive-5xx outlier detection and Linkerd's failure
/// accrual: a threshold of consecutive failures, an ejection time that grows (`base_ejection`,
/// doubled per ejection in a row, up to `max_ejection`), one probe to come back.
///
/// Any answer from the model ends an ejection and resets the count: a success, a throttle, or an error
/// that is the request's fault or the model's refusal. Failures of attempts that were running when the
/// model was ejected are not counted again.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::policy::{AdaptiveCooldown, OutlierEjection};
/// use tower_model_fallback::{FallbackLayer, ModelChain};
///
/// let chain = ModelChain::new(["primary", "fallback"])?;
/// let policy = OutlierEjection::builder()
///     .consecutive_failures(5)
///     .base_ejection(Duration::from_secs(10))
///     .max_ejection(Duration::from_secs(300))
///     .wrap(AdaptiveCooldown::new(chain))?;
/// let layer = FallbackLayer::new(policy);
/// # Ok::<(), tower::BoxError>(())
/// ```
///
/// The per-request path reads one atomic per model while nothing is ejected; successes write only
/// when there was a failure to forget.
#[derive(Debug)]
pub struct OutlierEjection<P> {
    inner: P,
    threshold: u64,
    base: Duration,
    max: Duration,
    epoch: Epoch,
    models: Box<[Ejection]>,
}

#[derive(Debug, Default)]
struct Ejection {
    /// Transient failures in a row since the model last answered.
    consecutive: AtomicU64,
    /// 0 while the model is in; the epoch stamp the ejection ends at; [`EXPIRED`] once it has ended
    /// and no probe has been claimed; [`PROBING`] while the probe runs.
    until: AtomicU64,
    /// Ejections in a row, for the growing ejection time; written under `lock`.
    ejections: AtomicU64,
    /// Serialises the writers of `until` other than the probe claim.
    lock: Mutex<()>,
}

impl Ejection {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Configures an [`OutlierEjection`]; see [`OutlierEjection::builder`].
#[derive(Clone, Debug)]
pub struct OutlierEjectionBuilder {
    threshold: u32,
    base: Duration,
    max: Duration,
}

impl OutlierEjectionBuilder {
    /// Transient failures in a row that eject a model (default 5).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.threshold = failures;
        self
    }

    /// How long the first ejection lasts (default 10 s); each ejection in a row doubles it.
    pub fn base_ejection(mut self, ejection: Duration) -> Self {
        self.base = ejection;
        self
    }

    /// The longest ejection (default 300 s).
    pub fn max_ejection(mut self, ejection: Duration) -> Self {
        self.max = ejection;
        self
    }

    /// Ejection around `inner`. The threshold and both times must be non-zero and the maximum at
    /// least the base.
    pub fn wrap<P: CooldownPolicy>(self, inner: P) -> Result<OutlierEjection<P>, ConfigError> {
        if self.threshold == 0 || self.base.is_zero() || self.max < self.base {
            return Err(ConfigError::InvalidEjection);
        }
        Ok(self.finish(inner))
    }

    /// The policy, with numbers already checked.
    fn finish<P: CooldownPolicy>(self, inner: P) -> OutlierEjection<P> {
        let models = (0..inner.chain().len())
            .map(|_| Ejection::default())
            .collect();
        OutlierEjection {
            inner,
            threshold: u64::from(self.threshold),
            base: self.base,
            max: self.max,
            epoch: Epoch::start(),
            models,
        }
    }
}

impl OutlierEjection<()> {
    /// Default numbers: 5 failures in a row eject a model for 10 s, doubling up to 300 s.
    pub fn builder() -> OutlierEjectionBuilder {
        OutlierEjectionBuilder {
            threshold: 5,
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl<P: CooldownPolicy> OutlierEjection<P> {
    /// Ejection with the default numbers around `inner`.
    pub fn new(inner: P) -> Self {
        OutlierEjection::builder().finish(inner)
    }

    /// The wrapped policy.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Time left of `model`'s ejection, or `None` when it is not ejected (or its probe may start).
    fn ejected_for(&self, model: usize) -> Option<Duration> {
        let until = self.models.get(model)?.until.load(Ordering::Acquire);
        match until {
            0 | EXPIRED => None,
            PROBING => Some(self.probe_wait()),
            until => until
                .checked_sub(self.epoch.now())
                .filter(|&left| left > 0)
                .map(Duration::from_nanos),
        }
    }

    /// What a request is told while another request's probe decides: come back soon.
    fn probe_wait(&self) -> Duration {
        self.base.min(Duration::from_secs(1))
    }

    /// The model answered: forget its failures and end any ejection.
    fn answered(&self, model: usize) {
        let Some(state) = self.models.get(model) else {
            return;
        };
        if state.consecutive.load(Ordering::Relaxed) != 0 {
            state.consecutive.store(0, Ordering::Relaxed);
        }
        if state.until.load(Ordering::Acquire) != 0 {
            let _lock = state.lock();
            state.until.store(0, Ordering::Release);
            state.ejections.store(0, Ordering::Relaxed);
            tracing::debug!(model, "ejected model answered; back in");
        }
    }

    /// Ejects `model` for the next ejection time in the row.
    fn eject(&self, model: usize, state: &Ejection) {
        let _lock = state.lock();
        let until = state.until.load(Ordering::Acquire);
        if until != 0 && until != EXPIRED && until != PROBING && until > self.epoch.now() {
            return; // Another failure ejected it meanwhile.
        }
        let row = state.ejections.load(Ordering::Relaxed);
        state
            .ejections
            .store(row.saturating_add(1), Ordering::Relaxed);
        let ejection = self
            .base
            .saturating_mul(1 << row.min(20) as u32)
            .min(self.max);
        state.consecutive.store(0, Ordering::Relaxed);
        state.until.store(
            self.epoch.now().saturating_add(nanos(ejection)).max(2),
            Ordering::Release,
        );
        tracing::debug!(
            model,
            ejection_ms = ejection.as_millis() as u64,
            "model ejected after failures in a row"
        );
    }
}

impl<P: CooldownPolicy> CooldownPolicy for OutlierEjection<P> {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }

    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        let Some(state) = self.models.get(model) else {
            return self.inner.hint(model, cost);
        };
        let until = state.until.load(Ordering::Acquire);
        if until == 0 {
            return self.inner.hint(model, cost);
        }
        if let Some(remaining) = self.ejected_for(model) {
            let inner = self.inner.reopens_in(model).unwrap_or_default();
            return Hint::Cooling {
                remaining: remaining.max(inner),
            };
        }
        // The ejection has run out: one request probes, once the inner policy would let it.
        if let Some(remaining) = self.inner.reopens_in(model) {
            return Hint::Cooling { remaining };
        }
        if state
            .until
            .compare_exchange(until, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Hint::Cooling {
                remaining: self.probe_wait(),
            };
        }
        let hint = self.inner.hint(model, cost);
        if !hint.is_available() {
            // The inner policy started cooling meanwhile: give the probe back.
            let _ =
                state
                    .until
                    .compare_exchange(PROBING, EXPIRED, Ordering::AcqRel, Ordering::Relaxed);
        }
        hint
    }

    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        self.inner.on_success(attempt);
        self.answered(attempt.model);
    }

    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        let cooldown = self.inner.on_throttle(attempt, throttle);
        self.answered(attempt.model);
        cooldown
    }

    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        self.inner.on_failure(attempt, class);
        if class != ErrorClass::Transient {
            self.answered(attempt.model);
            return;
        }
        let Some(state) = self.models.get(attempt.model) else {
            return;
        };
        let until = state.until.load(Ordering::Acquire);
        if until == 0 {
            let failures = state.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= self.threshold {
                self.eject(attempt.model, state);
            }
        } else if self.ejected_for(attempt.model).is_none() || until == PROBING {
            // The probe (or a request that tried the model anyway) failed: eject it for longer.
            self.eject(attempt.model, state);
        }
        // Otherwise an attempt from before the ejection failed late: already counted.
    }

    /// A probe that got no answer proves nothing: the next request may probe.
    fn on_cancelled(&self, attempt: &AttemptInfo) {
        self.inner.on_cancelled(attempt);
        if let Some(state) = self.models.get(attempt.model) {
            let _ =
                state
                    .until
                    .compare_exchange(PROBING, EXPIRED, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        let inner = self.inner.cooldown_remaining(model);
        match (inner, self.ejected_for(model)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        let inner = self.inner.reopens_in(model);
        match (inner, self.ejected_for(model)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn reset_cooldowns(&self) {
        for state in self.models.iter() {
            let _lock = state.lock();
            state.until.store(0, Ordering::Release);
            state.ejections.store(0, Ordering::Relaxed);
            state.consecutive.store(0, Ordering::Relaxed);
        }
        self.inner.reset_cooldowns();
    }
}

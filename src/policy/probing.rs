use std::sync::PoisonError;
use std::time::Duration;

use super::epoch::{Epoch, nanos};
use super::{AdaptiveCooldown, AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::chain::ModelChain;
use crate::classify::{ErrorClass, Throttle};
use crate::error::ConfigError;
use crate::request::TokenCost;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// [`AdaptiveCooldown`], plus single probes: while a model cools, one new request at a time may try
/// it, first `probe_interval` (1 s) after the throttle, then at doubling intervals while probes keep
/// being throttled (up to `max_probe_interval`, 8 s). A successful probe reopens the model for
/// everyone, as any fresh success does.
///
/// Bedrock refills quotas continuously, so a throttled model usually has capacity again within
/// seconds; a blind cooldown leaves that capacity unused and sends the traffic to slower fallbacks.
/// One probe per interval finds it at the cost of at most one throttled attempt per interval, and the
/// doubling keeps that cost small while the quota stays exhausted. The simulator's table
/// (`cargo run --release -p tower-model-fallback-sim`) compares it with the other policies.
///
/// The probe slot is claimed lock-free (one compare-and-swap on the model's next-probe time), and
/// while a model is not cooling the policy costs what `AdaptiveCooldown` costs. Throttles and the
/// successes that end a cooldown update the probe schedule under a short per-model lock, so a
/// success cannot stop the probes of a throttle that landed between its check and its write.
#[derive(Debug)]
pub struct ProbingCooldown {
    inner: AdaptiveCooldown,
    probe_interval: Duration,
    max_probe_interval: Duration,
    epoch: Epoch,
    probes: Box<[Probe]>,
}

#[derive(Debug, Default)]
struct Probe {
    /// When the next probe may start, as an epoch stamp; 0 when not cooling. `hint` claims a probe
    /// by moving it forward; everything else writes it under `schedule`.
    next: AtomicU64,
    /// The current interval between probes, in nanoseconds; written under `schedule`.
    interval: AtomicU64,
    /// Serialises the writers of the schedule (throttles, successes, resets, cancelled probes).
    schedule: Mutex<()>,
}

impl Probe {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProbingCooldown {
    /// Default numbers: the adaptive defaults, probes after 1 s, doubling up to 8 s.
    pub fn new(chain: ModelChain) -> Self {
        ProbingCooldown::wrap(
            AdaptiveCooldown::new(chain),
            Duration::from_secs(1),
            Duration::from_secs(8),
        )
    }

    /// Probes `inner`'s cooling models every `probe_interval` at first, doubling up to
    /// `max_probe_interval`; both must be non-zero and in that order.
    pub fn with_probes(
        inner: AdaptiveCooldown,
        probe_interval: Duration,
        max_probe_interval: Duration,
    ) -> Result<Self, ConfigError> {
        if probe_interval.is_zero() || max_probe_interval < probe_interval {
            return Err(ConfigError::InvalidProbeInterval);
        }
        Ok(ProbingCooldown::wrap(
            inner,
            probe_interval,
            max_probe_interval,
        ))
    }

    fn wrap(
        inner: AdaptiveCooldown,
        probe_interval: Duration,
        max_probe_interval: Duration,
    ) -> Self {
        let probes = (0..inner.chain().len()).map(|_| Probe::default()).collect();
        ProbingCooldown {
            inner,
            probe_interval,
            max_probe_interval,
            epoch: Epoch::start(),
            probes,
        }
    }
}

impl CooldownPolicy for ProbingCooldown {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }

    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        let hint = self.inner.hint(model, cost);
        let (Hint::Cooling { remaining }, Some(probe)) = (hint, self.probes.get(model)) else {
            return hint;
        };
        let next = probe.next.load(Ordering::Acquire);
        if next == 0 {
            return hint;
        }
        let now = self.epoch.now();
        if now < next {
            // The next probe may come before the cooldown would let requests through.
            let probe_in = Duration::from_nanos(next - now);
            return Hint::Cooling {
                remaining: remaining.min(probe_in),
            };
        }
        // Claim the probe: only the request whose swap wins tries the model.
        let after = now.saturating_add(probe.interval.load(Ordering::Acquire));
        match probe
            .next
            .compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Hint::Available,
            Err(_) => hint,
        }
    }

    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        let Some(probe) = self.probes.get(attempt.model) else {
            return;
        };
        if probe.next.load(Ordering::Acquire) == 0 {
            // No probing: nothing of ours to update.
            self.inner.on_success(attempt);
            return;
        }
        let _schedule = probe.lock();
        self.inner.on_success(attempt);
        if self.inner.cooldown_remaining(attempt.model).is_none() {
            probe.next.store(0, Ordering::Release);
        }
    }

    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        let Some(probe) = self.probes.get(attempt.model) else {
            return self.inner.on_throttle(attempt, throttle);
        };
        let _schedule = probe.lock();
        let cooldown = self.inner.on_throttle(attempt, throttle);
        // A throttle while probes were running means the probe (or a straggler) failed: back off.
        let running = probe.next.load(Ordering::Acquire) != 0;
        let interval = if running {
            let doubled = probe.interval.load(Ordering::Acquire).saturating_mul(2);
            doubled.min(nanos(self.max_probe_interval))
        } else {
            nanos(self.probe_interval)
        };
        let wait = interval.max(throttle.retry_after.map_or(0, nanos));
        probe.interval.store(interval, Ordering::Release);
        probe
            .next
            .store(self.epoch.now().saturating_add(wait), Ordering::Release);
        cooldown
    }

    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        self.inner.on_failure(attempt, class);
    }

    /// A probe that got no answer proves nothing: the next request may probe at once. Only an
    /// attempt admitted since the latest throttle can be that probe.
    fn on_cancelled(&self, attempt: &AttemptInfo) {
        let Some(probe) = self.probes.get(attempt.model) else {
            return;
        };
        if probe.next.load(Ordering::Acquire) == 0 {
            return;
        }
        let _schedule = probe.lock();
        let fresh = self.inner.on_attempt(attempt.model, attempt.cost) == attempt.ticket;
        let next = probe.next.load(Ordering::Acquire);
        if fresh && next != 0 {
            probe
                .next
                .store(next.min(self.epoch.now()), Ordering::Release);
        }
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.inner.cooldown_remaining(model)
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        let remaining = self.inner.reopens_in(model)?;
        let next = self.probes.get(model)?.next.load(Ordering::Acquire);
        if next == 0 {
            return Some(remaining);
        }
        let probe_in = Duration::from_nanos(next.saturating_sub(self.epoch.now()));
        (!probe_in.is_zero()).then(|| remaining.min(probe_in))
    }

    fn reset_cooldowns(&self) {
        for probe in self.probes.iter() {
            let _schedule = probe.lock();
            probe.next.store(0, Ordering::Release);
        }
        self.inner.reset_cooldowns();
    }
}

//! Probe leases: after a cooldown, one replica probes the model while the others hold it closed.

use std::time::Duration;

use super::ClusterEvent;
use crate::chain::ModelChain;
use crate::policy::epoch::nanos;
use crate::policy::{CooldownCell, Epoch};
use crate::request::ModelId;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// How long before a model reopens its probe lease is contested: room for a round trip to the store,
/// so the losers hold the model closed before it would reopen.
pub(super) const LEAD: Duration = Duration::from_millis(500);
/// Reopenings closer together than this are the same one (clock reads differ by nanoseconds).
const SAME_REOPENING: u64 = 100_000_000;

/// What a store driver should do about probe leases next; see [`ClusterApplier::next_probe_lease`].
///
/// [`ClusterApplier::next_probe_lease`]: super::ClusterApplier::next_probe_lease
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseDue {
    /// Take the lease on `model` for `lease` if no replica holds it (`SET NX PX`); if another
    /// replica does, report it with [`ClusterApplier::lost_probe_lease`].
    ///
    /// [`ClusterApplier::lost_probe_lease`]: super::ClusterApplier::lost_probe_lease
    Contest {
        /// The model about to reopen.
        model: ModelId,
        /// How long the lease lasts.
        lease: Duration,
    },
    /// Nothing to contest for this long (or until an event changes the cooldowns).
    Wait(Duration),
    /// Nothing to contest until an event changes the cooldowns.
    Idle,
}

/// Per model: whether another replica's probe holds it closed here, whether this replica holds the
/// lease (so its probe's success must reach the others), and which reopening was contested.
#[derive(Debug, Default)]
struct ModelLease {
    held: CooldownCell,
    won: AtomicBool,
    contested: AtomicU64,
}

/// The probe leases of one [`Clustered`](super::Clustered) policy.
#[derive(Debug)]
pub(super) struct ProbeLeases {
    epoch: Epoch,
    /// The lease in nanoseconds; 0 turns leases off.
    lease: AtomicU64,
    models: Box<[ModelLease]>,
}

impl ProbeLeases {
    pub(super) fn new(models: usize) -> Self {
        ProbeLeases {
            epoch: Epoch::start(),
            lease: AtomicU64::new(0),
            models: (0..models).map(|_| ModelLease::default()).collect(),
        }
    }

    pub(super) fn set_lease(&self, lease: Duration) {
        self.lease.store(nanos(lease), Ordering::Relaxed);
    }

    pub(super) fn lease(&self) -> Duration {
        Duration::from_nanos(self.lease.load(Ordering::Relaxed))
    }

    /// How long another replica's probe still holds `model` closed here; one atomic load while none
    /// does.
    pub(super) fn held(&self, model: usize) -> Option<Duration> {
        self.models.get(model)?.held.remaining(&self.epoch)
    }

    /// Holds `model` closed for the lease, at most `cooldown`: another replica probes it.
    pub(super) fn hold(&self, model: usize, cooldown: Duration) {
        if let Some(state) = self.models.get(model) {
            let until = self.epoch.instant() + self.lease().min(cooldown);
            state.held.extend_to(&self.epoch, until);
        }
    }

    /// This replica took the lease on `model`: its requests probe it.
    pub(super) fn win(&self, model: usize) {
        if let Some(state) = self.models.get(model) {
            state.won.store(true, Ordering::Relaxed);
        }
    }

    /// Whether this replica holds the lease on `model`; one atomic load.
    pub(super) fn won(&self, model: usize) -> bool {
        self.models
            .get(model)
            .is_some_and(|state| state.won.load(Ordering::Relaxed))
    }

    /// `model` follows the policy again.
    fn release(&self, model: usize) {
        if let Some(state) = self.models.get(model) {
            state.held.clear();
            state.won.store(false, Ordering::Relaxed);
        }
    }

    /// `event` (a probe's answer, any other throttle or clearing success, a reset) releases the
    /// models it names.
    pub(super) fn answered(&self, chain: &ModelChain, event: &ClusterEvent) {
        match event.model() {
            Some(model) => {
                if let Some(index) = chain.index_of(model.as_str()) {
                    self.release(index);
                }
            }
            None => (0..self.models.len()).for_each(|index| self.release(index)),
        }
    }

    /// The first model whose probe is due for contest, marked contested; else how long until one is.
    /// `probe_in(model)` is when the policy reopens the model after a cooldown.
    pub(super) fn next_due(
        &self,
        probe_in: impl Fn(usize) -> Option<Duration>,
    ) -> Result<usize, Option<Duration>> {
        if self.lease().is_zero() {
            return Err(None);
        }
        let now = self.epoch.now();
        let mut wait: Option<u64> = None;
        for (index, state) in self.models.iter().enumerate() {
            let Some(reopens_in) = probe_in(index) else {
                continue;
            };
            let reopens_at = now.saturating_add(nanos(reopens_in));
            let contested = state.contested.load(Ordering::Relaxed);
            if contested != 0 && reopens_at <= contested.saturating_add(SAME_REOPENING) {
                continue;
            }
            let contest_at = reopens_at.saturating_sub(nanos(LEAD));
            if contest_at <= now {
                state.contested.store(reopens_at, Ordering::Relaxed);
                return Ok(index);
            }
            let until = contest_at - now;
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        Err(wait.map(Duration::from_nanos))
    }
}

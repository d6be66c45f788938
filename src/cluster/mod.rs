//! Throttle state shared by the replicas of a service, because Bedrock's quotas belong to an account,
//! a region and a model, not to a process.
//!
//! [`Clustered`] wraps a policy that knows how to take in other replicas' news ([`ClusterPolicy`]).
//! Requests read only the local policy, as before: nothing on the request path waits for the network.
//! What changes the shared picture is published as a [`ClusterEvent`] through a bounded outbox: a
//! throttle the policy counted, a success that ended a cooldown, a reset. A store driver (with the
//! `redis` feature, [`RedisCluster`](redis::RedisCluster)) carries the outbox to the other replicas
//! and applies theirs here; when the store is unreachable, each replica goes on with its local
//! state, and the driver publishes what it could not (the latest event per model) once the store is
//! back, throttles with what is left of their cooldowns.
//!
//! What is cluster-wide for [`AdaptiveCooldown`](crate::policy::AdaptiveCooldown): the throttle window
//! and tier (four throttles on four replicas within the window are four throttles), the cooldown
//! itself (at least as long as the one the throttled replica set), and its end by a fresh success
//! anywhere. The stale-success guard holds across replicas: a throttle applied from another replica
//! counts as a new throttle here, so a local request that started before it cannot clear it; a
//! remote success does not clear a throttle this replica saw after that success was sent (by wall
//! clocks: keep the replicas' clocks synchronised).
//!
//! For [`PacedCooldown`](crate::policy::PacedCooldown): a throttle anywhere paces the model on every
//! replica, each at the rate its own successes were measured at (its share of the quota). The pace
//! itself is not shared: the simulator (`--replicas-table`, `docs/simulator.md`) shows shared pacing
//! cutting throttles 3-5x on several replicas but giving up some of the primary's share.
//!
//! # Probe leases
//!
//! Optionally ([`Clustered::set_probe_lease`]), the replicas take turns at the probes that follow a
//! cooldown: shortly before a model reopens (for [`AdaptiveCooldown`](crate::policy::AdaptiveCooldown),
//! when new requests would start trying it again before the cooldown's end), every replica's driver
//! contests a lease on it (`SET NX PX` with Redis). The winner's requests probe the model; the
//! others hold it closed until the probe's answer arrives (a clearing success or a new throttle,
//! published as usual), the cooldown ends, or the lease runs out. So one replica probes a reopening
//! model, not N. While the store is unreachable there is no contest and no hold.
//!
//! Leases are off by default because the simulator finds them a loss for the adaptive policy: with
//! events reaching the others within milliseconds, the first probe's throttle already stops the
//! other replicas' probes, so leases save no throttled calls (0.0097 with them, 0.0096 without, per
//! request on the default scenario, 4 replicas, seeds 1-8) but cost the primary's share while the
//! others wait for the probe's answer (80.5% against 82.8%); `docs/simulator.md` has the table and
//! the command.
//! They pay off where a probe is expensive in itself, or where events are slow to arrive.
//!
//! Not shared: [`PacedCooldown`](crate::policy::PacedCooldown)'s pace (it is its own probe
//! control), [`ProbingCooldown`](crate::policy::ProbingCooldown) and
//! [`OutlierEjection`](crate::policy::OutlierEjection) (each replica probes on its own), ejections,
//! and stats.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::chain::ModelChain;
use crate::classify::{ErrorClass, Throttle};
use crate::policy::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::request::{ModelId, TokenCost};

mod lease;
#[cfg(feature = "redis")]
pub mod redis;

pub use lease::LeaseDue;
use lease::ProbeLeases;

/// A change of one replica's throttle state that the others should apply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// `model` was throttled and the throttle counted: a new one, not the same empty quota seen
    /// again. `cooldown` is the cooldown the replica set.
    Throttled {
        /// The throttled model.
        model: ModelId,
        /// The cooldown now running on it at the replica that saw the throttle.
        cooldown: Duration,
    },
    /// A fresh success on `model` ended its cooldown.
    Cleared {
        /// The model back in service.
        model: ModelId,
    },
    /// Every cooldown was reset (`POST /reset_model_cooldowns`, [`CooldownPolicy::reset_cooldowns`]).
    Reset,
}

impl ClusterEvent {
    /// The model the event is about; `None` for a reset, which is about every model.
    pub fn model(&self) -> Option<&ModelId> {
        match self {
            ClusterEvent::Throttled { model, .. } | ClusterEvent::Cleared { model } => Some(model),
            ClusterEvent::Reset => None,
        }
    }
}

/// A policy whose state can be shared: it can tell a throttle it counted from one it did not, and
/// apply what other replicas saw.
pub trait ClusterPolicy: CooldownPolicy {
    /// Whether a throttle of `attempt`, about to be recorded, is new evidence (it will be counted)
    /// rather than the same empty quota seen again by an attempt that started before the last one.
    fn is_new_throttle(&self, attempt: &AttemptInfo) -> bool {
        let _ = attempt;
        true
    }

    /// Applies an event another replica published `sent_ago` (by the wall clocks of both).
    fn apply(&self, event: &ClusterEvent, sent_ago: Duration);

    /// When `model` reopens after a cooldown, if the first requests to it then are probes whose
    /// turn the replicas share (a [probe lease](self#probe-leases)). `None` (the default): the
    /// policy has no such reopening.
    fn probe_in(&self, model: usize) -> Option<Duration> {
        let _ = model;
        None
    }
}

/// How the link to the other replicas is doing.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    connected: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    lag_ms: AtomicU64,
}

/// A copy of [`ClusterStatus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterStatusSnapshot {
    /// Whether the store is reachable and this replica receives the others' events.
    pub connected: bool,
    /// Events published.
    pub sent: u64,
    /// Events applied from other replicas.
    pub received: u64,
    /// Events that were never published: the outbox was full, or an outage outlasted what the
    /// driver keeps for later.
    pub dropped: u64,
    /// How late the last event from another replica arrived, in milliseconds (wall clocks).
    pub lag_ms: u64,
}

impl ClusterStatus {
    /// A copy of the counters.
    pub fn snapshot(&self) -> ClusterStatusSnapshot {
        ClusterStatusSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
        }
    }

    /// Marks the store reachable or not; returns the previous state.
    pub fn set_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed)
    }

    /// An event was published.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An event could not be published.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// An event of another replica was applied, `lag` after it was sent.
    pub fn received(&self, lag: Duration) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.store(ms, Ordering::Relaxed);
    }
}

/// A policy whose throttles, clearing successes and resets are published to the other replicas; see
/// the [module docs](self).
///
/// Built with [`Clustered::new`], which also returns the [`ClusterLink`] a store driver runs.
pub struct Clustered<P> {
    inner: Arc<P>,
    outbox: mpsc::Sender<ClusterEvent>,
    status: Arc<ClusterStatus>,
    leases: Arc<ProbeLeases>,
}

impl<P: fmt::Debug> fmt::Debug for Clustered<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clustered")
            .field("inner", &self.inner)
            .field("status", &self.status.snapshot())
            .finish()
    }
}

/// The store driver's side of a [`Clustered`] policy: the events to publish, and the policy to apply
/// the others' events to.
pub struct ClusterLink<P> {
    outbox: ClusterOutbox,
    applier: ClusterApplier<P>,
}

impl<P> fmt::Debug for ClusterLink<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLink")
            .field("applier", &self.applier)
            .finish_non_exhaustive()
    }
}

impl<P: ClusterPolicy> ClusterLink<P> {
    /// The next event to publish; `None` once the policy is gone.
    pub async fn next_outgoing(&mut self) -> Option<ClusterEvent> {
        self.outbox.next().await
    }

    /// Applies another replica's event, sent `lag` ago.
    pub fn apply(&self, event: &ClusterEvent, lag: Duration) {
        self.applier.apply(event, lag);
    }

    /// The policy's chain.
    pub fn chain(&self) -> &ModelChain {
        self.applier.policy.chain()
    }

    /// The link's status, shared with the policy.
    pub fn status(&self) -> &Arc<ClusterStatus> {
        self.applier.status()
    }

    /// What is left of `model`'s cooldown here, for a driver's catch-up.
    #[cfg(feature = "redis")]
    fn cooldown_here(&self, model: &ModelId) -> Option<Duration> {
        let policy = &self.applier.policy;
        let index = policy.chain().index_of(model.as_str())?;
        policy.cooldown_remaining(index)
    }
}

/// The events a [`Clustered`] policy publishes, taken apart from its [`ClusterLink`] by
/// [`ClusterLink::into_parts`].
#[derive(Debug)]
pub struct ClusterOutbox {
    receiver: mpsc::Receiver<ClusterEvent>,
}

impl ClusterOutbox {
    /// The next event to publish; `None` once the policy is gone.
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        self.receiver.recv().await
    }
}

/// Applies other replicas' events to a [`Clustered`] policy; cheap to clone.
pub struct ClusterApplier<P> {
    policy: Arc<P>,
    status: Arc<ClusterStatus>,
    leases: Arc<ProbeLeases>,
}

impl<P> Clone for ClusterApplier<P> {
    fn clone(&self) -> Self {
        ClusterApplier {
            policy: self.policy.clone(),
            status: self.status.clone(),
            leases: self.leases.clone(),
        }
    }
}

impl<P> fmt::Debug for ClusterApplier<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterApplier")
            .field("status", &self.status.snapshot())
            .finish_non_exhaustive()
    }
}

impl<P: ClusterPolicy> ClusterApplier<P> {
    /// Applies another replica's event, sent `lag` ago.
    pub fn apply(&self, event: &ClusterEvent, lag: Duration) {
        self.policy.apply(event, lag);
        self.leases.answered(self.policy.chain(), event);
        self.status.received(lag);
    }

    /// The link's status, shared with the policy.
    pub fn status(&self) -> &Arc<ClusterStatus> {
        &self.status
    }

    /// The next [probe lease](self#probe-leases) to contest, marked as contested; call again after
    /// each event and when the returned wait is over.
    pub fn next_probe_lease(&self) -> LeaseDue {
        match self.leases.next_due(|model| self.policy.probe_in(model)) {
            Ok(index) => match self.policy.chain().get(index) {
                Some(model) => LeaseDue::Contest {
                    model: model.clone(),
                    lease: self.leases.lease(),
                },
                None => LeaseDue::Idle,
            },
            Err(Some(wait)) => LeaseDue::Wait(wait),
            Err(None) => LeaseDue::Idle,
        }
    }

    /// This replica took the probe lease on `model`: its requests probe the model when it reopens,
    /// and the first fresh success is published as the probe's answer.
    pub fn won_probe_lease(&self, model: &ModelId) {
        if let Some(index) = self.policy.chain().index_of(model.as_str()) {
            self.leases.win(index);
        }
    }

    /// Another replica holds the probe lease on `model`: hold it closed here until that probe's
    /// answer arrives, the cooldown ends or the lease runs out, whichever comes first.
    pub fn lost_probe_lease(&self, model: &ModelId) {
        if let Some(index) = self.policy.chain().index_of(model.as_str())
            && let Some(cooldown) = self.policy.cooldown_remaining(index)
        {
            self.leases.hold(index, cooldown);
        }
    }
}

impl<P> ClusterLink<P> {
    /// The outbox and an applier, for a driver that handles them apart (an in-memory bus, say).
    pub fn into_parts(self) -> (ClusterOutbox, ClusterApplier<P>) {
        (self.outbox, self.applier)
    }
}

/// Events waiting to be published at most; beyond it (the store is slow or gone) they are dropped.
const OUTBOX: usize = 1024;

impl<P: ClusterPolicy> Clustered<P> {
    /// Shares `inner`'s state through the returned link.
    pub fn new(inner: P) -> (Self, ClusterLink<P>) {
        let leases = Arc::new(ProbeLeases::new(inner.chain().len()));
        let inner = Arc::new(inner);
        let status = Arc::new(ClusterStatus::default());
        let (outbox, receiver) = mpsc::channel(OUTBOX);
        let link = ClusterLink {
            outbox: ClusterOutbox { receiver },
            applier: ClusterApplier {
                policy: inner.clone(),
                status: status.clone(),
                leases: leases.clone(),
            },
        };
        (
            Clustered {
                inner,
                outbox,
                status,
                leases,
            },
            link,
        )
    }

    /// Turns [probe leases](self#probe-leases) on: another replica's probe may hold a model closed
    /// here for at most `lease` (and never past the model's cooldown); zero, the default, turns them
    /// off. Long enough for a throttled probe's answer to arrive (5 s is plenty), short enough that
    /// a lease holder with no traffic for the model does not keep it closed for long.
    pub fn set_probe_lease(&self, lease: Duration) {
        self.leases.set_lease(lease);
    }

    /// The wrapped policy.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// How the link to the other replicas is doing.
    pub fn status(&self) -> ClusterStatusSnapshot {
        self.status.snapshot()
    }

    /// Queues `event` without waiting: the request path never blocks on the store.
    fn publish(&self, event: ClusterEvent) {
        self.leases.answered(self.inner.chain(), &event);
        if self.outbox.try_send(event).is_err() {
            self.status.dropped();
        }
    }

    fn id(&self, model: usize) -> Option<ModelId> {
        self.inner.chain().get(model).cloned()
    }
}

impl<P: ClusterPolicy> CooldownPolicy for Clustered<P> {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }

    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        if let Some(remaining) = self.leases.held(model) {
            return Hint::Cooling { remaining };
        }
        self.inner.hint(model, cost)
    }

    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        let model = attempt.model;
        let cooling = self.inner.cooldown_remaining(model).is_some();
        self.inner.on_success(attempt);
        let open = self.inner.cooldown_remaining(model).is_none();
        // A success that ends a cooldown, or the answer of this replica's probe (an attempt that
        // started after the latest throttle, on a model whose cooldown ran out): the others reopen.
        let answer =
            open && (cooling || (self.leases.won(model) && self.inner.is_new_throttle(attempt)));
        if answer && let Some(model) = self.id(model) {
            self.publish(ClusterEvent::Cleared { model });
        }
    }

    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        let new = self.inner.is_new_throttle(attempt);
        let cooldown = self.inner.on_throttle(attempt, throttle);
        if new && let Some(model) = self.id(attempt.model) {
            self.publish(ClusterEvent::Throttled { model, cooldown });
        }
        cooldown
    }

    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        self.inner.on_failure(attempt, class);
    }

    fn on_cancelled(&self, attempt: &AttemptInfo) {
        self.inner.on_cancelled(attempt);
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.inner
            .cooldown_remaining(model)
            .max(self.leases.held(model))
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        self.inner.reopens_in(model).max(self.leases.held(model))
    }

    fn reset_cooldowns(&self) {
        self.inner.reset_cooldowns();
        self.publish(ClusterEvent::Reset);
    }
}

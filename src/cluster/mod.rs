//! Throttle state shared by the replicas of a service, because Bedrock's quotas belong to an account,
//! a region and a model, not to a process.
//!
//! [`Clustered`] wraps a policy that knows how to take in other replicas' news ([`ClusterPolicy`]).
//! Requests read only the local policy, as before: nothing on the request path waits for the network.
//! What changes the shared picture is published as a [`ClusterEvent`] through a bounded outbox: a
//! throttle the policy counted, a success that ended a cooldown, a reset. A store driver (with the
//! `redis` feature, [`RedisCluster`](redis::RedisCluster)) carries the outbox to the other replicas
//! and applies theirs here; when the store is unreachable, events are dropped (counted in
//! [`ClusterStatus`]) and each replica goes on with its local state.
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
//! Not shared: probes (each replica's [`ProbingCooldown`](crate::policy::ProbingCooldown) or
//! [`OutlierEjection`](crate::policy::OutlierEjection) probes on its own), ejections, and stats.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::chain::ModelChain;
use crate::classify::ErrorClass;
use crate::policy::{AttemptInfo, CooldownPolicy, Hint, Ticket};
use crate::request::{ModelId, TokenCost};

#[cfg(feature = "redis")]
pub mod redis;

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
    /// Events that could not be published (store unreachable, outbox full).
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

    /// The policy, for a driver's catch-up.
    #[cfg(feature = "redis")]
    fn policy(&self) -> &P {
        &self.applier.policy
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
}

impl<P> Clone for ClusterApplier<P> {
    fn clone(&self) -> Self {
        ClusterApplier {
            policy: self.policy.clone(),
            status: self.status.clone(),
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
        self.status.received(lag);
    }

    /// The link's status, shared with the policy.
    pub fn status(&self) -> &Arc<ClusterStatus> {
        &self.status
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
        let inner = Arc::new(inner);
        let status = Arc::new(ClusterStatus::default());
        let (outbox, receiver) = mpsc::channel(OUTBOX);
        let link = ClusterLink {
            outbox: ClusterOutbox { receiver },
            applier: ClusterApplier {
                policy: inner.clone(),
                status: status.clone(),
            },
        };
        (
            Clustered {
                inner,
                outbox,
                status,
            },
            link,
        )
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
        self.inner.hint(model, cost)
    }

    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        let cooling = self.inner.cooldown_remaining(attempt.model).is_some();
        self.inner.on_success(attempt);
        if cooling
            && self.inner.cooldown_remaining(attempt.model).is_none()
            && let Some(model) = self.id(attempt.model)
        {
            self.publish(ClusterEvent::Cleared { model });
        }
    }

    fn on_throttle(&self, attempt: &AttemptInfo, retry_after: Option<Duration>) -> Duration {
        let new = self.inner.is_new_throttle(attempt);
        let cooldown = self.inner.on_throttle(attempt, retry_after);
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
        self.inner.cooldown_remaining(model)
    }

    fn reopens_in(&self, model: usize) -> Option<Duration> {
        self.inner.reopens_in(model)
    }

    fn reset_cooldowns(&self) {
        self.inner.reset_cooldowns();
        self.publish(ClusterEvent::Reset);
    }
}

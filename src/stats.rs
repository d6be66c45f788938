//! Counters per model and per layer, and the snapshot that reports them.
//!
//! `layer.stats()` (or `service.stats()`) returns a [`StatsSnapshot`]: per model the id, display
//! name, [`status`](ModelStatus) (what new requests do: `available`; `skipped` while more than the
//! skip threshold of a cooldown is left; `reopening` in its last 2 s, or while a paced model admits
//! requests), `cooldown_remaining_s` (to the end of the cooldown), `reopens_in_s` (until new requests
//! try it again: the same time as `CoolingDown::retry_after`), attempts, successes, throttles,
//! failures, request errors (the request's own fault, kept out of the success rate), cancelled and
//! in-flight attempts and success rate; totals of requests (counted when they
//! start, so `requests = served + failed + cancelled + in_flight` at every instant, including
//! requests between attempts or waiting out a cooldown), served (by the primary and by fallbacks),
//! failed, cancelled, in flight, passes begun after a request's first, and primary-model usage
//! (share of finished requests the primary served). `Serialize` with the `serde` feature.
//!
//! Recording is a few counts per request and attempt (two for a request its first model serves), in
//! counters split per thread: a thread writes its own shard with plain stores, so cores neither
//! fight over cache lines nor lock the bus; nothing is derived or added up until a snapshot is
//! taken. Counters that can be derived (in-flight requests and
//! attempts, served requests) are not stored.
//!
//! Every count that ends something (a success, a failure, a cancellation) is written with `Release`
//! after the count that started it, and a snapshot reads the ends before the starts with `Acquire`,
//! so derived in-flight counts never go negative and `requests = served + failed + cancelled +
//! in_flight` holds in every snapshot.

use crate::sync::AtomicU64;
use crate::sync::Ordering::{self, Acquire, Relaxed, Release};

use crate::classify::QuotaLimit;
use crate::per_thread::{PerThread, bump};
use crate::policy::CooldownPolicy;
use crate::request::ModelId;

/// One model's counters in one shard; a cache line of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ModelCounters {
    /// Requests whose first attempt went to this model at once: one count for the request and the
    /// attempt, so the common request writes two counters, not three.
    opened: AtomicU64,
    /// Attempts not counted in `opened`.
    attempts: AtomicU64,
    successes: AtomicU64,
    throttles: AtomicU64,
    /// Throttles whose message said tokens ran out; also counted in `throttles`.
    token_throttles: AtomicU64,
    failures: AtomicU64,
    request_errors: AtomicU64,
    cancelled: AtomicU64,
}

/// The counters one thread writes: a layer keeps one shard per thread that ever counted, so a
/// count is a plain store to a cache line no other core writes, and a snapshot adds the shards up.
#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    requests: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    later_passes: AtomicU64,
    models: Box<[ModelCounters]>,
}

impl Shard {
    fn new(models: usize) -> Self {
        Shard {
            requests: AtomicU64::default(),
            failed: AtomicU64::default(),
            cancelled: AtomicU64::default(),
            later_passes: AtomicU64::default(),
            models: (0..models).map(|_| ModelCounters::default()).collect(),
        }
    }
}

/// The live counters behind [`StatsSnapshot`].
#[derive(Debug)]
pub(crate) struct Stats {
    models: usize,
    shards: PerThread<Shard>,
}

impl Stats {
    pub(crate) fn new(models: usize) -> Self {
        Stats {
            models,
            shards: PerThread::new(|| Shard::new(models)),
        }
    }

    /// This thread's shard.
    #[inline]
    fn shard(&self) -> &Shard {
        self.shards.local_or(|| Shard::new(self.models))
    }

    /// Counts one on a counter of `model` in this thread's shard: starts with `Relaxed`, ends with
    /// `Release` (see the module docs).
    fn model(&self, model: usize, order: Ordering, f: impl FnOnce(&ModelCounters) -> &AtomicU64) {
        if let Some(counters) = self.shard().models.get(model) {
            bump(f(counters), order);
        }
    }

    /// A request that starts with an attempt on `model` right away.
    pub(crate) fn opened(&self, model: usize) {
        self.model(model, Relaxed, |c| &c.opened);
    }
    /// A request that does not start with an attempt right away (it waits, or fails first).
    pub(crate) fn request(&self) {
        bump(&self.shard().requests, Relaxed);
    }
    pub(crate) fn request_failed(&self) {
        bump(&self.shard().failed, Release);
    }
    pub(crate) fn request_cancelled(&self) {
        bump(&self.shard().cancelled, Release);
    }
    /// A request begins a pass after its first.
    pub(crate) fn later_pass(&self) {
        bump(&self.shard().later_passes, Relaxed);
    }
    pub(crate) fn attempt(&self, model: usize) {
        self.model(model, Relaxed, |c| &c.attempts);
    }
    /// A success also means the request was served by `model`.
    pub(crate) fn success(&self, model: usize) {
        self.model(model, Release, |c| &c.successes);
    }
    /// A throttle, and which quota it said ran out.
    pub(crate) fn throttle(&self, model: usize, limit: Option<QuotaLimit>) {
        if limit == Some(QuotaLimit::Tokens) {
            self.model(model, Relaxed, |c| &c.token_throttles);
        }
        self.model(model, Release, |c| &c.throttles);
    }
    pub(crate) fn failure(&self, model: usize) {
        self.model(model, Release, |c| &c.failures);
    }
    pub(crate) fn request_error(&self, model: usize) {
        self.model(model, Release, |c| &c.request_errors);
    }
    pub(crate) fn attempt_cancelled(&self, model: usize) {
        self.model(model, Release, |c| &c.cancelled);
    }

    /// The sum over shards of one counter of `model`.
    fn sum_model(&self, model: usize, f: impl Fn(&ModelCounters) -> u64) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.models.get(model))
            .map(f)
            .sum()
    }

    /// The sum over shards of one layer counter.
    fn sum(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    pub(crate) fn snapshot(&self, policy: &dyn CooldownPolicy) -> StatsSnapshot {
        let chain = policy.chain();
        let count = self.models;
        let models: Vec<ModelStats> = (0..count)
            .map(|i| {
                // Ends first, in every shard, then starts (see the module docs).
                let successes = self.sum_model(i, |c| c.successes.load(Acquire));
                let throttles = self.sum_model(i, |c| c.throttles.load(Acquire));
                // Counted before its throttle: never more than the throttles read above.
                let token_throttles = self
                    .sum_model(i, |c| c.token_throttles.load(Relaxed))
                    .min(throttles);
                let failures = self.sum_model(i, |c| c.failures.load(Acquire));
                let request_errors = self.sum_model(i, |c| c.request_errors.load(Acquire));
                let cancelled = self.sum_model(i, |c| c.cancelled.load(Acquire));
                let attempts =
                    self.sum_model(i, |c| c.attempts.load(Relaxed) + c.opened.load(Relaxed));
                let answered = successes + throttles + failures;
                let finished = answered + request_errors;
                let cooldown = policy.cooldown_remaining(i);
                let reopens_in = cooldown.and_then(|_| policy.reopens_in(i));
                ModelStats {
                    id: chain.get(i).cloned().unwrap_or_else(|| ModelId::new("")),
                    name: chain.display_name(i).to_owned(),
                    status: match (cooldown, reopens_in) {
                        (None, _) => ModelStatus::Available,
                        (Some(_), Some(_)) => ModelStatus::Skipped,
                        (Some(_), None) => ModelStatus::Reopening,
                    },
                    cooldown_remaining_s: cooldown.map_or(0.0, |d| d.as_secs_f64()),
                    reopens_in_s: reopens_in.map_or(0.0, |d| d.as_secs_f64()),
                    attempts,
                    successes,
                    throttles,
                    token_throttles,
                    failures,
                    request_errors,
                    cancelled,
                    in_flight: attempts.saturating_sub(finished + cancelled),
                    success_rate: ratio(successes, answered),
                }
            })
            .collect();
        let served_by_primary = models.first().map_or(0, |m| m.successes);
        let served: u64 = models.iter().map(|m| m.successes).sum();
        let failed = self.sum(|s| s.failed.load(Acquire));
        let cancelled = self.sum(|s| s.cancelled.load(Acquire));
        let opened: u64 = (0..count)
            .map(|i| self.sum_model(i, |c| c.opened.load(Relaxed)))
            .sum();
        let requests = self.sum(|s| s.requests.load(Relaxed)) + opened;
        StatsSnapshot {
            totals: Totals {
                requests,
                served,
                served_by_primary,
                served_by_fallback: served - served_by_primary,
                failed,
                cancelled,
                in_flight: requests.saturating_sub(served + failed + cancelled),
                later_passes: self.sum(|s| s.later_passes.load(Relaxed)),
                primary_usage: ratio(served_by_primary, served + failed),
            },
            models,
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// What new requests do with a model right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ModelStatus {
    /// No cooldown: new requests try it in chain order.
    Available,
    /// Cooling: new requests skip it while another candidate is available, for
    /// [`reopens_in_s`](ModelStats::reopens_in_s) more seconds.
    Skipped,
    /// A cooldown is still running but new requests try the model again (the adaptive policy's last
    /// 2 s, a paced model that admits requests now); the first fresh success ends it.
    Reopening,
}

/// One model's counters.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ModelStats {
    /// The model id.
    pub id: ModelId,
    /// Its display name (the id when none was given).
    pub name: String,
    /// What new requests do with it.
    pub status: ModelStatus,
    /// Seconds until the cooldown ends (0 when there is none).
    pub cooldown_remaining_s: f64,
    /// Seconds until new requests try the model again (0 when they do now). The same time as
    /// [`CoolingDown::retry_after`](crate::error::CoolingDown::retry_after); shorter than
    /// `cooldown_remaining_s` by the policy's skip threshold.
    pub reopens_in_s: f64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that succeeded; each served a request.
    pub successes: u64,
    /// Attempts that were throttled.
    pub throttles: u64,
    /// Of those, the throttles whose message said the model ran out of tokens; the others ran out
    /// of requests or did not say. Which of the model's quotas to raise.
    pub token_throttles: u64,
    /// Attempts that failed otherwise, for a reason of the model's (errors that are the request's
    /// fault are `request_errors`).
    pub failures: u64,
    /// Attempts that failed because of the request itself (a [`Fatal`](crate::classify::ErrorClass::Fatal)
    /// error such as a `ValidationException`): not the model's fault, so not in `failures` or the
    /// success rate.
    pub request_errors: u64,
    /// Attempts dropped before they finished (their request was cancelled or hit its deadline).
    pub cancelled: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Successes per attempt the model answered or failed (`successes + throttles + failures`), from
    /// 0 to 1; `None` before the first.
    pub success_rate: Option<f64>,
}

/// Counters over all models.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Totals {
    /// Requests received: always `served + failed + cancelled + in_flight`.
    pub requests: u64,
    /// Requests answered by some model.
    pub served: u64,
    /// Requests answered by the primary model.
    pub served_by_primary: u64,
    /// Requests answered by a fallback model.
    pub served_by_fallback: u64,
    /// Requests that ended in an error.
    pub failed: u64,
    /// Requests dropped by the caller before they finished.
    pub cancelled: u64,
    /// Requests running now, including those between attempts or waiting out a cooldown.
    pub in_flight: u64,
    /// Passes through the chain begun after a request's first, each after every candidate had
    /// failed once ([`passes`](crate::FallbackLayerBuilder::passes)).
    pub later_passes: u64,
    /// Share of finished requests (served or failed) that the primary answered, from 0 to 1.
    pub primary_usage: Option<f64>,
}

/// A point-in-time copy of a layer's counters and of its policy's cooldowns.
///
/// Taken without stopping traffic, so counters read while requests run may be a few increments apart.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// One entry per model, in chain order.
    pub models: Vec<ModelStats>,
    /// Layer-wide counters.
    pub totals: Totals,
}

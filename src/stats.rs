//! Counters per model and per layer, and the snapshot that reports them.
//!
//! Recording is a few relaxed atomic increments per attempt; nothing is derived until a snapshot is
//! taken. Counters that can be derived (in-flight attempts, served requests) are not stored.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::policy::CooldownPolicy;
use crate::request::ModelId;

#[derive(Debug, Default)]
struct ModelCounters {
    attempts: AtomicU64,
    successes: AtomicU64,
    throttles: AtomicU64,
    failures: AtomicU64,
    cancelled: AtomicU64,
}

/// The live counters behind [`StatsSnapshot`].
#[derive(Debug)]
pub(crate) struct Stats {
    failed: AtomicU64,
    cancelled: AtomicU64,
    models: Box<[ModelCounters]>,
}

impl Stats {
    pub(crate) fn new(models: usize) -> Self {
        Stats {
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            models: (0..models).map(|_| ModelCounters::default()).collect(),
        }
    }

    fn model(&self, model: usize, f: impl FnOnce(&ModelCounters) -> &AtomicU64) {
        if let Some(counters) = self.models.get(model) {
            f(counters).fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn request_failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    pub(crate) fn request_cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }
    pub(crate) fn attempt(&self, model: usize) {
        self.model(model, |c| &c.attempts);
    }
    /// A success also means the request was served by `model`.
    pub(crate) fn success(&self, model: usize) {
        self.model(model, |c| &c.successes);
    }
    pub(crate) fn throttle(&self, model: usize) {
        self.model(model, |c| &c.throttles);
    }
    pub(crate) fn failure(&self, model: usize) {
        self.model(model, |c| &c.failures);
    }
    pub(crate) fn attempt_cancelled(&self, model: usize) {
        self.model(model, |c| &c.cancelled);
    }

    pub(crate) fn snapshot(&self, policy: &dyn CooldownPolicy) -> StatsSnapshot {
        let chain = policy.chain();
        let models: Vec<ModelStats> = self
            .models
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let attempts = c.attempts.load(Relaxed);
                let successes = c.successes.load(Relaxed);
                let throttles = c.throttles.load(Relaxed);
                let failures = c.failures.load(Relaxed);
                let cancelled = c.cancelled.load(Relaxed);
                let finished = successes + throttles + failures;
                let remaining = policy.cooldown_remaining(i);
                ModelStats {
                    id: chain.get(i).cloned().unwrap_or_else(|| ModelId::new("")),
                    name: chain.display_name(i).to_owned(),
                    status: if remaining.is_some() {
                        ModelStatus::CoolingDown
                    } else {
                        ModelStatus::Available
                    },
                    cooldown_remaining_s: remaining.map_or(0.0, |d| d.as_secs_f64()),
                    attempts,
                    successes,
                    throttles,
                    failures,
                    cancelled,
                    in_flight: attempts.saturating_sub(finished + cancelled),
                    success_rate: ratio(successes, finished),
                }
            })
            .collect();
        let served_by_primary = models.first().map_or(0, |m| m.successes);
        let served: u64 = models.iter().map(|m| m.successes).sum();
        let failed = self.failed.load(Relaxed);
        let cancelled = self.cancelled.load(Relaxed);
        // Requests are not counted as they arrive (one atomic less per call): a request is either
        // finished (served, failed, cancelled) or has an attempt running.
        let in_flight: u64 = models.iter().map(|m| m.in_flight).sum();
        let requests = served + failed + cancelled + in_flight;
        StatsSnapshot {
            totals: Totals {
                requests,
                served,
                served_by_primary,
                served_by_fallback: served - served_by_primary,
                failed,
                cancelled,
                in_flight,
                primary_usage: ratio(served_by_primary, served + failed),
            },
            models,
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Whether a model is in a cooldown right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ModelStatus {
    /// No cooldown.
    Available,
    /// A cooldown is running (new requests may still try the model near its end).
    CoolingDown,
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
    /// Whether it is cooling down.
    pub status: ModelStatus,
    /// Seconds of cooldown left (0 when available).
    pub cooldown_remaining_s: f64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that succeeded; each served a request.
    pub successes: u64,
    /// Attempts that were throttled.
    pub throttles: u64,
    /// Attempts that failed otherwise.
    pub failures: u64,
    /// Attempts dropped before they finished (their request was cancelled or hit its deadline).
    pub cancelled: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Successes per finished attempt, from 0 to 1; `None` before the first finished attempt.
    pub success_rate: Option<f64>,
}

/// Counters over all models.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Totals {
    /// Requests received.
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
    /// Requests running now.
    pub in_flight: u64,
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

//! Cooldown policies: the shared memory of which models were throttled recently.
//!
//! A [`Fallback`](crate::Fallback) asks its policy, for every new request, which models to skip, and
//! tells it the outcome of every attempt. The policy is shared by every clone of the layer and the
//! service, so it sees every user's traffic; its cooldowns are *hints* for new requests and never touch
//! a request that is already running.
//!
//! - [`AdaptiveCooldown`] (the default) scales the cooldown with how often the model was throttled
//!   recently and lets a successful request reopen the model for everyone.
//! - [`ProbingCooldown`] is the adaptive policy plus single probes of a cooling model, so a model
//!   whose quota has refilled is found within about a second instead of after the cooldown.
//! - [`PacedCooldown`] paces a throttled model at the rate its quota was measured to refill, so the
//!   model keeps serving what it can and the rest goes elsewhere at once. The best of the policies
//!   in the simulator.
//! - [`OutlierEjection`] wraps any of them and also skips a model whose calls keep failing (connect
//!   errors, timeouts, 5xx), which a throttle-driven policy would keep trying.
//! - [`FixedCooldown`] blocks a throttled model for a fixed time: the naive design, kept as a baseline
//!   and as a worked example of writing a policy.
//!
//! # Writing a policy
//!
//! Implement [`CooldownPolicy`]. Models are identified by their index in [`chain`](CooldownPolicy::chain),
//! so per-model state can live in a slice of atomics. [`hint`](CooldownPolicy::hint) runs on every
//! request: keep it lock-free, and avoid reading the clock when nothing is cooling. Two small public
//! pieces do that: [`CooldownCell`], a lock-free cooldown deadline that skips the clock while unset,
//! and [`Epoch`], the clock its stamps come from. [`FixedCooldown`]'s source is a complete, small
//! example built from them; the trait's docs say which calls a policy can rely on.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::chain::ModelChain;
use crate::classify::{ErrorClass, Throttle};
use crate::request::TokenCost;

mod adaptive;
mod cell;
mod ejection;
pub(crate) mod epoch;
mod fixed;
mod kind;
mod paced;
mod probing;
mod rate_cell;

pub use adaptive::{AdaptiveCooldown, AdaptiveCooldownBuilder, Tier};
pub use cell::CooldownCell;
pub use ejection::{OutlierEjection, OutlierEjectionBuilder};
pub use epoch::Epoch;
pub use fixed::FixedCooldown;
pub use kind::PolicyKind;
pub use paced::{PacedCooldown, PacedCooldownBuilder};
pub use probing::ProbingCooldown;

/// Whether new requests should try a model now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// Try it.
    Available,
    /// Skip it unless every candidate is cooling.
    Cooling {
        /// Time until the policy would let a new request try the model again (for
        /// [`AdaptiveCooldown`], until its cooldown is within the skip threshold of its end). When
        /// every candidate is cooling, the soonest is tried first, and `Wait` sleeps this long.
        remaining: Duration,
    },
}

impl Hint {
    /// Whether the model should be tried.
    pub fn is_available(&self) -> bool {
        matches!(self, Hint::Available)
    }
}

/// A value the policy hands out when an attempt starts and gets back with its outcome.
///
/// [`AdaptiveCooldown`] stores the model's throttle count in it, so that a success of an attempt that
/// started before the latest throttle is recognised as stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// Wraps a policy-defined value.
    pub const fn new(value: u64) -> Self {
        Ticket(value)
    }

    /// The policy-defined value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// What a policy learns about an attempt when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptInfo {
    /// The model's index in the chain.
    pub model: usize,
    /// What [`CooldownPolicy::on_attempt`] returned when the attempt started.
    pub ticket: Ticket,
    /// The request's token estimate, if it had one.
    pub cost: Option<TokenCost>,
}

impl AttemptInfo {
    /// An attempt on the model at chain index `model` that started with `ticket`.
    pub const fn new(model: usize, ticket: Ticket, cost: Option<TokenCost>) -> Self {
        AttemptInfo {
            model,
            ticket,
            cost,
        }
    }
}

/// The shared state that decides which models new requests skip.
///
/// Implementations are shared behind an `Arc` by every clone of a layer and called concurrently; use
/// atomics for what [`hint`](Self::hint) reads and keep any lock short and never across an `.await`
/// (there is none: every method is synchronous).
///
/// # The calls a policy can rely on
///
/// For each decision (a new request, or a running request that needs its next model) the layer walks
/// the candidates in order and asks [`hint`](Self::hint) once per candidate until one is
/// available; it never asks again for the same decision, even while the inner service is not ready.
/// When it decides to try a model (available, or the soonest of an all-cooling list) it *admits* an
/// attempt with [`on_attempt`](Self::on_attempt), and every admitted attempt then gets **exactly one**
/// of:
///
/// - [`on_success`](Self::on_success): the model answered;
/// - [`on_throttle`](Self::on_throttle): the model throttled;
/// - [`on_failure`](Self::on_failure): the model failed otherwise;
/// - [`on_cancelled`](Self::on_cancelled): the attempt ended with no answer from the model (the caller
///   dropped the request, its deadline passed, or the inner service failed before it was called).
pub trait CooldownPolicy: Any + fmt::Debug + Send + Sync {
    /// The models, in priority order. Every `model` index passed to the other methods points into it.
    fn chain(&self) -> &ModelChain;

    /// Whether a new request should try `model` now. Called for every request: keep it cheap.
    ///
    /// An `Available` answer may hand out capacity ([`PacedCooldown`] admits at a pace,
    /// [`ProbingCooldown`] lets one probe through): the layer asks once per candidate and decision and
    /// tries the first model that is available.
    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint;

    /// An attempt on `model` is admitted: it starts as soon as the inner service is ready.
    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        let _ = (model, cost);
        Ticket::default()
    }

    /// The attempt succeeded.
    fn on_success(&self, attempt: &AttemptInfo);

    /// The attempt was throttled; `throttle` holds what the service said (a retry-after hint, the
    /// quota that ran out). Returns the cooldown now in force on the model (zero if none), for
    /// traces and stats.
    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration;

    /// The attempt failed for a reason other than a throttle.
    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        let _ = (attempt, class);
    }

    /// The attempt ended without an answer from the model. A policy that hands out counted capacity
    /// in [`hint`](Self::hint) can give it back here.
    fn on_cancelled(&self, attempt: &AttemptInfo) {
        let _ = attempt;
    }

    /// Time until `model`'s cooldown ends, or `None` if it is not cooling. For stats: unlike
    /// [`hint`](Self::hint) it ignores any skip threshold.
    fn cooldown_remaining(&self, model: usize) -> Option<Duration>;

    /// Time until new requests try `model` again, or `None` if they would try it now: what
    /// [`hint`](Self::hint) would answer, without handing anything out. For stats. The default is
    /// the whole [`cooldown_remaining`](Self::cooldown_remaining), right for a policy with no skip
    /// threshold.
    fn reopens_in(&self, model: usize) -> Option<Duration> {
        self.cooldown_remaining(model)
    }

    /// Forgets every cooldown and throttle history, putting all models back in chain order.
    fn reset_cooldowns(&self);
}

/// A policy chosen at run time (such as [`PolicyKind::with_defaults`]'s)
/// can be wrapped too.
impl CooldownPolicy for Arc<dyn CooldownPolicy> {
    fn chain(&self) -> &ModelChain {
        (**self).chain()
    }
    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        (**self).hint(model, cost)
    }
    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        (**self).on_attempt(model, cost)
    }
    fn on_success(&self, attempt: &AttemptInfo) {
        (**self).on_success(attempt)
    }
    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        (**self).on_throttle(attempt, throttle)
    }
    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        (**self).on_failure(attempt, class)
    }
    fn on_cancelled(&self, attempt: &AttemptInfo) {
        (**self).on_cancelled(attempt)
    }
    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        (**self).cooldown_remaining(model)
    }
    fn reopens_in(&self, model: usize) -> Option<Duration> {
        (**self).reopens_in(model)
    }
    fn reset_cooldowns(&self) {
        (**self).reset_cooldowns()
    }
}

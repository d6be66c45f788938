//! Errors returned by this crate.
//!
//! [`Fallback`](crate::Fallback) returns [`tower::BoxError`]; check for these types with
//! `err.is::<T>()` or `err.downcast_ref::<T>()`, as with tower's own middleware.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use tower::BoxError;

use crate::classify::ErrorClass;
use crate::request::ModelId;

/// A configuration that cannot work, rejected when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A chain needs at least one model.
    EmptyChain,
    /// A chain holds more models than [`MAX_MODELS`](crate::chain::MAX_MODELS).
    TooManyModels {
        /// Models given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A model id is the empty string.
    EmptyModelId,
    /// A model appears twice in a chain.
    DuplicateModel(ModelId),
    /// The throttle-counting window is zero.
    ZeroWindow,
    /// No cooldown tiers were given.
    NoTiers,
    /// A tier has a zero cooldown or starts at zero throttles.
    ZeroTier,
    /// Tier thresholds must strictly increase and cooldowns must not shrink as throttles grow.
    TiersNotIncreasing,
    /// The skip threshold is at least the shortest cooldown, so a cooled model would never be skipped.
    SkipThresholdTooLarge {
        /// The configured threshold.
        threshold: Duration,
        /// The shortest tier's cooldown.
        shortest: Duration,
    },
    /// A cooldown duration is zero.
    ZeroCooldown,
    /// `max_attempts` is zero.
    ZeroMaxAttempts,
    /// `passes` is zero.
    ZeroPasses,
    /// `pass_backoff` is longer than an hour.
    PassBackoffTooLong,
    /// A probe interval is zero, or the maximum is below the first interval.
    InvalidProbeInterval,
    /// A pacing margin is not above 0 and at most 1.
    InvalidMargin,
    /// A quiet period is zero.
    ZeroQuietPeriod,
    /// An outlier ejection needs a non-zero failure threshold and ejection time, and a maximum
    /// ejection at least the base.
    InvalidEjection,
    /// A retry budget's window is outside 1-60 s or its percentage outside 0-10 (0-1000%).
    InvalidRetryBudget,
    /// A policy name that is not one of [`PolicyKind`](crate::policy::PolicyKind)'s.
    UnknownPolicyKind(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::EmptyChain => f.write_str("model chain is empty"),
            ConfigError::TooManyModels { count, max } => {
                write!(f, "model chain has {count} models; at most {max} are supported")
            }
            ConfigError::EmptyModelId => f.write_str("model id is empty"),
            ConfigError::DuplicateModel(id) => write!(f, "model {id} appears twice in the chain"),
            ConfigError::ZeroWindow => f.write_str("throttle window must be longer than zero"),
            ConfigError::NoTiers => f.write_str("at least one cooldown tier is required"),
            ConfigError::ZeroTier => {
                f.write_str("cooldown tiers need at least one throttle and a non-zero cooldown")
            }
            ConfigError::TiersNotIncreasing => f.write_str(
                "cooldown tiers must have strictly increasing throttle counts and non-shrinking cooldowns",
            ),
            ConfigError::SkipThresholdTooLarge {
                threshold,
                shortest,
            } => write!(
                f,
                "skip threshold {threshold:?} must be shorter than the shortest cooldown {shortest:?}"
            ),
            ConfigError::ZeroCooldown => f.write_str("cooldown must be longer than zero"),
            ConfigError::ZeroMaxAttempts => f.write_str("max_attempts must be at least 1"),
            ConfigError::ZeroPasses => f.write_str("passes must be at least 1"),
            ConfigError::PassBackoffTooLong => f.write_str("pass_backoff must be at most an hour"),
            ConfigError::InvalidProbeInterval => f.write_str(
                "probe interval must be longer than zero and not longer than the maximum probe interval",
            ),
            ConfigError::InvalidMargin => f.write_str("pacing margin must be above 0 and at most 1"),
            ConfigError::ZeroQuietPeriod => f.write_str("quiet period must be longer than zero"),
            ConfigError::InvalidRetryBudget => f.write_str(
                "a retry budget needs a window of 1 to 60 s and a share from 0 to 10 (1000%)",
            ),
            ConfigError::InvalidEjection => f.write_str(
                "outlier ejection needs at least one failure, a non-zero ejection time and a maximum at least that long",
            ),
            ConfigError::UnknownPolicyKind(name) => write!(
                f,
                "policy kind must be fixed, adaptive, probing or paced, not {name:?}"
            ),
        }
    }
}

impl Error for ConfigError {}

/// One attempt that did not produce a response.
#[derive(Debug)]
pub struct FailedAttempt {
    model: ModelId,
    class: ErrorClass,
    cooldown: Option<Duration>,
    error: BoxError,
}

impl FailedAttempt {
    pub(crate) fn new(
        model: ModelId,
        class: ErrorClass,
        cooldown: Option<Duration>,
        error: BoxError,
    ) -> Self {
        FailedAttempt {
            model,
            class,
            cooldown,
            error,
        }
    }

    /// The model that was called.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// How the error was classified.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The cooldown this attempt recorded on the model, for throttles.
    pub fn cooldown(&self) -> Option<Duration> {
        self.cooldown
    }

    /// The inner service's error.
    pub fn error(&self) -> &BoxError {
        &self.error
    }

    /// Takes the inner service's error.
    pub fn into_error(self) -> BoxError {
        self.error
    }
}

impl fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.model, self.class, self.error)?;
        // SDK errors say little at the top ("service error"); their sources carry the code and message.
        let mut shown = self.error.to_string();
        let mut source = self.error.source();
        while let Some(err) = source {
            let text = err.to_string();
            if text != shown {
                write!(f, ": {text}")?;
                shown = text;
            }
            source = err.source();
        }
        Ok(())
    }
}

/// The last attempt's inner error, as an error's source.
fn last_error(attempts: &[FailedAttempt]) -> Option<&(dyn Error + 'static)> {
    attempts.last().map(|a| &*a.error as &(dyn Error + 'static))
}

fn write_attempts(f: &mut fmt::Formatter<'_>, attempts: &[FailedAttempt]) -> fmt::Result {
    for (i, attempt) in attempts.iter().enumerate() {
        f.write_str(if i == 0 { ": " } else { "; " })?;
        fmt::Display::fmt(attempt, f)?;
    }
    Ok(())
}

/// Every model tried failed, or one failed in a way another model would not fix.
///
/// [`attempts`](Self::attempts) lists every attempt in order. The last inner error is the
/// [`source`](Error::source), and can be taken back with [`into_last_error`](Self::into_last_error) and
/// downcast to the inner service's error type.
#[derive(Debug)]
pub struct FallbackError {
    attempts: Vec<FailedAttempt>,
}

impl FallbackError {
    pub(crate) fn new(attempts: Vec<FailedAttempt>) -> Self {
        debug_assert!(!attempts.is_empty());
        FallbackError { attempts }
    }

    /// Every attempt, in the order made.
    pub fn attempts(&self) -> &[FailedAttempt] {
        &self.attempts
    }

    /// The last attempt.
    pub fn last(&self) -> Option<&FailedAttempt> {
        self.attempts.last()
    }

    /// The last inner error.
    pub fn last_error(&self) -> Option<&BoxError> {
        self.attempts.last().map(FailedAttempt::error)
    }

    /// Takes the last inner error.
    pub fn into_last_error(mut self) -> Option<BoxError> {
        self.attempts.pop().map(FailedAttempt::into_error)
    }

    /// Takes every attempt.
    pub fn into_attempts(self) -> Vec<FailedAttempt> {
        self.attempts
    }
}

impl fmt::Display for FallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} model attempts failed", self.attempts.len())?;
        if self.last().is_some_and(|a| a.class == ErrorClass::Fatal) {
            f.write_str(" (last error is not worth another model)")?;
        }
        write_attempts(f, &self.attempts)
    }
}

impl Error for FallbackError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.last_error().map(|e| &**e as &(dyn Error + 'static))
    }
}

/// Every untried candidate model is cooling down and the layer was told to fail fast (or to wait,
/// and the request's deadline comes first).
///
/// A request that had already tried some models lists them in [`attempts`](Self::attempts).
#[derive(Debug)]
pub struct CoolingDown {
    retry_after: Duration,
    attempts: Vec<FailedAttempt>,
}

impl CoolingDown {
    pub(crate) fn new(retry_after: Duration, attempts: Vec<FailedAttempt>) -> Self {
        CoolingDown {
            retry_after,
            attempts,
        }
    }

    /// How long until the policy lets new requests try one of the candidates again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The attempts this request made before every remaining candidate was cooling.
    pub fn attempts(&self) -> &[FailedAttempt] {
        &self.attempts
    }
}

impl fmt::Display for CoolingDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "every candidate model is cooling down; retry after {:.1} s",
            self.retry_after.as_secs_f64()
        )?;
        write_attempts(f, &self.attempts)
    }
}

impl Error for CoolingDown {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        last_error(&self.attempts)
    }
}

/// The request's deadline passed before a model answered.
#[derive(Debug)]
pub struct DeadlineExceeded {
    attempts: Vec<FailedAttempt>,
}

impl DeadlineExceeded {
    pub(crate) fn new(attempts: Vec<FailedAttempt>) -> Self {
        DeadlineExceeded { attempts }
    }

    /// The attempts that failed before the deadline (an attempt cut off by it is not listed).
    pub fn attempts(&self) -> &[FailedAttempt] {
        &self.attempts
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request deadline passed after {} failed attempts",
            self.attempts.len()
        )?;
        write_attempts(f, &self.attempts)
    }
}

impl Error for DeadlineExceeded {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        last_error(&self.attempts)
    }
}

/// The layer's retry budget had no room for another fallback attempt, so the request ended after
/// the attempts it lists. The budget (see
/// [`FallbackLayerBuilder::retry_budget`](crate::FallbackLayerBuilder::retry_budget)) runs out when
/// many requests need fallbacks at once, typically because every model is failing: it keeps the layer
/// from multiplying the load on them.
#[derive(Debug)]
pub struct RetryBudgetExhausted {
    attempts: Vec<FailedAttempt>,
}

impl RetryBudgetExhausted {
    pub(crate) fn new(attempts: Vec<FailedAttempt>) -> Self {
        RetryBudgetExhausted { attempts }
    }

    /// The attempts this request made before the budget refused the next one.
    pub fn attempts(&self) -> &[FailedAttempt] {
        &self.attempts
    }
}

impl fmt::Display for RetryBudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry budget exhausted after {} failed attempts",
            self.attempts.len()
        )?;
        write_attempts(f, &self.attempts)
    }
}

impl Error for RetryBudgetExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        last_error(&self.attempts)
    }
}

/// A request named a model that the layer's chain (or a router) does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModel {
    model: Option<ModelId>,
}

impl UnknownModel {
    pub(crate) fn new(model: Option<ModelId>) -> Self {
        UnknownModel { model }
    }

    /// The unknown model, or `None` when the request named no model at all.
    pub fn model(&self) -> Option<&ModelId> {
        self.model.as_ref()
    }
}

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(model) => write!(f, "model {model} is not configured"),
            None => f.write_str("request names no model"),
        }
    }
}

impl Error for UnknownModel {}

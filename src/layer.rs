use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;
use tower_layer::Layer;

use crate::chain::ModelChain;
use crate::classify::{Classify, DefaultClassifier, OkIsSuccess};
use crate::error::ConfigError;
use crate::policy::CooldownPolicy;
use crate::service::Fallback;
use crate::stats::{Stats, StatsSnapshot};

/// What a request does when every candidate model it has not tried yet is cooling: when it arrives,
/// or after a failed attempt when the models left started cooling meanwhile.
///
/// A running request skips a model that started cooling after it began only while another untried
/// candidate is available; otherwise it applies this mode exactly as a new request would, so it never
/// fails while a model it has not tried could answer. A request ends with untried models only for a
/// fatal error, its attempt cap, its deadline, or `FailFast`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenAllCooling {
    /// Try the cooling models anyway, the one the policy would try again soonest first. Cooldowns are
    /// hints.
    #[default]
    TryAnyway,
    /// Fail at once with [`CoolingDown`](crate::error::CoolingDown), which says when to come back and
    /// lists the attempts already made.
    FailFast,
    /// Sleep until the policy would try the soonest model again, then try. The inner service's
    /// readiness is given back before sleeping (a `ConcurrencyLimit` permit is not held idle) and
    /// polled again after. If the request's deadline comes no later than the reopening, fail at once
    /// with [`CoolingDown`](crate::error::CoolingDown) instead of sleeping in vain. The sleep is
    /// tokio's, so calls must be made inside a tokio runtime with the time driver enabled.
    Wait,
}

/// The longest wait before a second pass unless set.
const DEFAULT_PASS_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff accepted: a request waiting longer has no caller left.
const MAX_PASS_BACKOFF: Duration = Duration::from_secs(3600);

/// What every clone of a layer and of its services shares.
pub(crate) struct Shared<C> {
    pub(crate) policy: Arc<dyn CooldownPolicy>,
    /// The policy's chain, kept here so the per-call path reads it without a virtual call.
    pub(crate) chain: ModelChain,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) response_classifier: C,
    pub(crate) stats: Stats,
    pub(crate) when_all_cooling: WhenAllCooling,
    pub(crate) max_attempts: u32,
    pub(crate) passes: u32,
    pub(crate) pass_backoff: Duration,
    pub(crate) retry_budget: Option<Arc<dyn Budget + Send + Sync>>,
}

impl<C> Shared<C> {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(&*self.policy)
    }

    pub(crate) fn downcast_policy<P: CooldownPolicy>(&self) -> Option<&P> {
        let policy: &dyn Any = &*self.policy;
        policy.downcast_ref()
    }
}

impl<C> fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .field("when_all_cooling", &self.when_all_cooling)
            .field("max_attempts", &self.max_attempts)
            .field("passes", &self.passes)
            .finish_non_exhaustive()
    }
}

/// Wraps a model service in [`Fallback`].
///
/// Every service the layer makes shares one policy and one set of stats, so a throttle seen by one
/// user's request steers every other user's *next* request, and stats cover all of them. `C` decides
/// which `Ok` responses are failed attempts ([`OkIsSuccess`] unless set with
/// [`classify_responses`](FallbackLayerBuilder::classify_responses)).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_model_fallback::{FallbackLayer, ModelChain, WhenAllCooling, policy::AdaptiveCooldown};
///
/// let chain = ModelChain::new(["sonnet", "haiku"])?;
/// let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
///     .when_all_cooling(WhenAllCooling::FailFast)
///     .build()?;
/// let service = ServiceBuilder::new()
///     .layer(layer.clone())
///     .service(tower::service_fn(|req: tower_model_fallback::ModelRequest<String>| async move {
///         Ok::<_, std::convert::Infallible>(format!("{} says hi", req.model().unwrap()))
///     }));
/// # let _ = service;
/// assert_eq!(layer.stats().totals.requests, 0);
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct FallbackLayer<C = OkIsSuccess> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for FallbackLayer<C> {
    fn clone(&self) -> Self {
        FallbackLayer {
            shared: self.shared.clone(),
        }
    }
}

impl FallbackLayer {
    /// A layer with `policy`, the [`DefaultClassifier`] and [`WhenAllCooling::TryAnyway`].
    pub fn new(policy: impl CooldownPolicy) -> Self {
        FallbackLayer::builder(policy).finish()
    }

    /// Starts a layer with more options.
    pub fn builder(policy: impl CooldownPolicy) -> FallbackLayerBuilder {
        FallbackLayerBuilder::shared(Arc::new(policy))
    }

    /// Starts a layer over a policy that something else holds too (another layer, an admin endpoint).
    pub fn builder_shared(policy: Arc<dyn CooldownPolicy>) -> FallbackLayerBuilder {
        FallbackLayerBuilder::shared(policy)
    }
}

impl<C> FallbackLayer<C> {
    /// The policy.
    pub fn policy(&self) -> &Arc<dyn CooldownPolicy> {
        &self.shared.policy
    }

    /// The policy as the type it was built with, or `None` if it is another type.
    ///
    /// ```
    /// use tower_model_fallback::{FallbackLayer, ModelChain, policy::PacedCooldown};
    ///
    /// let layer = FallbackLayer::new(PacedCooldown::new(ModelChain::new(["sonnet", "haiku"])?));
    /// let paced = layer.downcast_policy::<PacedCooldown>().expect("built with PacedCooldown");
    /// assert_eq!(paced.pace(0), None, "nothing throttled yet");
    /// # Ok::<(), tower_model_fallback::error::ConfigError>(())
    /// ```
    pub fn downcast_policy<P: CooldownPolicy>(&self) -> Option<&P> {
        self.shared.downcast_policy()
    }

    /// Counters and cooldowns of every model, as of now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.snapshot()
    }

    /// Ends every cooldown: all models go back to chain order for new requests.
    pub fn reset_cooldowns(&self) {
        self.shared.policy.reset_cooldowns();
    }
}

impl<S, C> Layer<S> for FallbackLayer<C> {
    type Service = Fallback<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_shared(inner, self.shared.clone())
    }
}

/// Configures a [`FallbackLayer`]; see [`FallbackLayer::builder`].
pub struct FallbackLayerBuilder<C = OkIsSuccess> {
    policy: Arc<dyn CooldownPolicy>,
    classifier: Arc<dyn Classify>,
    response_classifier: C,
    when_all_cooling: WhenAllCooling,
    max_attempts: u32,
    passes: u32,
    pass_backoff: Duration,
    retry_budget: Option<Arc<dyn Budget + Send + Sync>>,
}

impl<C> fmt::Debug for FallbackLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayerBuilder")
            .field("policy", &self.policy)
            .field("when_all_cooling", &self.when_all_cooling)
            .field("max_attempts", &self.max_attempts)
            .field("passes", &self.passes)
            .field("pass_backoff", &self.pass_backoff)
            .field("retry_budget", &self.retry_budget.is_some())
            .finish_non_exhaustive()
    }
}

impl FallbackLayerBuilder {
    fn shared(policy: Arc<dyn CooldownPolicy>) -> Self {
        FallbackLayerBuilder {
            policy,
            classifier: Arc::new(DefaultClassifier::new()),
            response_classifier: OkIsSuccess,
            when_all_cooling: WhenAllCooling::default(),
            max_attempts: u32::MAX,
            passes: 1,
            pass_backoff: DEFAULT_PASS_BACKOFF,
            retry_budget: None,
        }
    }
}

impl<C> FallbackLayerBuilder<C> {
    /// Looks at every `Ok` response with `classifier` first: a response it turns into an error is a
    /// failed attempt, classified and acted on like an error (a 429 cools the model and the request
    /// moves on). For services that report failures as responses, such as HTTP clients; see
    /// [`HttpStatus`](crate::classify::HttpStatus).
    pub fn classify_responses<D>(self, classifier: D) -> FallbackLayerBuilder<D> {
        FallbackLayerBuilder {
            policy: self.policy,
            classifier: self.classifier,
            response_classifier: classifier,
            when_all_cooling: self.when_all_cooling,
            max_attempts: self.max_attempts,
            passes: self.passes,
            pass_backoff: self.pass_backoff,
            retry_budget: self.retry_budget,
        }
    }

    /// Replaces the [`DefaultClassifier`].
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// What to do when every candidate is cooling (default [`WhenAllCooling::TryAnyway`]).
    pub fn when_all_cooling(mut self, mode: WhenAllCooling) -> Self {
        self.when_all_cooling = mode;
        self
    }

    /// At most this many attempts per request, over all its [passes](Self::passes) (default: no
    /// cap but the chain's length times the passes). Requests can lower it with
    /// [`ModelRequest::with_max_attempts`](crate::ModelRequest::with_max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// At most this many passes through a request's candidates (default 1: each model once).
    ///
    /// A pass ends when every candidate has failed once. With passes left, the request then waits
    /// and walks its candidates again: a model that throttled a moment ago may answer now, and a
    /// request answered late beats one that failed while capacity was coming back. The wait is
    /// between half and all of the [`pass_backoff`](Self::pass_backoff) (doubled for each further
    /// pass), spread by a hash of the request id so that requests that failed together do not come
    /// back together. It does not end early when the policy reopens a model: every waiting request
    /// would come back for the same admission. The inner service's readiness is given back while
    /// waiting. A later pass skips the models that rejected the request
    /// ([`ModelRejected`](crate::classify::ErrorClass::ModelRejected): access denied, model not
    /// found, the model failing on this request), and none starts when all of them did. A fatal error, the attempt cap or the deadline
    /// still end the request; a pass that could not start before the deadline is not waited for. Every attempt after the first is a
    /// fallback, so a [`retry_budget`](Self::retry_budget) bounds the extra load of later passes
    /// when every model is failing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_model_fallback::{FallbackBudget, FallbackLayer, ModelChain, policy::PacedCooldown};
    ///
    /// let chain = ModelChain::new(["primary", "fallback"])?;
    /// // Up to four attempts per request: each model, then each again 250-500 ms later.
    /// let layer = FallbackLayer::builder(PacedCooldown::new(chain))
    ///     .passes(2)
    ///     .pass_backoff(Duration::from_millis(500))
    ///     .retry_budget(FallbackBudget::new(Duration::from_secs(10), 10, 0.2)?)
    ///     .build()?;
    /// # Ok::<(), tower::BoxError>(())
    /// ```
    pub fn passes(mut self, passes: u32) -> Self {
        self.passes = passes;
        self
    }

    /// The longest wait before a request's second pass (default 1 s, the AWS SDKs' base backoff; at
    /// most an hour); see [`passes`](Self::passes).
    pub fn pass_backoff(mut self, backoff: Duration) -> Self {
        self.pass_backoff = backoff;
        self
    }

    /// Limits fallback attempts across all requests of the layer with a retry `budget` (off by
    /// default): every request deposits into it, and every attempt after a request's first
    /// withdraws from it. A request the budget refuses ends with
    /// [`RetryBudgetExhausted`](crate::error::RetryBudgetExhausted).
    ///
    /// Fallbacks are cheap while one model throttles, but when every model fails (an outage, a
    /// network partition) each request would try them all, multiplying the load by the chain's
    /// length. [`FallbackBudget`](crate::FallbackBudget) allows a share of recent requests plus a
    /// floor per second, lock-free; tower's [`TpsBudget`](tower::retry::budget::TpsBudget) does the
    /// same behind a mutex:
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_model_fallback::{FallbackBudget, FallbackLayer, ModelChain, policy::AdaptiveCooldown};
    ///
    /// let chain = ModelChain::new(["primary", "fallback"])?;
    /// // Fallbacks up to 20% of the last 10 s of requests, plus 10 per second.
    /// let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
    ///     .retry_budget(FallbackBudget::new(Duration::from_secs(10), 10, 0.2)?)
    ///     .build()?;
    /// # Ok::<(), tower::BoxError>(())
    /// ```
    ///
    /// Depositing writes a counter shared by every request, so a budget costs a little on the happy
    /// path too.
    pub fn retry_budget(mut self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.retry_budget = Some(Arc::new(budget));
        self
    }

    /// Validates the options and builds the layer.
    pub fn build(self) -> Result<FallbackLayer<C>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroMaxAttempts);
        }
        if self.passes == 0 {
            return Err(ConfigError::ZeroPasses);
        }
        if self.pass_backoff > MAX_PASS_BACKOFF {
            return Err(ConfigError::PassBackoffTooLong);
        }
        Ok(self.finish())
    }

    fn finish(self) -> FallbackLayer<C> {
        let chain = self.policy.chain().clone();
        FallbackLayer {
            shared: Arc::new(Shared {
                stats: Stats::new(chain.len()),
                chain,
                policy: self.policy,
                classifier: self.classifier,
                response_classifier: self.response_classifier,
                when_all_cooling: self.when_all_cooling,
                max_attempts: self.max_attempts.max(1),
                passes: self.passes.max(1),
                pass_backoff: self.pass_backoff,
                retry_budget: self.retry_budget,
            }),
        }
    }
}

//! Tower middleware that keeps LLM traffic flowing when AWS Bedrock throttles.
//!
//! [`FallbackLayer`] wraps any `Service<ModelRequest<B>>`. Every call gets a fresh, ordered list of
//! candidate models from a shared [`CooldownPolicy`](policy::CooldownPolicy); when a model throttles,
//! the policy records an adaptive cooldown on it and the same call moves on to the next model at once.
//! Cooldowns are hints for *new* requests, never blocks on running ones, so one user's throttle does
//! not break anyone else's work:
//!
//! - users 1-3 are served by the primary model A;
//! - user 4 is throttled on A and served by B in the same call; A cools down for 10 s;
//! - while more than 2 s of that cooldown remain, new requests of users 1-3 start at B and succeed;
//!   requests already running on A finish undisturbed;
//! - in the last 2 s new requests try A again, and the first success there puts everyone back on A.
//!
//! That is [`AdaptiveCooldown`](policy::AdaptiveCooldown), the default. When demand stays above a
//! model's quota, [`PacedCooldown`](policy::PacedCooldown) does better: it keeps sending the model
//! the rate its quota was measured to refill and the rest elsewhere; the [`policy`] module compares
//! them.
//!
//! ```
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_model_fallback::{
//!     FallbackLayer, ModelChain, ModelRequest, classify::StatusError, policy::AdaptiveCooldown,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let chain = ModelChain::new(["claude-sonnet", "claude-haiku"])?;
//! let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
//!
//! // Any model service works; this one throttles on the primary.
//! let models = tower::service_fn(|req: ModelRequest<String>| async move {
//!     match req.model().map(|m| m.as_str()) {
//!         Some("claude-sonnet") => Err(StatusError::new(429).with_code("ThrottlingException")),
//!         _ => Ok(format!("answer to {:?}", req.body())),
//!     }
//! });
//! let mut service = ServiceBuilder::new().layer(layer.clone()).service(models);
//!
//! let served = service.ready().await?.call(ModelRequest::new("hello".to_string())).await?;
//! assert_eq!(served.model(), "claude-haiku");
//! assert_eq!(served.failed_attempts()[0].model(), "claude-sonnet");
//! assert!(layer.policy().cooldown_remaining(0).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **Candidates.** Each request walks the chain in order (or its own `with_order`, or a single `pinned`
//!   model), skipping models the policy marks as cooling. Each model is tried at most once per pass;
//!   a request makes one pass unless the layer allows more ([`passes`](FallbackLayerBuilder::passes):
//!   after every candidate failed, wait a short backoff and walk them again). `max_attempts` caps the
//!   count (per layer and per request). A chain holds at most 64 models, so the per-request
//!   bookkeeping is a bit set and the happy path allocates nothing in the layer.
//! - **Models that start cooling mid-request** (because another request was throttled on them) are skipped
//!   by later attempts of running requests while another untried candidate is available: nobody piles onto
//!   a model that just throttled. When every untried candidate is cooling, the running request does what a
//!   new request would (below), so it never fails while a model it has not tried could answer. A request
//!   ends with untried models only for a fatal error, its attempt cap, its deadline, or `FailFast`.
//! - **All candidates cooling** ([`WhenAllCooling`]), for a new request or for the next attempt of a running
//!   one: `TryAnyway` (default) tries them anyway, the one the policy would try again soonest first (for
//!   `AdaptiveCooldown`, the cooldown nearest its last 2 s); `FailFast` returns [`CoolingDown`](error::CoolingDown) with
//!   `retry_after`, the time until then, and the attempts already made; `Wait` gives back the inner
//!   service's readiness (a `ConcurrencyLimit` permit, a `Buffer` slot), sleeps that long and polls
//!   readiness again before the attempt, or fails at once with `CoolingDown` if the request's deadline
//!   comes no later than the reopening. `poll_ready` never waits on cooldowns.
//! - **Deadline.** [`ModelRequest::with_deadline`]: no attempt starts after it and an attempt still running at
//!   it is dropped; the request fails with [`DeadlineExceeded`](error::DeadlineExceeded), listing the attempts that failed.
//! - **Errors.** The service's error type is `tower::BoxError`. When no model answers, the error is
//!   [`FallbackError`](error::FallbackError), listing every attempt (model, class, cooldown set, inner error); its `source()`
//!   is the last inner error, and `into_last_error()` gives it back to downcast to your service's error type.
//!   A readiness error on a later attempt ends the request and is listed as its last attempt.
//! - **Failing models.** A throttle-driven policy keeps trying a model that fails without throttling
//!   (unreachable, timing out, answering 5xx). Wrap the policy in
//!   [`OutlierEjection`](policy::OutlierEjection) to skip such a model after failures in a row and probe
//!   it back; give the layer a [`retry_budget`](FallbackLayerBuilder::retry_budget) (such as
//!   [`FallbackBudget`]) so that when every model fails, fallbacks cannot multiply the load (the request ends with
//!   [`RetryBudgetExhausted`](error::RetryBudgetExhausted)). Both are off by default.
//! - **Response.** [`Served<R>`](Served) carries the response, the model that answered, and the failed attempts
//!   before it.
//! - **Readiness.** As tower's `retry`: `poll_ready` forwards the inner service's readiness; `call` moves
//!   the ready service into the future and keeps a clone; every later attempt polls readiness on its own
//!   service right before calling it. The model for that attempt is picked once and kept while readiness is
//!   pending, so a policy that hands out capacity in its hints (a paced admission, a probe) is asked once
//!   per decision. `Fallback<S>` is `Clone + Send + Sync + 'static` when `S` is, and
//!   stacks with `Buffer`, `ConcurrencyLimit` and `Timeout` (inside the layer, a timeout is a per-attempt
//!   limit and falls back; outside, it bounds the whole request).
//!
//! Errors are classified by [`classify`]; cooldowns are kept by a [`policy`], whose contract (which
//! calls a policy can rely on) is on [`CooldownPolicy`](policy::CooldownPolicy); counters and model
//! status are in [`stats`].
//!
//! Tracing: a `model_fallback` span per request with its `request_id`, a debug event per attempt
//! (model, class, cooldown set) and one per failed request (its reason). Neither payloads nor inner
//! error text (which may quote the request) are logged.
//!
//! # Features
//! - `bedrock` (default): [`bedrock`] services over `aws-sdk-bedrockruntime`, and a
//!   [`DefaultClassifier`](classify::DefaultClassifier) that understands its errors.
//! - `serde`: `Serialize` for [`StatsSnapshot`].
//! - `redis`: [`cluster::redis::RedisCluster`], the Redis store for throttle state shared by the
//!   replicas of a service ([`cluster`]).
//! - `testing`: `testing::ScriptedModels`, a scripted mock model service, and `testing::FakeBedrock`, a
//!   wire-level fake Bedrock server, for your own tests.
//! - `wire`: [`wire`], Bedrock's wire format (operations, error responses, event-stream frames) as
//!   the fake Bedrock and the gateway crate (`tower-model-fallback-gateway`) speak it.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "bedrock")]
pub mod bedrock;
mod budget;
pub mod chain;
pub mod classify;
pub mod cluster;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod per_thread;
pub mod policy;
mod request;
pub mod router;
mod served;
mod service;
pub mod stats;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod trail;
#[cfg(feature = "wire")]
pub mod wire;

#[cfg(all(test, loom_model))]
mod loom_model;

pub use budget::FallbackBudget;
pub use chain::ModelChain;
pub use layer::{FallbackLayer, FallbackLayerBuilder, WhenAllCooling};
pub use request::{ModelId, ModelRequest, RequestId, Route, TokenCost};
pub use router::Router;
pub use served::Served;
pub use service::Fallback;
pub use stats::StatsSnapshot;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Errors as tower middleware passes them around.
pub use tower::BoxError;

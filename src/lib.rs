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
//! # Features
//! - `bedrock` (default): [`bedrock`] services over `aws-sdk-bedrockruntime`, and a
//!   [`DefaultClassifier`](classify::DefaultClassifier) that understands its errors.
//! - `serde`: `Serialize` for [`StatsSnapshot`].
//! - `testing`: `testing::ScriptedModels`, a scripted mock model service, and `testing::FakeBedrock`, a
//!   wire-level fake Bedrock server, for your own tests.
//! - `wire`: [`wire`], Bedrock's wire format (operations, error responses, event-stream frames) as
//!   the fake Bedrock and the gateway crate (`tower-model-fallback-gateway`) speak it.
//! - `grpc`: compiles the tonic example's proto.

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
pub mod chain;
pub mod classify;
pub mod error;
pub mod future;
mod layer;
pub mod policy;
mod request;
pub mod router;
mod served;
mod service;
pub mod stats;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "wire")]
pub mod wire;

#[cfg(all(test, loom_model))]
mod loom_model;

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

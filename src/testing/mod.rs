//! Test doubles for model services (feature `testing`).
//!
//! [`ScriptedModels`] answers each model's calls from a script of [`Step`]s: answer, throttle, fail
//! with a Bedrock error code, each after an optional latency. Its errors are
//! [`StatusError`](crate::classify::StatusError)s that the [`DefaultClassifier`](crate::classify::DefaultClassifier) classifies
//! exactly like the Bedrock errors they stand for. Latency uses tokio's clock, so tests can pause and
//! advance time.
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_model_fallback::testing::{ScriptedModels, Step};
//! use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest, policy::AdaptiveCooldown};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let models = ScriptedModels::new().script("a", [Step::throttle(), Step::ok()]);
//! let layer = FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["a", "b"])?));
//! let service = ServiceBuilder::new().layer(layer).service(models.clone());
//!
//! let served = service.oneshot(ModelRequest::new(())).await?;
//! assert_eq!(served.model(), "b");
//! assert_eq!(models.calls("a"), 1);
//! # Ok(())
//! # }
//! ```

mod gate;
mod scripted;
mod step;

pub use gate::Gate;
pub use scripted::{ScriptedModels, ScriptedReply};
pub use step::Step;
mod fake_bedrock;
mod quota;

pub use fake_bedrock::{FakeBedrock, FakeBedrockBuilder};
pub use quota::{Quota, QuotaState, out_of_daily_tokens, throttled};

//! When models fail rather than throttle: the retry budget bounds what fallbacks add to the load.

use std::time::Duration;

use tokio::time::advance;
use tower::retry::budget::TpsBudget;
use tower::{Layer, ServiceExt};
use tower_model_fallback::error::{FallbackError, RetryBudgetExhausted};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{ScriptedModels, Step};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest};

fn all_failing() -> ScriptedModels {
    ScriptedModels::new()
        .otherwise("A", Step::error("ServiceUnavailableException"))
        .otherwise("B", Step::error("ServiceUnavailableException"))
        .otherwise("C", Step::error("ServiceUnavailableException"))
}

#[tokio::test(start_paused = true)]
async fn with_every_model_failing_the_budget_caps_attempts_per_request() {
    let models = all_failing();
    let chain = ModelChain::new(["A", "B", "C"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .retry_budget(TpsBudget::new(Duration::from_secs(10), 1, 0.2))
        .build()
        .unwrap();
    let svc = layer.layer(models.clone());

    // 100 requests per second for 20 s, every one failing on every model it tries.
    let mut budget_errors = 0;
    let mut calls_before_second_half = 0;
    for i in 0..2_000 {
        if i == 1_000 {
            calls_before_second_half = models.total_calls();
        }
        let err = svc
            .clone()
            .oneshot(ModelRequest::new(()))
            .await
            .unwrap_err();
        if let Some(spent) = err.downcast_ref::<RetryBudgetExhausted>() {
            assert!(
                !spent.attempts().is_empty(),
                "the first attempt is never refused"
            );
            budget_errors += 1;
        } else {
            assert!(err.is::<FallbackError>(), "{err}");
        }
        advance(Duration::from_millis(10)).await;
    }
    // Unbounded, the second half would cost 3 attempts per request.
    let per_request = (models.total_calls() - calls_before_second_half) as f64 / 1_000.0;
    assert!(per_request <= 1.22, "{per_request} attempts per request");
    assert!(budget_errors > 1_500, "{budget_errors} requests refused");
}

#[tokio::test(start_paused = true)]
async fn a_budget_with_room_does_not_change_a_fallback() {
    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let chain = ModelChain::new(["A", "B"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .retry_budget(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
        .build()
        .unwrap();
    let served = layer
        .layer(models)
        .oneshot(ModelRequest::new(()))
        .await
        .unwrap();
    assert_eq!(served.model().as_str(), "B");
    assert_eq!(served.attempts(), 2);
}

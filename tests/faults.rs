//! When models fail rather than throttle: outlier ejection skips a model that keeps failing, and
//! the retry budget bounds what fallbacks add to the load.

use std::time::Duration;

use tokio::time::advance;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, ServiceExt};
use tower_model_fallback::error::{FallbackError, RetryBudgetExhausted};
use tower_model_fallback::policy::{AdaptiveCooldown, CooldownPolicy, OutlierEjection};
use tower_model_fallback::stats::ModelStatus;
use tower_model_fallback::testing::{Gate, ScriptedModels, Step};
use tower_model_fallback::{Fallback, FallbackBudget, FallbackLayer, ModelChain, ModelRequest};

const DOWN: &str = "ServiceUnavailableException";

/// Chain A, B; A is ejected after 3 failures in a row for 10 s, doubling up to 40 s.
fn ejecting(models: &ScriptedModels) -> Fallback<ScriptedModels> {
    let chain = ModelChain::new(["A", "B"]).unwrap();
    let policy = OutlierEjection::builder()
        .consecutive_failures(3)
        .base_ejection(Duration::from_secs(10))
        .max_ejection(Duration::from_secs(40))
        .wrap(AdaptiveCooldown::new(chain))
        .unwrap();
    FallbackLayer::new(policy).layer(models.clone())
}

async fn served_by(svc: &Fallback<ScriptedModels>) -> String {
    let served = svc.clone().oneshot(ModelRequest::new(())).await.unwrap();
    served.model().to_string()
}

#[tokio::test(start_paused = true)]
async fn failures_in_a_row_eject_a_model_until_a_probe_answers() {
    let models = ScriptedModels::new().otherwise("A", Step::error(DOWN));
    let svc = ejecting(&models);
    for _ in 0..3 {
        assert_eq!(served_by(&svc).await, "B");
    }
    assert_eq!(models.calls("A"), 3);
    // Ejected: new requests go straight to B.
    assert_eq!(served_by(&svc).await, "B");
    assert_eq!(models.calls("A"), 3);
    assert_eq!(svc.stats().models[0].status, ModelStatus::Skipped);

    // After 10 s one request probes A; while it runs, the others still skip A.
    advance(Duration::from_secs(10)).await;
    let gate = Gate::new();
    models.set_otherwise("A", Step::ok().held_by(&gate));
    let probe = tokio::spawn(svc.clone().oneshot(ModelRequest::new(())));
    tokio::task::yield_now().await;
    assert_eq!(models.calls("A"), 4);
    assert_eq!(served_by(&svc).await, "B");
    assert_eq!(models.calls("A"), 4, "one probe at a time");
    gate.open();
    assert_eq!(probe.await.unwrap().unwrap().model().as_str(), "A");
    // The probe answered: A is back for everyone.
    assert_eq!(served_by(&svc).await, "A");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_ejects_the_model_for_twice_as_long() {
    let models = ScriptedModels::new().otherwise("A", Step::error(DOWN));
    let svc = ejecting(&models);
    for _ in 0..3 {
        served_by(&svc).await;
    }
    let policy = svc.policy().clone();
    assert_eq!(policy.reopens_in(0), Some(Duration::from_secs(10)));
    advance(Duration::from_secs(10)).await;
    assert_eq!(served_by(&svc).await, "B");
    assert_eq!(models.calls("A"), 4, "the probe failed");
    assert_eq!(policy.reopens_in(0), Some(Duration::from_secs(20)));
    advance(Duration::from_secs(20)).await;
    served_by(&svc).await;
    assert_eq!(policy.reopens_in(0), Some(Duration::from_secs(40)));
    advance(Duration::from_secs(40)).await;
    served_by(&svc).await;
    assert_eq!(
        policy.reopens_in(0),
        Some(Duration::from_secs(40)),
        "capped at the maximum"
    );
    assert_eq!(models.calls("A"), 6);
}

#[tokio::test(start_paused = true)]
async fn only_failures_in_a_row_of_the_transient_kind_count() {
    // Two failures, an answer, two failures: never three in a row.
    let models = ScriptedModels::new().script(
        "A",
        [
            Step::error(DOWN),
            Step::error(DOWN),
            Step::ok(),
            Step::error(DOWN),
            Step::error(DOWN),
            // The request's own fault: the model answered, so this does not count either.
            Step::error("ValidationException"),
            Step::error(DOWN),
            Step::error(DOWN),
        ],
    );
    let svc = ejecting(&models);
    for _ in 0..8 {
        let _ = svc.clone().oneshot(ModelRequest::new(())).await;
    }
    assert_eq!(models.calls("A"), 8);
    assert_eq!(svc.stats().models[0].status, ModelStatus::Available);
}

#[tokio::test(start_paused = true)]
async fn a_reset_ends_an_ejection() {
    let models = ScriptedModels::new().otherwise("A", Step::error(DOWN));
    let svc = ejecting(&models);
    for _ in 0..3 {
        served_by(&svc).await;
    }
    svc.reset_cooldowns();
    models.set_otherwise("A", Step::ok());
    assert_eq!(served_by(&svc).await, "A");
}

fn all_failing() -> ScriptedModels {
    ScriptedModels::new()
        .otherwise("A", Step::error("ServiceUnavailableException"))
        .otherwise("B", Step::error("ServiceUnavailableException"))
        .otherwise("C", Step::error("ServiceUnavailableException"))
}

/// 2,000 requests over 20 s, every model failing: attempts per request in the second half.
async fn attempts_with_every_model_failing(budget: impl Budget + Send + Sync + 'static) -> f64 {
    let models = all_failing();
    let chain = ModelChain::new(["A", "B", "C"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .retry_budget(budget)
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
    assert!(budget_errors > 1_500, "{budget_errors} requests refused");
    (models.total_calls() - calls_before_second_half) as f64 / 1_000.0
}

#[tokio::test(start_paused = true)]
async fn with_every_model_failing_the_budget_caps_attempts_per_request() {
    // Unbounded, it would be 3 attempts per request; the floor adds 0.01.
    let budget = FallbackBudget::new(Duration::from_secs(10), 1, 0.2).unwrap();
    let per_request = attempts_with_every_model_failing(budget).await;
    assert!(per_request <= 1.22, "{per_request} attempts per request");
}

#[tokio::test(start_paused = true)]
async fn any_tower_budget_can_be_the_layers() {
    let budget = TpsBudget::new(Duration::from_secs(10), 1, 0.2);
    let per_request = attempts_with_every_model_failing(budget).await;
    assert!(per_request <= 1.22, "{per_request} attempts per request");
}

#[tokio::test(start_paused = true)]
async fn a_budget_with_room_does_not_change_a_fallback() {
    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let chain = ModelChain::new(["A", "B"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .retry_budget(FallbackBudget::new(Duration::from_secs(10), 10, 0.2).unwrap())
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

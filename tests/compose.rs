//! `Fallback` is an ordinary tower service: it is `Clone + Send + Sync + 'static` and stacks with
//! tower's own middleware.

use std::time::Duration;

use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{ScriptedModels, Step};
use tower_model_fallback::{Fallback, FallbackLayer, ModelChain, ModelRequest};

fn layer() -> FallbackLayer {
    FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()))
}

fn assert_service_bounds<T: Clone + Send + Sync + 'static>(_: &T) {}
fn assert_send<T: Send + 'static>(_: &T) {}

#[test]
fn layer_and_service_are_clone_send_sync_static() {
    let layer = layer();
    assert_service_bounds(&layer);
    let svc: Fallback<ScriptedModels> = layer.layer(ScriptedModels::new());
    assert_service_bounds(&svc);
    let future = svc.clone().call(ModelRequest::new(()));
    assert_send(&future);
}

#[tokio::test(start_paused = true)]
async fn stacks_under_buffer_and_concurrency_limit() {
    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let svc = ServiceBuilder::new()
        .buffer(8)
        .concurrency_limit(2)
        .layer(layer())
        .service(models.clone());
    let mut served = Vec::new();
    for _ in 0..4 {
        let response = svc.clone().oneshot(ModelRequest::new(())).await.unwrap();
        served.push(response.model().to_string());
    }
    assert_eq!(served, ["B", "B", "B", "B"]);
}

#[tokio::test(start_paused = true)]
async fn a_per_attempt_timeout_falls_back_and_an_overall_timeout_bounds_the_request() {
    let models = ScriptedModels::new().script("A", [Step::hang()]);
    // Timeout inside the layer: a slow model is a transient failure, the next model answers.
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(30))
        .layer(layer())
        .timeout(Duration::from_secs(5))
        .service(models.clone());
    let served = svc.clone().oneshot(ModelRequest::new(())).await.unwrap();
    assert_eq!(served.model(), "B");
    assert_eq!(
        served.failed_attempts()[0].class(),
        tower_model_fallback::classify::ErrorClass::Transient
    );

    // Timeout outside the layer: the whole request is bounded, and the error is tower's own.
    let both_hang = ScriptedModels::new()
        .otherwise("A", Step::hang())
        .otherwise("B", Step::hang());
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .layer(layer())
        .service(both_hang);
    let err = svc.oneshot(ModelRequest::new(())).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
}

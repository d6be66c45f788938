//! Per-model services: a saturated model delays only its own requests.

use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_model_fallback::error::UnknownModel;
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest, Router};
use tower_test::mock;

type Req = ModelRequest<&'static str>;

#[tokio::test]
async fn a_saturated_model_does_not_block_the_others() {
    let (a, mut handle_a) = mock::pair::<Req, &'static str>();
    let (b, mut handle_b) = mock::pair::<Req, &'static str>();
    handle_a.allow(0);
    handle_b.allow(1);
    let mut router = Router::new().route("A", a).route("B", b);

    // The router itself is always ready.
    let mut ready = task::spawn(router.ready());
    assert_ready_ok!(ready.poll());
    drop(ready);

    let mut to_a = task::spawn(router.call(ModelRequest::new("for A").with_model("A")));
    let mut to_b = task::spawn(router.call(ModelRequest::new("for B").with_model("B")));
    assert_pending!(to_a.poll(), "A has no capacity");
    assert_pending!(to_b.poll());
    let (request, send) = handle_b.next_request().await.unwrap();
    assert_eq!(*request.body(), "for B");
    send.send_response("B answered");
    assert_eq!(assert_ready_ok!(to_b.poll()), "B answered");

    // A's request goes out as soon as A has capacity.
    handle_a.allow(1);
    assert_pending!(to_a.poll());
    let (_, send) = handle_a.next_request().await.unwrap();
    send.send_response("A answered");
    assert_eq!(assert_ready_ok!(to_a.poll()), "A answered");
}

#[tokio::test]
async fn requests_for_unrouted_models_fail_with_unknown_model() {
    let (a, _handle) = mock::pair::<Req, &'static str>();
    let router = Router::new().route("A", a);
    let err = router
        .clone()
        .oneshot(ModelRequest::new("x").with_model("Z"))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<UnknownModel>().unwrap().model().unwrap(),
        "Z"
    );
    let err = router.oneshot(ModelRequest::new("x")).await.unwrap_err();
    assert_eq!(err.to_string(), "request names no model");
}

#[tokio::test]
async fn fallback_over_a_router_reaches_each_models_own_service() {
    let (a, mut handle_a) = mock::pair::<Req, &'static str>();
    let (b, mut handle_b) = mock::pair::<Req, &'static str>();
    handle_a.allow(1);
    handle_b.allow(1);
    let router = Router::new().route("A", a).route("B", b);
    let layer = FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()));
    let svc = layer.layer(router);
    let mut response = task::spawn(svc.oneshot(ModelRequest::new("hi")));
    assert_pending!(response.poll());
    let (_, send) = handle_a.next_request().await.unwrap();
    send.send_error(tower_model_fallback::classify::StatusError::new(429));
    assert_pending!(response.poll());
    let (request, send) = handle_b.next_request().await.unwrap();
    assert_eq!(request.model().unwrap(), "B");
    send.send_response("from B");
    let served = assert_ready_ok!(response.poll());
    assert_eq!(
        (served.model().as_str(), *served.response()),
        ("B", "from B")
    );
}

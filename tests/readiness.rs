//! The tower contract: readiness is forwarded, and no service is called unless it was polled ready.
//! tower-test's mocks panic when called unready, and their clones start unready.

use std::sync::Arc;
use std::time::Duration;

use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::limit::ConcurrencyLimit;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_model_fallback::classify::{StatusError, Throttle};
use tower_model_fallback::error::FallbackError;
use tower_model_fallback::policy::{AdaptiveCooldown, AttemptInfo, CooldownPolicy, Hint, Ticket};
use tower_model_fallback::testing::{ScriptedModels, Step};
use tower_model_fallback::{
    Fallback, FallbackLayer, FallbackLayerBuilder, ModelChain, ModelRequest, TokenCost,
    WhenAllCooling,
};
use tower_test::mock;

type Req = ModelRequest<&'static str>;

fn layer() -> FallbackLayer {
    FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()))
}

fn throttle() -> StatusError {
    StatusError::new(429).with_code("ThrottlingException")
}

#[tokio::test(start_paused = true)]
async fn poll_ready_forwards_the_inner_readiness() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer());
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_errors_are_returned() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer());
    handle.send_error(StatusError::new(503));
    let err: BoxError = assert_ready_err!(svc.poll_ready());
    assert_eq!(err.downcast_ref::<StatusError>().unwrap().status(), 503);
}

#[tokio::test(start_paused = true)]
async fn each_later_attempt_waits_for_its_own_readiness() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(ModelRequest::new("hi")));

    // The first attempt goes to A at once, on the service that was polled ready.
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.model().unwrap(), "A");
    assert_eq!(*request.body(), "hi");
    send.send_error(throttle());

    // The retry needs readiness again; with no capacity the response stays pending.
    assert_pending!(response.poll());
    assert_pending!(response.poll());

    handle.allow(1);
    assert!(response.is_woken());
    assert_pending!(response.poll());
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.model().unwrap(), "B");
    send.send_response("from B");
    let served = assert_ready_ok!(response.poll());
    assert_eq!(served.model(), "B");
    assert_eq!(*served.response(), "from B");
}

#[tokio::test(start_paused = true)]
async fn the_service_left_behind_must_be_polled_again() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer());
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let _first = svc.call(ModelRequest::new("one"));
    // `call` moved the ready service into the future; the clone left behind has not been polled, so
    // it must be before the next call (the mock would panic otherwise).
    assert_ready_ok!(svc.poll_ready());
    let mut second = task::spawn(svc.call(ModelRequest::new("two")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("one");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("two");
    assert_eq!(*assert_ready_ok!(second.poll()).response(), "two");
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_on_a_later_attempt_ends_the_request_with_the_trail() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(ModelRequest::new("hi")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(throttle());
    handle.send_error(StatusError::new(500).with_message("inner service broke"));
    let err = assert_ready!(response.poll()).unwrap_err();
    let err = err.downcast::<FallbackError>().unwrap();
    assert_eq!(err.attempts().len(), 2);
    assert_eq!(err.attempts()[0].model(), "A");
    assert_eq!(
        err.last_error().unwrap().to_string(),
        "HTTP 500: inner service broke"
    );
    assert_pending!(
        task::spawn(handle.next_request()).poll(),
        "B was never called"
    );
}

/// Counts `hint` calls of the policy it wraps.
#[derive(Debug)]
struct CountingHints {
    inner: AdaptiveCooldown,
    hints: std::sync::atomic::AtomicUsize,
}

impl CooldownPolicy for CountingHints {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }
    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        self.hints
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.hint(model, cost)
    }
    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.inner.on_attempt(model, cost)
    }
    fn on_success(&self, attempt: &AttemptInfo) {
        self.inner.on_success(attempt)
    }
    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        self.inner.on_throttle(attempt, throttle)
    }
    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.inner.cooldown_remaining(model)
    }
    fn reset_cooldowns(&self) {
        self.inner.reset_cooldowns()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pick_is_made_once_however_long_readiness_is_pending() {
    let policy = Arc::new(CountingHints {
        inner: AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()),
        hints: Default::default(),
    });
    let hints = || policy.hints.load(std::sync::atomic::Ordering::Relaxed);
    let layer = FallbackLayer::builder_shared(policy.clone())
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &str, _>(layer);
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut response = task::spawn(svc.call(ModelRequest::new("hi")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(throttle());

    assert_pending!(response.poll());
    let after_pick = hints();
    for _ in 0..5 {
        assert_pending!(response.poll());
    }
    assert_eq!(
        hints(),
        after_pick,
        "no new pick while readiness is pending"
    );
    handle.allow(1);
    assert_pending!(response.poll());
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.model().unwrap(), "B");
    send.send_response("from B");
    assert_eq!(assert_ready_ok!(response.poll()).model(), "B");
    assert_eq!(hints(), after_pick);
}

type OnePermit = Fallback<ConcurrencyLimit<ScriptedModels>>;

/// A layer made by `configure` over model A, which throttles once, behind a single concurrency
/// permit; and the model.
fn one_permit(
    configure: impl FnOnce(FallbackLayerBuilder) -> FallbackLayerBuilder,
) -> (OnePermit, ScriptedModels) {
    let chain = ModelChain::new(["A"]).unwrap();
    let layer = configure(FallbackLayer::builder(AdaptiveCooldown::new(chain)))
        .build()
        .unwrap();
    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .concurrency_limit(1)
        .service(models.clone());
    (svc, models)
}

/// Another caller gets the only permit at once: no waiting request holds it.
fn assert_permit_free(svc: &OnePermit) {
    let mut other = svc.clone();
    let mut ready =
        task::spawn(async move { ServiceExt::<Req>::ready(&mut other).await.map(|_| ()) });
    assert_ready_ok!(ready.poll(), "another caller gets the permit at once");
}

#[tokio::test(start_paused = true)]
async fn waiting_out_a_cooldown_does_not_hold_the_inner_readiness() {
    let (svc, models) = one_permit(|b| b.when_all_cooling(WhenAllCooling::Wait));
    // The throttle cools A; the next request waits for it with the only permit it got from
    // `poll_ready`, unless it gives the permit back first.
    svc.clone()
        .oneshot(ModelRequest::new("one"))
        .await
        .unwrap_err();
    let mut waiting = task::spawn(svc.clone().oneshot(ModelRequest::new("two")));
    assert_pending!(waiting.poll());
    assert_permit_free(&svc);
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(assert_ready_ok!(waiting.poll()).model(), "A");
    assert_eq!(models.calls("A"), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_next_pass_does_not_hold_the_inner_readiness() {
    let (svc, models) = one_permit(|b| b.passes(2));
    let mut passing = task::spawn(svc.clone().oneshot(ModelRequest::new("one")));
    assert_pending!(
        passing.poll(),
        "throttled once, waiting for the second pass"
    );
    assert_permit_free(&svc);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(assert_ready_ok!(passing.poll()).model(), "A");
    assert_eq!(models.calls("A"), 2);
}

//! The layer allocates nothing per call on the happy path (the primary answers), with the adaptive
//! and the paced policy, for chains of up to eight models, and once per failed attempt (its boxed
//! error) when the second or third model answers; from the third failed attempt on, the trail's list
//! is one allocation more. A counting global allocator (the `allocation-counter` crate) checks it;
//! the inner service allocates nothing itself.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tower::{Layer, Service};
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::policy::{AdaptiveCooldown, CooldownPolicy, PacedCooldown};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest, TokenCost};

/// Answers at once without allocating; the first `throttled` models of the chain throttle with a
/// 429 whose error allocates nothing either.
#[derive(Clone)]
struct Model {
    throttled: usize,
}

impl Service<ModelRequest<Arc<str>>> for Model {
    type Response = usize;
    type Error = StatusError;
    type Future = Ready<Result<usize, StatusError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<Arc<str>>) -> Self::Future {
        let index = request
            .model()
            .and_then(|model| model.as_str().strip_prefix("model-")?.parse::<usize>().ok());
        match index {
            Some(index) if index < self.throttled => ready(Err(StatusError::new(429))),
            _ => ready(Ok(request.body().len())),
        }
    }
}

fn allocations_per_call(
    models: usize,
    cost: bool,
    policy: fn(ModelChain) -> Arc<dyn CooldownPolicy>,
) -> usize {
    let chain = ModelChain::new((0..models).map(|i| format!("model-{i}"))).unwrap();
    let layer = FallbackLayer::builder_shared(policy(chain))
        .build()
        .unwrap();
    let mut service = layer.layer(Model { throttled: 0 });
    let body: Arc<str> = Arc::from("hello");
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |service: &mut tower_model_fallback::Fallback<Model>| {
        let mut request = ModelRequest::new(body.clone());
        if cost {
            request = request.with_cost(TokenCost::new(100, 200));
        }
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = pin!(service.call(request));
        match future.poll(&mut cx) {
            Poll::Ready(Ok(served)) => assert_eq!(served.model(), "model-0"),
            _ => panic!("the primary answers at once"),
        }
    };
    call(&mut service); // warm-up: lazily initialised statics
    let counted = allocation_counter::measure(|| {
        for _ in 0..100 {
            call(&mut service);
        }
    });
    counted.count_total as usize
}

#[test]
fn the_happy_path_allocates_nothing_with_up_to_eight_models() {
    // The counter sees allocations at all.
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(7u64))));
    assert_eq!(boxed.count_total, 1);

    let adaptive = |chain| Arc::new(AdaptiveCooldown::new(chain)) as Arc<dyn CooldownPolicy>;
    let paced = |chain| Arc::new(PacedCooldown::new(chain)) as Arc<dyn CooldownPolicy>;
    for (name, policy) in [("adaptive", adaptive as fn(_) -> _), ("paced", paced)] {
        for models in 1..=8 {
            assert_eq!(
                allocations_per_call(models, false, policy),
                0,
                "{name}, {models} models"
            );
            assert_eq!(
                allocations_per_call(models, true, policy),
                0,
                "{name}, {models} models, with a cost hint"
            );
        }
    }
}

/// A policy that never cools, so every call takes the fallback path.
#[derive(Debug)]
struct NeverCool(ModelChain);

impl CooldownPolicy for NeverCool {
    fn chain(&self) -> &ModelChain {
        &self.0
    }
    fn hint(&self, _: usize, _: Option<TokenCost>) -> tower_model_fallback::policy::Hint {
        tower_model_fallback::policy::Hint::Available
    }
    fn on_attempt(&self, _: usize, _: Option<TokenCost>) -> tower_model_fallback::policy::Ticket {
        tower_model_fallback::policy::Ticket::default()
    }
    fn on_success(&self, _: &tower_model_fallback::policy::AttemptInfo) {}
    fn on_throttle(
        &self,
        _: &tower_model_fallback::policy::AttemptInfo,
        _: tower_model_fallback::classify::Throttle,
    ) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    fn cooldown_remaining(&self, _: usize) -> Option<std::time::Duration> {
        None
    }
    fn reset_cooldowns(&self) {}
}

/// Allocations per call when the first `failing` models of a chain of five fail and the next answers.
fn allocations_per_fallback(failing: usize) -> u64 {
    let chain = ModelChain::new((0..5).map(|i| format!("model-{i}"))).unwrap();
    let layer = FallbackLayer::new(NeverCool(chain));
    let mut service = layer.layer(Model { throttled: failing });
    let body: Arc<str> = Arc::from("hello");
    let answering = format!("model-{failing}");
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |service: &mut tower_model_fallback::Fallback<Model>| {
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = pin!(service.call(ModelRequest::new(body.clone())));
        match future.poll(&mut cx) {
            Poll::Ready(Ok(served)) => {
                assert_eq!(served.model(), answering.as_str());
                assert_eq!(served.failed_attempts().len(), failing);
            }
            _ => panic!("a later model answers at once"),
        }
    };
    call(&mut service);
    let counted = allocation_counter::measure(|| {
        for _ in 0..100 {
            call(&mut service);
        }
    });
    counted.count_total / 100
}

#[test]
fn a_fallback_allocates_once_per_failed_attempt() {
    // Each failed attempt's error is boxed (its one allocation); the first two attempts of the
    // trail live inline.
    assert_eq!(allocations_per_fallback(1), 1);
    assert_eq!(allocations_per_fallback(2), 2);
    // From the third, the trail moves to a list: one allocation more for the request.
    assert_eq!(allocations_per_fallback(3), 4);
}

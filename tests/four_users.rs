//! The story the crate exists for: one user's throttle must not break the other users.

use std::time::Duration;

use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt};
use tower_model_fallback::testing::{ScriptedModels, Step};
use tower_model_fallback::{
    Fallback, FallbackLayer, ModelChain, ModelRequest, policy::AdaptiveCooldown,
};

fn service(models: &ScriptedModels) -> (FallbackLayer, Fallback<ScriptedModels>) {
    let chain = ModelChain::new(["A", "B"]).unwrap();
    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
    (layer.clone(), layer.layer(models.clone()))
}

async fn ask(svc: &Fallback<ScriptedModels>, user: u64) -> String {
    let served = svc
        .clone()
        .oneshot(ModelRequest::new(user))
        .await
        .unwrap_or_else(|e| panic!("user {user} failed: {e}"));
    served.model().to_string()
}

#[tokio::test(start_paused = true)]
async fn one_throttled_user_never_breaks_the_others() {
    // A: users 1-3 answer, user 1's second request is slow, then user 4 is throttled.
    let models = ScriptedModels::new().script(
        "A",
        [
            Step::ok(),
            Step::ok(),
            Step::ok(),
            Step::ok().after(Duration::from_secs(5)),
            Step::throttle(),
        ],
    );
    let (layer, svc) = service(&models);

    // Users 1-3 succeed on A.
    for user in 1..=3 {
        assert_eq!(ask(&svc, user).await, "A");
    }

    // User 1 starts a slow request on A that is still running when user 4 is throttled.
    let slow = tokio::spawn(svc.clone().oneshot(ModelRequest::new(1u64)));
    tokio::task::yield_now().await;

    // User 4 is throttled on A and served by B in the same call.
    let throttled_at = Instant::now();
    let served = svc.clone().oneshot(ModelRequest::new(4u64)).await.unwrap();
    assert_eq!(served.model(), "B");
    assert_eq!(served.failed_attempts().len(), 1);
    assert_eq!(served.failed_attempts()[0].model(), "A");
    assert!(served.failed_attempts()[0].class().is_throttled());
    assert_eq!(
        served.failed_attempts()[0].cooldown(),
        Some(Duration::from_secs(10))
    );

    // While more than 2 s of A's cooldown remain, users 1-3 start at B and succeed without touching A.
    let a_calls = models.calls("A");
    for (at, user) in [(1, 1), (3, 2), (7, 3)] {
        advance_to(throttled_at + Duration::from_secs(at)).await;
        assert_eq!(ask(&svc, user).await, "B", "user {user} at +{at}s");
    }
    assert_eq!(
        models.calls("A"),
        a_calls,
        "no new request touched A while it cooled"
    );

    // The slow request that started before the throttle finished on A, undisturbed...
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.model(), "A");
    // ...and, having started before the throttle, did not reopen A for everyone.
    assert!(layer.policy().cooldown_remaining(0).is_some());

    // With 2 s or less left, the next request tries A again, succeeds, and clears the cooldown.
    advance_to(throttled_at + Duration::from_secs(8)).await;
    assert_eq!(ask(&svc, 1).await, "A");
    assert_eq!(layer.policy().cooldown_remaining(0), None);

    // Everyone is back on A.
    for user in 1..=4 {
        assert_eq!(ask(&svc, user).await, "A");
    }

    let stats = layer.stats();
    assert_eq!(stats.totals.failed, 0, "no user ever saw an error");
    assert_eq!(stats.totals.requests, stats.totals.served);
    assert_eq!(stats.models[0].throttles, 1);
}

async fn advance_to(t: Instant) {
    let now = Instant::now();
    if t > now {
        advance(t - now).await;
    }
}

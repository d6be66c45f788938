//! What one request does: which models it tries, in what order, and how it ends.

use std::time::Duration;

use tokio::time::{Instant, advance};
use tower::{BoxError, Layer, ServiceExt};
use tower_model_fallback::classify::{ErrorClass, QuotaLimit, StatusError, Throttle};
use tower_model_fallback::error::{CoolingDown, DeadlineExceeded, FallbackError, UnknownModel};
use tower_model_fallback::policy::{AdaptiveCooldown, CooldownPolicy};
use tower_model_fallback::stats::ModelStatus;
use tower_model_fallback::testing::{ScriptedModels, Step, throttled};
use tower_model_fallback::{
    Fallback, FallbackLayer, ModelChain, ModelRequest, RequestId, Served, WhenAllCooling,
    testing::ScriptedReply,
};

fn layer(mode: WhenAllCooling) -> FallbackLayer {
    let chain = ModelChain::new(["A", "B", "C"]).unwrap();
    FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .when_all_cooling(mode)
        .build()
        .unwrap()
}

fn service(models: &ScriptedModels) -> Fallback<ScriptedModels> {
    layer(WhenAllCooling::TryAnyway).layer(models.clone())
}

async fn send(
    svc: &Fallback<ScriptedModels>,
    req: ModelRequest<()>,
) -> Result<Served<ScriptedReply>, BoxError> {
    svc.clone().oneshot(req).await
}

/// What a scripted `ThrottlingException` classifies as: its message says requests ran out.
const THROTTLED: ErrorClass =
    ErrorClass::Throttled(Throttle::NONE.with_limit(QuotaLimit::Requests));

fn fallback_error(err: BoxError) -> FallbackError {
    *err.downcast::<FallbackError>().expect("a FallbackError")
}

#[tokio::test(start_paused = true)]
async fn every_falling_back_class_moves_to_the_next_model() {
    for (code, class) in [
        ("ThrottlingException", THROTTLED),
        ("ServiceUnavailableException", ErrorClass::Transient),
        ("InternalServerException", ErrorClass::Transient),
        ("ModelTimeoutException", ErrorClass::Transient),
        ("AccessDeniedException", ErrorClass::ModelRejected),
        ("ResourceNotFoundException", ErrorClass::ModelRejected),
        ("ModelErrorException", ErrorClass::ModelRejected),
    ] {
        let models = ScriptedModels::new().script("A", [Step::error(code)]);
        let svc = service(&models);
        let served = send(&svc, ModelRequest::new(())).await.unwrap();
        assert_eq!(served.model(), "B", "{code}");
        assert_eq!(served.response().text, "B ok");
        assert_eq!(served.failed_attempts()[0].class(), class, "{code}");
        let stats = svc.stats();
        assert_eq!(stats.totals.served_by_fallback, 1);
        // Only throttles cool a model down.
        assert_eq!(
            svc.policy().cooldown_remaining(0).is_some(),
            class.is_throttled(),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn fatal_error_returns_at_once_with_the_inner_error() {
    let models = ScriptedModels::new().script("A", [Step::error("ValidationException")]);
    let svc = service(&models);
    let err = fallback_error(send(&svc, ModelRequest::new(())).await.unwrap_err());
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(err.attempts()[0].class(), ErrorClass::Fatal);
    let inner = err
        .last_error()
        .unwrap()
        .downcast_ref::<StatusError>()
        .unwrap();
    assert_eq!(inner.code(), Some("ValidationException"));
    assert_eq!(
        models.calls("B"),
        0,
        "a bad request is not sent to another model"
    );
    assert_eq!(svc.stats().totals.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn stats_count_the_throttles_that_said_tokens_ran_out() {
    let models = ScriptedModels::new()
        .script("A", [Step::fail(throttled(QuotaLimit::Tokens))])
        .script("B", [Step::throttle()]);
    let svc = service(&models);
    let served = send(&svc, ModelRequest::new(())).await.unwrap();
    assert_eq!(served.model(), "C");
    let limits: Vec<_> = served
        .failed_attempts()
        .iter()
        .map(|a| a.class().throttle().and_then(|t| t.limit))
        .collect();
    assert_eq!(
        limits,
        [Some(QuotaLimit::Tokens), Some(QuotaLimit::Requests)]
    );
    let stats = svc.stats();
    let counts: Vec<_> = stats.models[..2]
        .iter()
        .map(|m| (m.throttles, m.token_throttles))
        .collect();
    assert_eq!(counts, [(1, 1), (1, 0)]);
}

#[tokio::test(start_paused = true)]
async fn every_model_is_tried_at_most_once_and_the_error_lists_them() {
    let models = ScriptedModels::new()
        .otherwise("A", Step::throttle())
        .otherwise("B", Step::error("ServiceUnavailableException"))
        .otherwise("C", Step::error("ModelErrorException"));
    let svc = service(&models);
    let err = send(&svc, ModelRequest::new(())).await.unwrap_err();
    let message = err.to_string();
    let err = fallback_error(err);
    let trail: Vec<_> = err
        .attempts()
        .iter()
        .map(|a| (a.model().to_string(), a.class()))
        .collect();
    assert_eq!(
        trail,
        [
            ("A".to_string(), THROTTLED),
            ("B".to_string(), ErrorClass::Transient),
            ("C".to_string(), ErrorClass::ModelRejected),
        ]
    );
    assert_eq!(
        models.log(),
        ["A".into(), "B".into(), "C".into()] as [tower_model_fallback::ModelId; 3]
    );
    assert!(
        message.starts_with("all 3 model attempts failed: A (throttled)"),
        "{message}"
    );
    // The last inner error is the source and can be taken back.
    let last = err.into_last_error().unwrap();
    assert_eq!(last.downcast_ref::<StatusError>().unwrap().status(), 424);
}

#[tokio::test(start_paused = true)]
async fn explicit_order_is_honoured() {
    let models = ScriptedModels::new().script("C", [Step::throttle()]);
    let svc = service(&models);
    let served = send(&svc, ModelRequest::new(()).with_order(["C", "A"]))
        .await
        .unwrap();
    assert_eq!(served.model(), "A");
    assert_eq!(
        models.log(),
        ["C".into(), "A".into()] as [tower_model_fallback::ModelId; 2]
    );
}

#[tokio::test(start_paused = true)]
async fn pinned_model_is_tried_even_when_cooling_and_never_falls_back() {
    let models = ScriptedModels::new().script("B", [Step::throttle(), Step::throttle()]);
    let svc = service(&models);
    // Cool B down through a normal request.
    send(&svc, ModelRequest::new(()).with_order(["B", "C"]))
        .await
        .unwrap();
    assert!(svc.policy().cooldown_remaining(1).is_some());

    let err = send(&svc, ModelRequest::new(()).pinned("B"))
        .await
        .unwrap_err();
    let err = fallback_error(err);
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(err.attempts()[0].model(), "B");
    assert_eq!(
        models.calls("B"),
        2,
        "the pinned request went to B despite its cooldown"
    );
    assert_eq!(models.calls("A"), 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_models_in_overrides_are_rejected() {
    let models = ScriptedModels::new();
    let svc = service(&models);
    let err = send(&svc, ModelRequest::new(()).pinned("Z"))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<UnknownModel>().unwrap().model().unwrap(),
        "Z"
    );
    let err = send(&svc, ModelRequest::new(()).with_order(["A", "Z"]))
        .await
        .unwrap_err();
    assert!(err.is::<UnknownModel>());
    assert_eq!(err.to_string(), "model Z is not configured");
    assert_eq!(models.total_calls(), 0);
    assert_eq!(svc.stats().totals.failed, 2);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_per_request_and_per_layer() {
    let models = ScriptedModels::new()
        .otherwise("A", Step::error("InternalServerException"))
        .otherwise("B", Step::error("InternalServerException"));
    let svc = service(&models);
    let err = send(&svc, ModelRequest::new(()).with_max_attempts(1))
        .await
        .unwrap_err();
    assert_eq!(fallback_error(err).attempts().len(), 1);

    let capped = FallbackLayer::builder(AdaptiveCooldown::new(
        ModelChain::new(["A", "B", "C"]).unwrap(),
    ))
    .max_attempts(2)
    .build()
    .unwrap()
    .layer(models.clone());
    let err = capped.oneshot(ModelRequest::new(())).await.unwrap_err();
    assert_eq!(fallback_error(err).attempts().len(), 2);

    let zero = FallbackLayer::builder(AdaptiveCooldown::new(ModelChain::new(["A"]).unwrap()))
        .max_attempts(0)
        .build();
    assert_eq!(
        zero.unwrap_err(),
        tower_model_fallback::error::ConfigError::ZeroMaxAttempts
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_a_slow_attempt_and_stops_further_ones() {
    let models = ScriptedModels::new()
        .script(
            "A",
            [Step::error("ServiceUnavailableException").after(Duration::from_secs(2))],
        )
        .script("B", [Step::ok().after(Duration::from_secs(10))]);
    let svc = service(&models);
    let start = Instant::now();
    let err = send(
        &svc,
        ModelRequest::new(()).with_deadline(start + Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(5),
        "resolved exactly at the deadline"
    );
    let err = err.downcast::<DeadlineExceeded>().unwrap();
    assert_eq!(
        err.attempts().len(),
        1,
        "A's failure is listed; B was cut off"
    );
    assert_eq!(models.calls("C"), 0, "no attempt starts after the deadline");
    let stats = svc.stats();
    assert_eq!(stats.models[1].cancelled, 1);
    assert_eq!(stats.models[1].in_flight, 0);
    assert_eq!(stats.totals.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_past_deadline_fails_before_any_call() {
    let models = ScriptedModels::new();
    let svc = service(&models);
    let past = Instant::now();
    advance(Duration::from_millis(1)).await;
    let err = send(&svc, ModelRequest::new(()).with_deadline(past))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(models.total_calls(), 0);
}

/// Throttles A, B and C (10 s, 10 s and 10 s cooldowns started 0, 1 and 2 s apart).
async fn cool_everything(svc: &Fallback<ScriptedModels>, models: &ScriptedModels) {
    for model in ["A", "B", "C"] {
        models.push(model, [Step::throttle()]);
        let _ = send(svc, ModelRequest::new(()).pinned(model)).await;
        advance(Duration::from_secs(1)).await;
    }
    models.clear_log();
}

#[tokio::test(start_paused = true)]
async fn all_cooling_try_anyway_goes_soonest_expiring_first() {
    let models = ScriptedModels::new();
    let svc = layer(WhenAllCooling::TryAnyway).layer(models.clone());
    // Cool C first so that it expires soonest, then A, then B.
    for model in ["C", "A", "B"] {
        models.push(model, [Step::throttle()]);
        let _ = send(&svc, ModelRequest::new(()).pinned(model)).await;
        advance(Duration::from_secs(1)).await;
    }
    models.clear_log();
    models.push("C", [Step::throttle()]);
    let served = send(&svc, ModelRequest::new(())).await.unwrap();
    assert_eq!(served.model(), "A");
    assert_eq!(
        models.log(),
        ["C".into(), "A".into()] as [tower_model_fallback::ModelId; 2]
    );
}

#[tokio::test(start_paused = true)]
async fn all_cooling_fail_fast_says_when_to_come_back() {
    let models = ScriptedModels::new();
    let svc = layer(WhenAllCooling::FailFast).layer(models.clone());
    cool_everything(&svc, &models).await;
    // A's cooldown (10 s) started 3 s ago and ends first; new requests try it again with 2 s left.
    let err = send(&svc, ModelRequest::new(())).await.unwrap_err();
    let cooling = err.downcast_ref::<CoolingDown>().unwrap();
    assert_eq!(cooling.retry_after(), Duration::from_secs(5));
    assert_eq!(models.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn all_cooling_wait_sleeps_until_the_soonest_expiry() {
    let models = ScriptedModels::new();
    let svc = layer(WhenAllCooling::Wait).layer(models.clone());
    cool_everything(&svc, &models).await;
    let start = Instant::now();
    let served = send(&svc, ModelRequest::new(())).await.unwrap();
    assert_eq!(served.model(), "A");
    assert_eq!(Instant::now() - start, Duration::from_secs(5));

    // A deadline before the soonest reopening, or at it (no time left for an attempt), fails at once
    // instead of sleeping in vain.
    for deadline in [3, 5] {
        cool_everything(&svc, &models).await;
        let start = Instant::now();
        let err = send(
            &svc,
            ModelRequest::new(()).with_deadline(start + Duration::from_secs(deadline)),
        )
        .await
        .unwrap_err();
        assert!(err.is::<CoolingDown>(), "deadline in {deadline} s: {err}");
        assert_eq!(Instant::now(), start, "deadline in {deadline} s");
        assert_eq!(models.total_calls(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn models_that_start_cooling_mid_request_are_skipped_while_another_is_untried() {
    // A fails (not a throttle); meanwhile another request throttled B; C serves.
    let models = ScriptedModels::new()
        .script(
            "A",
            [Step::error("InternalServerException").after(Duration::from_secs(1))],
        )
        .script("B", [Step::throttle()]);
    let svc = service(&models);
    let first = tokio::spawn(svc.clone().oneshot(ModelRequest::new(())));
    tokio::task::yield_now().await;
    send(&svc, ModelRequest::new(()).with_order(["B", "C"]))
        .await
        .unwrap();
    let served = first.await.unwrap().unwrap();
    assert_eq!(served.model(), "C");
    assert_eq!(
        models.calls("B"),
        1,
        "B was throttled once and not hit again"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_attempt_keeps_stats_consistent() {
    let models = ScriptedModels::new().script("A", [Step::hang()]);
    let svc = service(&models);
    let mut call = tokio_test::task::spawn(svc.clone().oneshot(ModelRequest::new(())));
    tokio_test::assert_pending!(call.poll());
    assert_eq!(svc.stats().models[0].in_flight, 1);
    assert_eq!(svc.stats().totals.in_flight, 1);
    drop(call);
    let stats = svc.stats();
    assert_eq!(stats.models[0].in_flight, 0);
    assert_eq!(stats.models[0].cancelled, 1);
    assert_eq!(stats.totals.in_flight, 0);
    assert_eq!(stats.totals.cancelled, 1);
    assert_eq!(stats.totals.requests, 1);
}

#[tokio::test(start_paused = true)]
async fn stats_report_usage_and_reset_clears_cooldowns() {
    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let layer = layer(WhenAllCooling::TryAnyway);
    let svc = layer.layer(models.clone());
    for _ in 0..4 {
        send(&svc, ModelRequest::new(())).await.unwrap();
    }
    let stats = layer.stats();
    assert_eq!(stats.totals.requests, 4);
    assert_eq!(
        stats.totals.served_by_fallback, 4,
        "A cooled after the first throttle"
    );
    assert_eq!(stats.totals.primary_usage, Some(0.0));
    let a = &stats.models[0];
    assert_eq!((a.attempts, a.throttles, a.successes), (1, 1, 0));
    assert_eq!(a.status, ModelStatus::Skipped);
    assert_eq!(a.cooldown_remaining_s, 10.0);
    assert_eq!(
        a.reopens_in_s, 8.0,
        "new requests try A again with 2 s left"
    );
    assert_eq!(a.success_rate, Some(0.0));
    assert_eq!(stats.models[1].success_rate, Some(1.0));

    // The policy is reachable as the type it was built with.
    let adaptive = layer.downcast_policy::<AdaptiveCooldown>().unwrap();
    assert_eq!(adaptive.reopens_in(0), Some(Duration::from_secs(8)));
    assert!(
        svc.downcast_policy::<tower_model_fallback::policy::PacedCooldown>()
            .is_none()
    );

    layer.reset_cooldowns();
    send(&svc, ModelRequest::new(())).await.unwrap();
    let stats = layer.stats();
    assert_eq!(stats.models[0].status, ModelStatus::Available);
    assert_eq!(stats.totals.served_by_primary, 1);
    assert_eq!(stats.totals.primary_usage, Some(0.2));
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn stats_serialize_to_json() {
    let models = ScriptedModels::new();
    let svc = service(&models);
    send(&svc, ModelRequest::new(())).await.unwrap();
    let json = serde_json::to_value(svc.stats()).unwrap();
    assert_eq!(json["models"][0]["id"], "A");
    assert_eq!(json["models"][0]["status"], "available");
    assert_eq!(json["totals"]["primary_usage"], 1.0);
}

/// A request running on A while another user's request throttles B (chain A, B).
async fn b_cools_while_a_runs(
    mode: WhenAllCooling,
) -> (Result<Served<ScriptedReply>, BoxError>, ScriptedModels) {
    let gate = tower_model_fallback::testing::Gate::new();
    let models = ScriptedModels::new()
        .script(
            "A",
            [Step::error("ServiceUnavailableException").held_by(&gate)],
        )
        .script("B", [Step::throttle()]);
    let chain = ModelChain::new(["A", "B"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .when_all_cooling(mode)
        .build()
        .unwrap();
    let svc = layer.layer(models.clone());
    let running = tokio::spawn(svc.clone().oneshot(ModelRequest::new(())));
    gate.arrived().await;
    send(&svc, ModelRequest::new(()).pinned("B"))
        .await
        .unwrap_err();
    assert!(!layer.policy().hint(1, None).is_available(), "B is cooling");
    gate.open();
    (running.await.unwrap(), models)
}

#[tokio::test(start_paused = true)]
async fn a_model_that_started_cooling_mid_request_is_tried_when_it_is_the_last_one() {
    let (result, models) = b_cools_while_a_runs(WhenAllCooling::TryAnyway).await;
    let served = result.expect("B could answer, so the request must not fail");
    assert_eq!(served.model(), "B");
    assert_eq!(models.calls("B"), 2);
}

#[tokio::test(start_paused = true)]
async fn mid_request_all_cooling_fails_fast_with_cooling_down() {
    let (result, models) = b_cools_while_a_runs(WhenAllCooling::FailFast).await;
    let err = result.unwrap_err();
    let cooling = err.downcast_ref::<CoolingDown>().expect("CoolingDown");
    assert_eq!(cooling.retry_after(), Duration::from_secs(8));
    assert_eq!(models.calls("B"), 1, "only the throttled pinned call");
}

#[tokio::test(start_paused = true)]
async fn mid_request_all_cooling_waits_then_tries() {
    let start = Instant::now();
    let (result, _) = b_cools_while_a_runs(WhenAllCooling::Wait).await;
    assert_eq!(result.unwrap().model(), "B");
    assert_eq!(Instant::now() - start, Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn live_stats_count_a_request_that_waits_out_a_cooldown() {
    let models = ScriptedModels::new();
    let svc = layer(WhenAllCooling::Wait).layer(models.clone());
    cool_everything(&svc, &models).await;
    let before = svc.stats().totals;
    let mut call = tokio_test::task::spawn(svc.clone().oneshot(ModelRequest::new(())));
    tokio_test::assert_pending!(call.poll());
    let t = svc.stats().totals;
    assert_eq!(
        t.requests,
        before.requests + 1,
        "a waiting request is counted"
    );
    assert_eq!(t.in_flight, 1);
    assert_eq!(t.requests, t.served + t.failed + t.cancelled + t.in_flight);
    drop(call);
    let t = svc.stats().totals;
    assert_eq!((t.in_flight, t.cancelled), (0, 1));
    assert_eq!(t.requests, t.served + t.failed + t.cancelled + t.in_flight);
}

#[tokio::test(start_paused = true)]
async fn responses_that_report_failures_are_classified_like_errors() {
    use tower_model_fallback::classify::HttpStatus;
    // An HTTP-level model service: its throttles and outages are `Ok` responses.
    let models = tower::service_fn(|req: ModelRequest<()>| async move {
        let (status, errortype) = match req.model().unwrap().as_str() {
            "A" => (429, Some("ThrottlingException:http://internal.amazon.com/")),
            "B" => (503, None),
            _ => (200, None),
        };
        let mut response = http::Response::builder().status(status);
        if let Some(errortype) = errortype {
            response = response
                .header("x-amzn-errortype", errortype)
                .header("retry-after", "20");
        }
        Ok::<_, std::convert::Infallible>(response.body(()).unwrap())
    });
    let chain = ModelChain::new(["A", "B", "C"]).unwrap();
    let layer = FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .classify_responses(HttpStatus)
        .build()
        .unwrap();
    let served = layer
        .layer(models)
        .oneshot(ModelRequest::new(()))
        .await
        .unwrap();
    assert_eq!(served.model(), "C");
    assert_eq!(served.response().status(), 200);
    let trail: Vec<_> = served.failed_attempts().iter().map(|a| a.class()).collect();
    assert_eq!(
        trail,
        [
            ErrorClass::Throttled(Throttle::retry_after(Duration::from_secs(20))),
            ErrorClass::Transient
        ]
    );
    let stats = layer.stats();
    assert_eq!(
        (stats.models[0].throttles, stats.models[1].failures),
        (1, 1)
    );
    assert_eq!(
        layer.policy().cooldown_remaining(0),
        Some(Duration::from_secs(20)),
        "the 429's retry-after lengthened A's cooldown"
    );
}

fn passes(passes: u32, backoff: Duration) -> FallbackLayer {
    let chain = ModelChain::new(["A", "B", "C"]).unwrap();
    FallbackLayer::builder(AdaptiveCooldown::new(chain))
        .passes(passes)
        .pass_backoff(backoff)
        .build()
        .unwrap()
}

fn trail(err: &FallbackError) -> Vec<String> {
    err.attempts()
        .iter()
        .map(|a| a.model().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_second_pass_tries_the_models_again_after_the_backoff() {
    let models = ScriptedModels::new()
        .script("A", [Step::throttle(), Step::throttle()])
        .script("B", [Step::throttle()])
        .script("C", [Step::throttle()]);
    let svc = passes(2, Duration::from_secs(1)).layer(models.clone());
    let start = Instant::now();
    let served = send(&svc, ModelRequest::new(())).await.unwrap();
    let waited = Instant::now() - start;
    assert!(waited >= Duration::from_millis(500) && waited <= Duration::from_secs(1));
    // The second pass picks as a new request would: every model cooling, A's cooldown ends soonest.
    assert_eq!(served.model(), "B");
    let tried: Vec<_> = models.log().iter().map(|m| m.to_string()).collect();
    assert_eq!(tried, ["A", "B", "C", "A", "B"]);
    assert_eq!(served.failed_attempts().len(), 4);
    let totals = svc.stats().totals;
    assert_eq!((totals.served_by_fallback, totals.later_passes), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn later_passes_double_the_backoff_and_the_error_lists_every_attempt() {
    let models = ScriptedModels::new()
        .otherwise("A", Step::throttle())
        .otherwise("B", Step::throttle())
        .otherwise("C", Step::throttle());
    let svc = passes(3, Duration::from_secs(1)).layer(models.clone());
    // Between half and all of 1 s, then of 2 s, spread by the request id: the same id, the same
    // waits; ids spread them.
    let mut waits = Vec::new();
    for id in [7, 7, 8, 9, 10] {
        let start = Instant::now();
        let request = ModelRequest::new(()).with_id(RequestId::new(id));
        let err = fallback_error(send(&svc, request).await.unwrap_err());
        assert_eq!(err.attempts().len(), 9);
        waits.push(Instant::now() - start);
    }
    assert!(
        waits
            .iter()
            .all(|w| (Duration::from_millis(1_500)..=Duration::from_secs(3)).contains(w)),
        "{waits:?}"
    );
    assert_eq!(waits[0], waits[1]);
    let distinct: std::collections::HashSet<_> = waits.iter().collect();
    assert_eq!(distinct.len(), 4, "{waits:?}");
    assert_eq!(models.total_calls(), 45);
    let totals = svc.stats().totals;
    assert_eq!((totals.failed, totals.later_passes), (5, 10));
}

#[tokio::test(start_paused = true)]
async fn passes_stop_at_a_fatal_error_the_attempt_cap_the_deadline_and_rejections() {
    let backoff = Duration::from_secs(1);
    let models = ScriptedModels::new()
        .script("A", [Step::throttle()])
        .script("B", [Step::error("ValidationException")]);
    let svc = passes(2, backoff).layer(models.clone());
    let err = fallback_error(send(&svc, ModelRequest::new(())).await.unwrap_err());
    assert_eq!(trail(&err), ["A", "B"], "a fatal error ends the request");

    let models = ScriptedModels::new()
        .otherwise("A", Step::throttle())
        .otherwise("B", Step::throttle())
        .otherwise("C", Step::throttle());
    let svc = passes(2, backoff).layer(models.clone());
    let err = send(&svc, ModelRequest::new(()).with_max_attempts(4))
        .await
        .unwrap_err();
    assert_eq!(trail(&fallback_error(err)), ["A", "B", "C", "A"]);

    // A pass that cannot start before the deadline (at least half the backoff away) is not waited
    // for.
    let svc = passes(2, backoff).layer(models.clone());
    let start = Instant::now();
    let deadline = start + Duration::from_millis(400);
    let err = send(&svc, ModelRequest::new(()).with_deadline(deadline))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), start);
    assert_eq!(fallback_error(err).attempts().len(), 3);

    // A pinned request passes over its one model.
    let svc = passes(2, backoff).layer(models.clone());
    let err = send(&svc, ModelRequest::new(()).pinned("B"))
        .await
        .unwrap_err();
    assert_eq!(trail(&fallback_error(err)), ["B", "B"]);

    // A model that rejected the request is not asked again; when every one did, nothing waits.
    let models = ScriptedModels::new()
        .otherwise("A", Step::error("AccessDeniedException"))
        .otherwise("B", Step::throttle())
        .otherwise("C", Step::error("ResourceNotFoundException"));
    let svc = passes(2, backoff).layer(models.clone());
    let err = send(&svc, ModelRequest::new(())).await.unwrap_err();
    assert_eq!(trail(&fallback_error(err)), ["A", "B", "C", "B"]);
    models.set_otherwise("B", Step::error("ModelErrorException"));
    let svc = passes(2, backoff).layer(models.clone());
    let start = Instant::now();
    let err = send(&svc, ModelRequest::new(())).await.unwrap_err();
    assert_eq!(trail(&fallback_error(err)), ["A", "B", "C"]);
    assert_eq!(Instant::now(), start);

    let zero = FallbackLayer::builder(AdaptiveCooldown::new(ModelChain::new(["A"]).unwrap()))
        .passes(0)
        .build();
    assert_eq!(
        zero.unwrap_err(),
        tower_model_fallback::error::ConfigError::ZeroPasses
    );
    let endless = FallbackLayer::builder(AdaptiveCooldown::new(ModelChain::new(["A"]).unwrap()))
        .pass_backoff(Duration::MAX)
        .build();
    assert_eq!(
        endless.unwrap_err(),
        tower_model_fallback::error::ConfigError::PassBackoffTooLong
    );
}

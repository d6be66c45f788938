//! Property test of the layer: random chains, random outcomes per attempt, cooldowns started by
//! other users at random moments, every `WhenAllCooling` mode, one or two passes, deadlines, caps,
//! cancellations and inner services that are not always ready. Whatever happens, the layer keeps its promises.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_model_fallback::classify::{ErrorClass, StatusError, Throttle};
use tower_model_fallback::error::{CoolingDown, DeadlineExceeded, FallbackError};
use tower_model_fallback::policy::{
    AdaptiveCooldown, AttemptInfo, CooldownPolicy, FixedCooldown, Hint, PacedCooldown,
    ProbingCooldown, Ticket,
};
use tower_model_fallback::{
    Fallback, FallbackLayer, ModelChain, ModelRequest, RequestId, TokenCost, WhenAllCooling,
};

/// What one attempt does.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    Throttle,
    ThrottleRetryAfter,
    Transient,
    Rejected,
    Fatal,
    /// Answers after a while.
    SlowOk,
    /// Never answers: the request ends by its deadline or by being dropped.
    Hang,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Ok),
        3 => Just(Outcome::Throttle),
        1 => Just(Outcome::ThrottleRetryAfter),
        2 => Just(Outcome::Transient),
        1 => Just(Outcome::Rejected),
        1 => Just(Outcome::Fatal),
        1 => Just(Outcome::SlowOk),
        1 => Just(Outcome::Hang),
    ]
}

#[derive(Clone, Debug)]
struct Plan {
    /// Outcome of this request's attempt on each model, by chain index.
    outcomes: Vec<Outcome>,
    start_ms: u64,
    deadline_ms: Option<u64>,
    max_attempts: Option<u32>,
    /// The caller drops the request this long after sending it.
    cancel_after_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Case {
    models: usize,
    mode: WhenAllCooling,
    policy: usize,
    /// Passes through the candidates per request.
    passes: u32,
    /// Readiness answers `Pending` this many times before each `Ready`.
    pending_polls: u8,
    requests: Vec<Plan>,
    /// (time, model): another user's throttle on that model.
    outside_throttles: Vec<(u64, usize)>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=8).prop_flat_map(|models| {
        let plan = (
            prop::collection::vec(outcome(), models),
            0u64..20_000,
            prop::option::weighted(0.3, 1u64..15_000),
            prop::option::weighted(0.2, 1u32..4),
            prop::option::weighted(0.1, 0u64..5_000),
        )
            .prop_map(
                |(mut outcomes, start_ms, deadline_ms, max_attempts, cancel_after_ms)| {
                    // A call that never answers needs something to end the request.
                    if deadline_ms.is_none() && cancel_after_ms.is_none() {
                        for o in &mut outcomes {
                            if let Outcome::Hang = o {
                                *o = Outcome::SlowOk;
                            }
                        }
                    }
                    Plan {
                        outcomes,
                        start_ms,
                        deadline_ms,
                        max_attempts,
                        cancel_after_ms,
                    }
                },
            );
        (
            Just(models),
            prop::sample::select(vec![
                WhenAllCooling::TryAnyway,
                WhenAllCooling::FailFast,
                WhenAllCooling::Wait,
            ]),
            0usize..4,
            1u32..=2,
            0u8..3,
            prop::collection::vec(plan, 1..12),
            prop::collection::vec((0u64..20_000, 0..models), 0..6),
        )
            .prop_map(
                |(models, mode, policy, passes, pending_polls, requests, outside_throttles)| Case {
                    models,
                    mode,
                    policy,
                    passes,
                    pending_polls,
                    requests,
                    outside_throttles,
                },
            )
    })
}

/// A policy that counts how it is called, around a real one.
#[derive(Debug)]
struct Recorder {
    inner: Box<dyn CooldownPolicy>,
    hints: AtomicU64,
    admitted: AtomicU64,
    outcomes: AtomicU64,
}

impl CooldownPolicy for Recorder {
    fn chain(&self) -> &ModelChain {
        self.inner.chain()
    }
    fn hint(&self, model: usize, cost: Option<TokenCost>) -> Hint {
        self.hints.fetch_add(1, Ordering::Relaxed);
        self.inner.hint(model, cost)
    }
    fn on_attempt(&self, model: usize, cost: Option<TokenCost>) -> Ticket {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.inner.on_attempt(model, cost)
    }
    fn on_success(&self, attempt: &AttemptInfo) {
        self.outcomes.fetch_add(1, Ordering::Relaxed);
        self.inner.on_success(attempt)
    }
    fn on_throttle(&self, attempt: &AttemptInfo, throttle: Throttle) -> Duration {
        self.outcomes.fetch_add(1, Ordering::Relaxed);
        self.inner.on_throttle(attempt, throttle)
    }
    fn on_failure(&self, attempt: &AttemptInfo, class: ErrorClass) {
        self.outcomes.fetch_add(1, Ordering::Relaxed);
        self.inner.on_failure(attempt, class)
    }
    fn on_cancelled(&self, attempt: &AttemptInfo) {
        self.outcomes.fetch_add(1, Ordering::Relaxed);
        self.inner.on_cancelled(attempt)
    }
    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.inner.cooldown_remaining(model)
    }
    fn reopens_in(&self, model: usize) -> Option<Duration> {
        self.inner.reopens_in(model)
    }
    fn reset_cooldowns(&self) {
        self.inner.reset_cooldowns()
    }
}

/// Model calls, answered as each request's plan says; readiness is pending a few times first.
#[derive(Clone)]
struct Models {
    plans: Arc<HashMap<u64, Vec<Outcome>>>,
    /// Models each request was called with, in order.
    calls: Arc<Mutex<HashMap<u64, Vec<usize>>>>,
    chain: ModelChain,
    pending_polls: u8,
    pending_left: u8,
}

impl Service<ModelRequest<()>> for Models {
    type Response = usize;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<usize, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.pending_left > 0 {
            self.pending_left -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending_left = self.pending_polls;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<()>) -> Self::Future {
        let model = self
            .chain
            .index_of(request.model().expect("the layer sets the model").as_str())
            .expect("a model of the chain");
        let id = request.id().get();
        self.calls
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(model);
        let outcome = self.plans[&id][model];
        Box::pin(async move {
            let fail =
                |status: u16, code: &str| Err(StatusError::new(status).with_code(code).into());
            match outcome {
                Outcome::Ok => Ok(model),
                Outcome::SlowOk => {
                    sleep(Duration::from_secs(3)).await;
                    Ok(model)
                }
                Outcome::Hang => std::future::pending().await,
                Outcome::Throttle => fail(429, "ThrottlingException"),
                Outcome::ThrottleRetryAfter => Err(StatusError::new(429)
                    .with_code("ThrottlingException")
                    .with_retry_after(Duration::from_secs(15))
                    .into()),
                Outcome::Transient => fail(503, "ServiceUnavailableException"),
                Outcome::Rejected => fail(403, "AccessDeniedException"),
                Outcome::Fatal => fail(400, "ValidationException"),
            }
        })
    }
}

fn policy(kind: usize, chain: ModelChain) -> Box<dyn CooldownPolicy> {
    match kind {
        0 => Box::new(AdaptiveCooldown::new(chain)),
        1 => Box::new(PacedCooldown::new(chain)),
        2 => Box::new(ProbingCooldown::new(chain)),
        _ => Box::new(FixedCooldown::new(chain)),
    }
}

fn assert_stats_add_up(svc: &Fallback<Models>) {
    let stats = svc.stats();
    let t = &stats.totals;
    assert_eq!(
        t.requests,
        t.served + t.failed + t.cancelled + t.in_flight,
        "{t:?}"
    );
    for m in &stats.models {
        assert_eq!(
            m.attempts,
            m.successes + m.throttles + m.failures + m.request_errors + m.cancelled + m.in_flight,
            "{m:?}"
        );
    }
}

/// How a request ended.
enum End {
    Served(Vec<usize>),
    Failed(BoxError),
    Cancelled,
}

async fn run(case: Case) {
    let chain = ModelChain::new((0..case.models).map(|i| format!("m{i}"))).unwrap();
    let recorder = Arc::new(Recorder {
        inner: policy(case.policy, chain.clone()),
        hints: AtomicU64::new(0),
        admitted: AtomicU64::new(0),
        outcomes: AtomicU64::new(0),
    });
    let layer = FallbackLayer::builder_shared(recorder.clone())
        .when_all_cooling(case.mode)
        .passes(case.passes)
        .build()
        .unwrap();
    let plans: HashMap<u64, Vec<Outcome>> = case
        .requests
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.outcomes.clone()))
        .collect();
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let svc = layer.layer(Models {
        plans: Arc::new(plans),
        calls: calls.clone(),
        chain: chain.clone(),
        pending_polls: case.pending_polls,
        pending_left: case.pending_polls,
    });
    let origin = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for (i, plan) in case.requests.iter().cloned().enumerate() {
        let svc = svc.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(origin + Duration::from_millis(plan.start_ms)).await;
            let mut request = ModelRequest::new(()).with_id(RequestId::new(i as u64));
            if let Some(ms) = plan.deadline_ms {
                request = request.with_deadline(Instant::now() + Duration::from_millis(ms));
            }
            if let Some(n) = plan.max_attempts {
                request = request.with_max_attempts(n);
            }
            let call = svc.oneshot(request);
            let end = match plan.cancel_after_ms {
                Some(ms) => {
                    tokio::select! {
                        result = call => Some(result),
                        () = sleep(Duration::from_millis(ms)) => None,
                    }
                }
                None => Some(call.await),
            };
            let end = match end {
                Some(Ok(served)) => {
                    let mut models: Vec<usize> = served
                        .failed_attempts()
                        .iter()
                        .map(|a| a.model().as_str()[1..].parse().unwrap())
                        .collect();
                    models.push(*served.response());
                    End::Served(models)
                }
                Some(Err(error)) => End::Failed(error),
                None => End::Cancelled,
            };
            (i, plan, end)
        });
    }
    for (at, model) in case.outside_throttles.iter().copied() {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(origin + Duration::from_millis(at)).await;
            // Straight to the inner policy: it is another layer's throttle, not an attempt here.
            let inner = &recorder.inner;
            let attempt = AttemptInfo::new(model, inner.on_attempt(model, None), None);
            inner.on_throttle(&attempt, Throttle::NONE);
        });
    }

    let mut resolved = HashSet::new();
    let mut answered = 0;
    let waits_possible = case.mode == WhenAllCooling::Wait;
    loop {
        // The identities hold at every step, not only at the end.
        assert_stats_add_up(&svc);
        let next = tokio::select! {
            next = tasks.join_next() => next,
            () = sleep(Duration::from_millis(250)) => continue,
        };
        let Some(joined) = next else { break };
        let (i, plan, end) = joined.unwrap();
        assert!(resolved.insert(i), "request {i} resolved twice");
        // Answered requests are counted by the time their caller sees the answer. (A cancelled
        // request may never have reached the layer: dropped while the service was not ready.)
        if !matches!(end, End::Cancelled) {
            answered += 1;
        }
        let t = svc.stats().totals;
        assert!(t.served + t.failed >= answered, "{t:?}");
        let called = calls
            .lock()
            .unwrap()
            .get(&(i as u64))
            .cloned()
            .unwrap_or_default();
        // A pass tries each model once, and every model before the next pass; a later pass skips
        // the models that rejected the request.
        let (first, later) = called.split_at(called.len().min(case.models));
        for pass in [first, later] {
            let distinct: HashSet<_> = pass.iter().collect();
            assert_eq!(
                distinct.len(),
                pass.len(),
                "request {i} called a model twice in a pass: {called:?}"
            );
        }
        let rejecting = |m: &usize| matches!(plan.outcomes[*m], Outcome::Rejected);
        assert!(!later.iter().any(rejecting), "{called:?}");
        let rejected = plan
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Rejected))
            .count();
        let attempts_per_request =
            case.models + (case.passes as usize - 1) * (case.models - rejected);
        let cap = plan.max_attempts.map_or(attempts_per_request, |n| {
            (n as usize).min(attempts_per_request)
        });
        match end {
            End::Served(models) => {
                assert_eq!(models, called, "the trail is what happened");
                let answered = plan.outcomes[*models.last().unwrap()];
                assert!(
                    matches!(answered, Outcome::Ok | Outcome::SlowOk),
                    "{answered:?}"
                );
            }
            End::Cancelled => {}
            End::Failed(error) => {
                if let Some(err) = error.downcast_ref::<FallbackError>() {
                    let last = err.last().unwrap();
                    let tried = err.attempts().len();
                    // A pass that could not start before the deadline ends the request.
                    let pass_cut = plan.deadline_ms.is_some() && tried == case.models;
                    assert!(
                        last.class() == ErrorClass::Fatal || tried == cap || pass_cut,
                        "request {i} ended with untried models: {err}"
                    );
                } else if error.is::<DeadlineExceeded>() {
                    assert!(plan.deadline_ms.is_some(), "{error}");
                } else if error.is::<CoolingDown>() {
                    assert!(
                        case.mode == WhenAllCooling::FailFast
                            || (waits_possible && plan.deadline_ms.is_some()),
                        "request {i}: {error}"
                    );
                } else {
                    panic!("request {i}: unexpected error {error}");
                }
            }
        }
    }
    assert_eq!(
        resolved.len(),
        case.requests.len(),
        "every request resolved"
    );
    assert_stats_add_up(&svc);
    let stats = svc.stats();
    assert_eq!(stats.totals.in_flight, 0);
    // Every request that reached the layer is counted; one cancelled while the service was not
    // ready never did.
    let requests = stats.totals.requests;
    assert!(
        answered <= requests && requests <= case.requests.len() as u64,
        "{requests}"
    );
    // Every admitted attempt heard exactly one outcome, and no attempt was left running.
    assert_eq!(
        recorder.admitted.load(Ordering::Relaxed),
        recorder.outcomes.load(Ordering::Relaxed)
    );
    // One walk per decision: at most one hint per model for the first pick and for the pick after
    // each attempt, however many times readiness was pending. (Under `Wait` every wake-up is a
    // decision too, and how many there are depends on how often other requests take what the policy
    // hands out, which this test does not observe; tests/readiness.rs checks that case directly.)
    if !waits_possible {
        let attempts: u64 = stats.models.iter().map(|m| m.attempts).sum();
        let decisions = case.requests.len() as u64 + attempts;
        assert!(
            recorder.hints.load(Ordering::Relaxed) <= decisions * case.models as u64,
            "{} hints for {decisions} decisions",
            recorder.hints.load(Ordering::Relaxed)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_layer_keeps_its_promises(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(case));
    }
}

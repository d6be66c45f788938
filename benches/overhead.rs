//! What the layer costs per call, against the bare inner service and tower's own `Retry`.
//!
//! ```text
//! cargo bench --bench overhead
//! ```
//!
//! Inner services answer synchronously (a ready future), so the figures are the middleware's own cost.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::retry::{Policy, Retry};
use tower::{Layer, Service};
use tower_model_fallback::classify::{StatusError, Throttle};
use tower_model_fallback::policy::{
    AdaptiveCooldown, AttemptInfo, CooldownPolicy, Hint, PacedCooldown, Ticket,
};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelId, ModelRequest, TokenCost};

type Body = Arc<str>;

/// Answers at once; fails with a throttle for the models in `throttled`.
#[derive(Clone)]
struct Model {
    throttled: Option<ModelId>,
}

impl Service<ModelRequest<Body>> for Model {
    type Response = usize;
    type Error = StatusError;
    type Future = Ready<Result<usize, StatusError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ModelRequest<Body>) -> Self::Future {
        match (&self.throttled, req.model()) {
            (Some(t), Some(m)) if t == m => ready(Err(StatusError::new(429))),
            _ => ready(Ok(req.body().len())),
        }
    }
}

/// tower's `Retry` doing the same job: on an error, the next model of the chain.
#[derive(Clone)]
struct NextModel {
    chain: Arc<[ModelId]>,
}

impl Policy<ModelRequest<Body>, usize, StatusError> for NextModel {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        req: &mut ModelRequest<Body>,
        result: &mut Result<usize, StatusError>,
    ) -> Option<Self::Future> {
        result.as_ref().err()?;
        let current = req.model()?;
        let next = self.chain.iter().position(|m| m == current)? + 1;
        let model = self.chain.get(next)?.clone();
        *req = req.clone().with_model(model);
        Some(ready(()))
    }

    fn clone_request(&mut self, req: &ModelRequest<Body>) -> Option<ModelRequest<Body>> {
        Some(req.clone())
    }
}

/// Per-model state as a policy keeps it: a cooldown stamp and counters, one cache line per model.
#[derive(Default)]
#[repr(align(64))]
struct ModelCounters {
    cooling_until: AtomicU64,
    successes: AtomicU64,
    throttles: AtomicU64,
}

/// The shared-state work a policy does, around `Model`, so that `Retry` over it is a fair baseline:
/// read the model's cooldown before the call, count the outcome after it with relaxed atomics.
#[derive(Clone)]
struct SharedWork {
    inner: Model,
    chain: Arc<[ModelId]>,
    models: Arc<[ModelCounters]>,
}

impl SharedWork {
    fn new(inner: Model, chain: &ModelChain) -> Self {
        SharedWork {
            inner,
            chain: chain.iter().cloned().collect(),
            models: (0..chain.len()).map(|_| ModelCounters::default()).collect(),
        }
    }
}

impl Service<ModelRequest<Body>> for SharedWork {
    type Response = usize;
    type Error = StatusError;
    type Future = Ready<Result<usize, StatusError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ModelRequest<Body>) -> Self::Future {
        let index = req
            .model()
            .and_then(|m| self.chain.iter().position(|c| c == m))
            .unwrap_or(0);
        let counters = &self.models[index];
        black_box(counters.cooling_until.load(Ordering::Acquire));
        let result = self.inner.call(req).into_inner();
        match &result {
            Ok(_) => counters.successes.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.throttles.fetch_add(1, Ordering::Relaxed),
        };
        ready(result)
    }
}

/// Never cools anything, so that every iteration takes the full fallback path.
#[derive(Debug)]
struct NeverCool(ModelChain);

impl CooldownPolicy for NeverCool {
    fn chain(&self) -> &ModelChain {
        &self.0
    }
    fn hint(&self, _: usize, _: Option<TokenCost>) -> Hint {
        Hint::Available
    }
    fn on_attempt(&self, _: usize, _: Option<TokenCost>) -> Ticket {
        Ticket::default()
    }
    fn on_success(&self, _: &AttemptInfo) {}
    fn on_throttle(&self, _: &AttemptInfo, _: Throttle) -> Duration {
        Duration::ZERO
    }
    fn cooldown_remaining(&self, _: usize) -> Option<Duration> {
        None
    }
    fn reset_cooldowns(&self) {}
}

fn chain(n: usize) -> ModelChain {
    ModelChain::new((0..n).map(|i| format!("model-{i}"))).unwrap()
}

/// Calls `svc` once and polls the response to completion (it is ready at once).
fn call_once<S, T>(svc: &mut S, req: ModelRequest<Body>) -> Option<T>
where
    S: Service<ModelRequest<Body>, Response = T>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return None,
    }
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(t)) => Some(t),
        _ => None,
    }
}

fn happy_path(c: &mut Criterion) {
    let body: Body = Arc::from("hello");
    let models = chain(4);
    let primary = models.primary().clone();
    let mut group = c.benchmark_group("happy_path");

    let mut bare = Model { throttled: None };
    group.bench_function("bare", |b| {
        b.iter(|| {
            call_once(
                &mut bare,
                ModelRequest::new(body.clone()).with_model(primary.clone()),
            )
        })
    });

    let policy = NextModel {
        chain: models.iter().cloned().collect(),
    };
    let mut retry = Retry::new(policy, Model { throttled: None });
    group.bench_function("tower_retry", |b| {
        b.iter(|| {
            call_once(
                &mut retry,
                ModelRequest::new(body.clone()).with_model(primary.clone()),
            )
        })
    });

    let policy = NextModel {
        chain: models.iter().cloned().collect(),
    };
    let mut fair = Retry::new(policy, SharedWork::new(Model { throttled: None }, &models));
    group.bench_function("tower_retry_fair", |b| {
        b.iter(|| {
            call_once(
                &mut fair,
                ModelRequest::new(body.clone()).with_model(primary.clone()),
            )
        })
    });

    let layer = FallbackLayer::new(AdaptiveCooldown::new(models.clone()));
    let mut fallback = layer.layer(Model { throttled: None });
    group.bench_function("fallback", |b| {
        b.iter(|| call_once(&mut fallback, ModelRequest::new(body.clone())))
    });

    // `PacedCooldown` with no model paced: it also counts each success, for its rate measurements.
    let paced = FallbackLayer::new(PacedCooldown::new(models.clone()));
    let mut fallback_paced = paced.layer(Model { throttled: None });
    group.bench_function("fallback_paced_policy", |b| {
        b.iter(|| call_once(&mut fallback_paced, ModelRequest::new(body.clone())))
    });

    // The primary is cooling: every call reads the clock, skips it and is served by the second model.
    let cooling = FallbackLayer::new(AdaptiveCooldown::new(models.clone()));
    let mut throttle_once = cooling.layer(Model {
        throttled: Some(primary.clone()),
    });
    call_once(&mut throttle_once, ModelRequest::new(body.clone()));
    let mut fallback_cooling = cooling.layer(Model { throttled: None });
    group.bench_function("fallback_primary_cooling", |b| {
        b.iter(|| call_once(&mut fallback_cooling, ModelRequest::new(body.clone())))
    });
    group.finish();
}

fn fallback_path(c: &mut Criterion) {
    let body: Body = Arc::from("hello");
    let models = chain(4);
    let primary = models.primary().clone();
    let mut group = c.benchmark_group("fallback_path");

    let policy = NextModel {
        chain: models.iter().cloned().collect(),
    };
    let mut retry = Retry::new(
        policy,
        Model {
            throttled: Some(primary.clone()),
        },
    );
    group.bench_function("tower_retry", |b| {
        b.iter(|| {
            call_once(
                &mut retry,
                ModelRequest::new(body.clone()).with_model(primary.clone()),
            )
        })
    });

    let policy = NextModel {
        chain: models.iter().cloned().collect(),
    };
    let throttled = Model {
        throttled: Some(primary.clone()),
    };
    let mut fair = Retry::new(policy, SharedWork::new(throttled, &models));
    group.bench_function("tower_retry_fair", |b| {
        b.iter(|| {
            call_once(
                &mut fair,
                ModelRequest::new(body.clone()).with_model(primary.clone()),
            )
        })
    });

    let layer = FallbackLayer::new(NeverCool(models.clone()));
    let mut fallback = layer.layer(Model {
        throttled: Some(primary.clone()),
    });
    group.bench_function("fallback", |b| {
        b.iter(|| call_once(&mut fallback, ModelRequest::new(body.clone())))
    });
    group.finish();
}

/// Every model but the last is cooling: the candidate walk reads each model's state.
fn candidate_list(c: &mut Criterion) {
    let body: Body = Arc::from("hello");
    let mut group = c.benchmark_group("candidates_all_but_last_cooling");
    for n in [1usize, 4, 16, 64] {
        let models = chain(n);
        let policy = Arc::new(AdaptiveCooldown::new(models.clone()));
        for i in 0..n - 1 {
            let attempt = AttemptInfo::new(i, policy.on_attempt(i, None), None);
            policy.on_throttle(&attempt, Throttle::NONE);
        }
        let layer = FallbackLayer::builder_shared(policy).build().unwrap();
        let mut svc = layer.layer(Model { throttled: None });
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| call_once(&mut svc, ModelRequest::new(body.clone())))
        });
    }
    group.finish();
}

/// Many tasks on a 2-thread runtime sharing one layer, against one task alone.
fn contention(c: &mut Criterion) {
    const TASKS: usize = 64;
    let body: Body = Arc::from("hello");
    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain(4)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("contention_per_call");
    for tasks in [1usize, TASKS] {
        group.bench_with_input(BenchmarkId::new("tasks", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let per_task = (iters as usize).div_ceil(tasks);
                let start = StdInstant::now();
                runtime.block_on(async {
                    let handles: Vec<_> = (0..tasks)
                        .map(|_| {
                            let mut svc = layer.layer(Model { throttled: None });
                            let body = body.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    black_box(call_once(&mut svc, ModelRequest::new(body.clone())));
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        let _ = handle.await;
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * tasks) as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    happy_path,
    fallback_path,
    candidate_list,
    contention
);
criterion_main!(benches);

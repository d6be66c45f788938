//! Thousands of concurrent requests on a multi-thread runtime with random throttles: every request
//! resolves exactly once, none fails while an untried model is left, and the layer's counters agree
//! with what the model service itself saw.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tower::{Layer, ServiceExt, service_fn};
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::error::FallbackError;
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest};

const REQUESTS: u64 = 4_000;

/// A pseudo-random but reproducible roll in 0..100 for one attempt.
fn roll(request: u64, model: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (request, model).hash(&mut h);
    h.finish() % 100
}

#[test]
fn concurrent_requests_resolve_once_and_counters_add_up() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // What the model service saw, per model: (calls, throttles it answered).
        let seen_by_models = Arc::new(Mutex::new(HashMap::<String, (u64, u64)>::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let models = {
            let (calls, seen) = (calls.clone(), seen_by_models.clone());
            service_fn(move |req: ModelRequest<u64>| {
                calls.fetch_add(1, Ordering::Relaxed);
                let seen = seen.clone();
                async move {
                    tokio::task::yield_now().await;
                    let model = req.model().unwrap().as_str();
                    let throttle_percent = match model {
                        "A" => 40,
                        "B" => 30,
                        _ => 20,
                    };
                    let throttled = roll(*req.body(), model) < throttle_percent;
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(model.to_string()).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(throttled);
                    if throttled {
                        Err(StatusError::new(429).with_code("ThrottlingException"))
                    } else {
                        Ok(*req.body())
                    }
                }
            })
        };
        let chain = ModelChain::new(["A", "B", "C"]).unwrap();
        let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
        let svc = layer.layer(models);

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..REQUESTS {
            let svc = svc.clone();
            tasks.spawn(async move { (i, svc.oneshot(ModelRequest::new(i)).await) });
        }
        let mut seen = vec![0u8; REQUESTS as usize];
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut served_by = HashMap::<String, u64>::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.unwrap();
            seen[i as usize] += 1;
            match result {
                Ok(served) => {
                    assert_eq!(*served.response(), i, "answer belongs to its request");
                    *served_by.entry(served.model().to_string()).or_default() += 1;
                    ok += 1;
                }
                Err(err) => {
                    // Cooldowns started by other requests may make a request skip a model, but
                    // never end it while a model it has not tried could still answer.
                    let err = err.downcast::<FallbackError>().expect("a FallbackError");
                    assert_eq!(err.attempts().len(), 3, "failed with untried models: {err}");
                    failed += 1;
                }
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "every request resolved exactly once"
        );

        let stats = layer.stats();
        let t = &stats.totals;
        assert_eq!(t.requests, REQUESTS);
        assert_eq!(
            (t.served, t.failed, t.cancelled, t.in_flight),
            (ok, failed, 0, 0)
        );
        assert_eq!(
            t.served_by_primary,
            served_by.get("A").copied().unwrap_or(0)
        );
        let seen_by_models = seen_by_models.lock().unwrap();
        for m in &stats.models {
            let (calls, throttles) = seen_by_models
                .get(m.id.as_str())
                .copied()
                .unwrap_or_default();
            let served = served_by.get(m.id.as_str()).copied().unwrap_or(0);
            assert_eq!(
                m.attempts, calls,
                "{}: every attempt reached the model once",
                m.id
            );
            assert_eq!(m.throttles, throttles, "{}", m.id);
            assert_eq!(m.successes, served, "{}", m.id);
            assert_eq!(
                (m.failures, m.cancelled, m.in_flight),
                (0, 0, 0),
                "{}",
                m.id
            );
        }
        assert_eq!(
            stats.models.iter().map(|m| m.attempts).sum::<u64>(),
            calls.load(Ordering::Relaxed)
        );
        assert!(t.served_by_fallback > 0 && t.served_by_primary > 0);
    });
}

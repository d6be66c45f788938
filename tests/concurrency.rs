//! Thousands of concurrent requests on a multi-thread runtime with random throttles: every request
//! resolves exactly once and the counters add up.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower::{Layer, ServiceExt, service_fn};
use tower_model_fallback::classify::StatusError;
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
        let calls = Arc::new(AtomicU64::new(0));
        let models = {
            let calls = calls.clone();
            service_fn(move |req: ModelRequest<u64>| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::task::yield_now().await;
                    let model = req.model().unwrap().as_str();
                    let throttle_percent = match model {
                        "A" => 40,
                        "B" => 30,
                        _ => 20,
                    };
                    if roll(*req.body(), model) < throttle_percent {
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
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.unwrap();
            seen[i as usize] += 1;
            match result {
                Ok(served) => {
                    assert_eq!(*served.response(), i, "answer belongs to its request");
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "every request resolved exactly once"
        );

        let stats = layer.stats();
        let t = &stats.totals;
        assert_eq!(t.requests, REQUESTS);
        assert_eq!((t.served, t.failed), (ok, failed));
        assert_eq!(t.served + t.failed + t.cancelled, t.requests);
        assert_eq!(t.in_flight, 0);
        assert_eq!(t.served_by_primary + t.served_by_fallback, t.served);
        let attempts: u64 = stats.models.iter().map(|m| m.attempts).sum();
        let outcomes: u64 = stats
            .models
            .iter()
            .map(|m| m.successes + m.throttles + m.failures)
            .sum();
        assert_eq!(attempts, outcomes);
        assert_eq!(
            attempts,
            calls.load(Ordering::Relaxed),
            "every attempt reached the service once"
        );
        assert!(
            stats
                .models
                .iter()
                .all(|m| m.in_flight == 0 && m.cancelled == 0)
        );
        assert!(t.served_by_fallback > 0 && t.served_by_primary > 0);
    });
}

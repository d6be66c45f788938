//! How throughput scales with threads: one layer shared by every thread against a layer per thread,
//! so the ratio between them is the cost of sharing itself (writes to cache lines that other cores
//! write too).
//!
//! ```text
//! cargo bench --bench scaling
//! ```
//!
//! Each thread sends `ModelRequest::new` requests through a `Fallback` over a service that answers
//! at once, polling the futures itself (no runtime in the way). Figures are medians of five runs;
//! compare ratios within one run.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tower::{Layer, Service};
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::policy::{AdaptiveCooldown, CooldownPolicy, PacedCooldown};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest};

/// Calls per thread per run.
const CALLS: u32 = 2_000_000;
const RUNS: usize = 5;

/// Answers at once.
#[derive(Clone)]
struct Model;

impl Service<ModelRequest<Arc<str>>> for Model {
    type Response = usize;
    type Error = StatusError;
    type Future = Ready<Result<usize, StatusError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ModelRequest<Arc<str>>) -> Self::Future {
        ready(Ok(req.body().len()))
    }
}

fn layer(policy: &str) -> FallbackLayer {
    let chain =
        ModelChain::new(["primary", "second", "third", "fourth"]).unwrap_or_else(|e| panic!("{e}"));
    let policy: Box<dyn Fn(ModelChain) -> Arc<dyn CooldownPolicy>> = match policy {
        "paced" => Box::new(|c| Arc::new(PacedCooldown::new(c))),
        _ => Box::new(|c| Arc::new(AdaptiveCooldown::new(c))),
    };
    FallbackLayer::builder_shared(policy(chain))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A body of the thread's own: cloning one shared `Arc` would measure its refcount instead. Longer
/// than two cache lines, so that no other thread's body (whose refcount every call writes) can
/// share a line with its refcount, wherever the allocator puts them.
fn thread_body() -> Arc<str> {
    Arc::from("hello ".repeat(24))
}

/// `CALLS` calls through `layer`'s service on this thread.
fn drive(layer: &FallbackLayer) {
    let body = thread_body();
    let mut service = layer.layer(Model);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..CALLS {
        let _ = service.poll_ready(&mut cx);
        let future = service.call(ModelRequest::new(body.clone()));
        match pin!(future).poll(&mut cx) {
            Poll::Ready(result) => {
                black_box(result.is_ok());
            }
            Poll::Pending => unreachable!("the model answers at once"),
        }
    }
}

/// `CALLS` calls of the inner service alone, for the machine's own scaling.
fn drive_bare() {
    let body = thread_body();
    let mut service = Model;
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..CALLS {
        let _ = service.poll_ready(&mut cx);
        let future = service.call(ModelRequest::new(body.clone()));
        if let Poll::Ready(result) = pin!(future).poll(&mut cx) {
            black_box(result.is_ok());
        }
    }
}

/// Nanoseconds per call of the bare service on `threads` threads, median of `RUNS`.
fn measure_bare(threads: usize) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(drive_bare);
                }
            });
            started.elapsed().as_nanos() as f64 / (f64::from(CALLS) * threads as f64)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// Nanoseconds per call, aggregated over `threads` threads (wall time / total calls), median of
/// `RUNS`.
fn measure(threads: usize, shared: bool, policy: &str) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let one = layer(policy);
            let layers: Vec<FallbackLayer> = (0..threads)
                .map(|_| if shared { one.clone() } else { layer(policy) })
                .collect();
            let started = Instant::now();
            std::thread::scope(|scope| {
                for layer in &layers {
                    scope.spawn(move || drive(layer));
                }
            });
            started.elapsed().as_nanos() as f64 / (f64::from(CALLS) * threads as f64)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("| policy | layer | 1 thread: ns/call | 2 threads: ns/call (aggregate) | scaling |");
    println!("|---|---|---|---|---|");
    let (one, two) = (measure_bare(1), measure_bare(2));
    println!(
        "| - | none: the inner service alone | {one:.1} | {two:.1} | {:.2} |",
        one / two
    );
    for policy in ["adaptive", "paced"] {
        for shared in [true, false] {
            let one = measure(1, shared, policy);
            let two = measure(2, shared, policy);
            println!(
                "| {policy} | {} | {one:.1} | {two:.1} | {:.2} |",
                if shared { "shared" } else { "one per thread" },
                one / two
            );
        }
    }
}

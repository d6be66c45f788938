//! How long a throttle seen by one replica takes to reach another through Redis.
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release --features redis --example propagation -- redis://127.0.0.1:6390
//! ```
//!
//! Two replicas in this process, each with its own connection: one throttles a model, the time until
//! the other skips it is one sample; a clearing success back the other way is another.

use std::time::{Duration, Instant};

use tower_model_fallback::ModelChain;
use tower_model_fallback::classify::Throttle;
use tower_model_fallback::cluster::Clustered;
use tower_model_fallback::cluster::redis::RedisCluster;
use tower_model_fallback::policy::{AdaptiveCooldown, AttemptInfo, CooldownPolicy};

const ROUNDS: usize = 500;

fn replica(url: &str) -> Result<(Clustered<AdaptiveCooldown>, RedisCluster), tower::BoxError> {
    let chain = ModelChain::new(["primary", "fallback"])?;
    let (policy, link) = Clustered::new(AdaptiveCooldown::new(chain));
    Ok((policy, RedisCluster::spawn(link, url, "propagation")?))
}

/// Waits until `done`, polling between other tasks (a timer would round up to a millisecond);
/// `None` after a second.
async fn time_until(done: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(1) {
            return None;
        }
        tokio::task::yield_now().await;
    }
    Some(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let (one, _one) = replica(&url)?;
    let (two, _two) = replica(&url)?;
    if time_until(|| one.status().connected && two.status().connected)
        .await
        .is_none()
    {
        return Err(format!("no Redis at {url}").into());
    }
    let mut samples = Vec::with_capacity(2 * ROUNDS);
    let mut lost = 0;
    for _ in 0..ROUNDS {
        let ticket = one.on_attempt(0, None);
        one.on_throttle(&AttemptInfo::new(0, ticket, None), Throttle::NONE);
        match time_until(|| two.cooldown_remaining(0).is_some()).await {
            Some(delay) => samples.push(delay),
            None => lost += 1,
        }
        // Events carry wall-clock milliseconds: a success sent within a millisecond of the
        // throttle cannot be told to be newer, and the stale-success guard keeps the cooldown.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let ticket = two.on_attempt(0, None);
        two.on_success(&AttemptInfo::new(0, ticket, None));
        match time_until(|| one.cooldown_remaining(0).is_none()).await {
            Some(delay) => samples.push(delay),
            None => lost += 1,
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, not delivered within 1 s: {lost}",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

//! Four users share one primary model; user 4 gets throttled. Watch what happens to everyone.
//!
//! Runs on tokio's paused clock, so the 10 s cooldown plays out in an instant:
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest};

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

#[derive(Clone)]
struct Prompt {
    user: u32,
    text: Arc<str>,
}

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), BoxError> {
    // The chain: primary first. The policy is shared by every request.
    let chain = ModelChain::builder()
        .model_named(SONNET, "Claude Sonnet")
        .model_named(HAIKU, "Claude Haiku")
        .build()?;
    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));

    // A stand-in for Bedrock: Sonnet throttles user 4's first request, as a per-minute quota would.
    let heavy_user_throttled = Arc::new(AtomicBool::new(false));
    let bedrock = service_fn(move |req: ModelRequest<Prompt>| {
        let throttle = req.model().is_some_and(|m| m == SONNET)
            && req.body().user == 4
            && !heavy_user_throttled.swap(true, Ordering::Relaxed);
        async move {
            if throttle {
                return Err(StatusError::new(429)
                    .with_code("ThrottlingException")
                    .with_message("Too many requests, please wait before trying again."));
            }
            Ok(format!("an answer to {:?}", &*req.body().text))
        }
    });

    let mut service = ServiceBuilder::new().layer(layer.clone()).service(bedrock);
    let start = Instant::now();
    let mut ask = async |user: u32| -> Result<(), BoxError> {
        let prompt = Prompt {
            user,
            text: Arc::from("hello"),
        };
        let served = service
            .ready()
            .await?
            .call(ModelRequest::new(prompt))
            .await?;
        let trail: Vec<String> = served
            .failed_attempts()
            .iter()
            .map(|a| format!("{} {}", short(a.model().as_str()), a.class()))
            .collect();
        let cooling = layer
            .policy()
            .cooldown_remaining(0)
            .map_or("available".to_string(), |d| {
                format!("cooling, {:.1} s left", d.as_secs_f64())
            });
        println!(
            "t={:>4.1}s  user {user} -> {:<6} {:<24} primary {cooling}",
            start.elapsed().as_secs_f64(),
            short(served.model().as_str()),
            if trail.is_empty() {
                String::new()
            } else {
                format!("(after {})", trail.join(", "))
            },
        );
        Ok(())
    };

    println!("Users 1-3 are served by the primary:");
    for user in 1..=3 {
        ask(user).await?;
    }
    println!("User 4 is throttled on the primary and served by the fallback in the same call:");
    ask(4).await?;
    println!("While more than 2 s of the cooldown remain, new requests start at the fallback:");
    for user in 1..=3 {
        tokio::time::advance(Duration::from_secs(2)).await;
        ask(user).await?;
    }
    println!(
        "With 2 s or less left, the primary is tried again; its success reopens it for everyone:"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    for user in 1..=4 {
        ask(user).await?;
    }

    let stats = layer.stats();
    println!(
        "\n{} requests, {} failed, primary usage {:.0}%",
        stats.totals.requests,
        stats.totals.failed,
        stats.totals.primary_usage.unwrap_or(0.0) * 100.0
    );
    for model in &stats.models {
        println!(
            "  {:<7} {:?}: {} attempts, {} served, {} throttled",
            short(model.id.as_str()),
            model.status,
            model.attempts,
            model.successes,
            model.throttles
        );
    }
    Ok(())
}

fn short(model: &str) -> &str {
    if model == SONNET { "sonnet" } else { "haiku" }
}

//! A standalone fake Bedrock runtime with per-model quotas, latency and faults, so several gateway
//! processes can share one upstream quota (or one broken upstream) in tests and demos.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-gateway --example fake_bedrock -- --listen 127.0.0.1:9000 \
//!     --quota us.anthropic.claude-sonnet-4-20250514-v1:0=60/60000 \
//!     --latency us.anthropic.claude-3-5-haiku-20241022-v1:0=200 \
//!     --fault us.amazon.nova-lite-v1:0=error:ServiceUnavailableException
//! cargo run --release -p tower-model-fallback-gateway -- --endpoint-url http://127.0.0.1:9000 ...
//! cargo run --release -p tower-model-fallback-gateway --example fake_bedrock -- --listen 127.0.0.1:9001 --black-hole
//! ```

use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tower::BoxError;
use tower_model_fallback::testing::{FakeBedrock, Quota, Step};

/// A fake Bedrock runtime on a given address.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// `MODEL=REQUESTS_PER_MINUTE/TOKENS_PER_MINUTE`: calls beyond it are throttled. Repeatable.
    #[arg(long, value_parser = parse_quota)]
    quota: Vec<(String, Quota)>,
    /// `MODEL=MILLISECONDS` before each answer. Repeatable.
    #[arg(long, value_parser = parse_latency)]
    latency: Vec<(String, Duration)>,
    /// `MODEL=throttle`, `MODEL=hang` (accept the request, never answer) or `MODEL=error:CODE`
    /// (a Bedrock error such as `ServiceUnavailableException`), for every call. Repeatable.
    #[arg(long, value_parser = parse_fault)]
    fault: Vec<(String, Step)>,
    /// Accept TCP connections and never read or answer anything, like a black-holed endpoint.
    #[arg(long)]
    black_hole: bool,
}

fn split(arg: &str) -> Result<(String, &str), String> {
    let (model, value) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("expected MODEL=VALUE, not {arg:?}"))?;
    Ok((model.to_string(), value))
}

fn parse_quota(arg: &str) -> Result<(String, Quota), String> {
    let (model, value) = split(arg)?;
    let (requests, tokens) = value
        .split_once('/')
        .ok_or("a quota is REQUESTS_PER_MINUTE/TOKENS_PER_MINUTE")?;
    let requests = requests.parse().map_err(|e| format!("{requests}: {e}"))?;
    let tokens = tokens.parse().map_err(|e| format!("{tokens}: {e}"))?;
    Ok((model, Quota::new(requests, tokens)))
}

fn parse_latency(arg: &str) -> Result<(String, Duration), String> {
    let (model, value) = split(arg)?;
    let ms = value.parse().map_err(|e| format!("{value}: {e}"))?;
    Ok((model, Duration::from_millis(ms)))
}

fn parse_fault(arg: &str) -> Result<(String, Step), String> {
    let (model, value) = split(arg)?;
    let step = match value.split_once(':') {
        Some(("error", code)) => Step::error(code),
        None if value == "throttle" => Step::throttle(),
        None if value == "hang" => Step::hang(),
        _ => {
            return Err(format!(
                "unknown fault {value:?}: throttle, hang or error:CODE"
            ));
        }
    };
    Ok((model, step))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    if args.black_hole {
        println!("black hole on {url}: connections are accepted and never answered");
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        held.push(stream);
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    let mut fake = FakeBedrock::builder();
    for (model, quota) in args.quota {
        fake = fake.quota(&model, quota);
    }
    for (model, latency) in args.latency {
        fake = fake.otherwise(&model, Step::ok().after(latency));
    }
    for (model, fault) in args.fault {
        fake = fake.otherwise(&model, fault);
    }
    let fake = fake.serve(listener)?;
    println!("fake Bedrock on {url}");
    let _ = tokio::signal::ctrl_c().await;
    fake.shutdown().await;
    Ok(())
}

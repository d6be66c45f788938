//! Drives the gateway with concurrent simulated users and prints what happened, so the fallback is
//! visible in the first minute.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-gateway --example load                               # starts its own gateway (fake upstream)
//! cargo run --release -p tower-model-fallback-gateway --example load -- --url http://127.0.0.1:8080 --users 50 --requests 20
//! cargo run --release -p tower-model-fallback-gateway --example load -- --url http://127.0.0.1:8080 --users 64 --requests 1000000 --seconds 30
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::BoxError;
use tower_model_fallback_gateway::{Gateway, GatewayConfig};

/// Concurrent users against a Bedrock-compatible gateway.
#[derive(Parser)]
struct Args {
    /// Gateway to drive; by default one is started in-process on the fake upstream.
    #[arg(long)]
    url: Option<String>,
    /// Chain name (primary model id or alias).
    #[arg(long, default_value = "claude")]
    chain: String,
    /// Concurrent users.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Requests per user, one after another.
    #[arg(long, default_value_t = 10)]
    requests: usize,
    /// Stop sending after this many seconds instead (each user sends at most `--requests`).
    #[arg(long)]
    seconds: Option<f64>,
    /// Bearer API key, if the gateway needs one.
    #[arg(long, env = "GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let gateway = Gateway::new(GatewayConfig::default()).await?;
            println!("started a gateway on {url} (fake upstream, small quota on the primary)");
            tokio::spawn(gateway.serve(listener, std::future::pending()));
            url
        }
    };
    let target = format!("{url}/model/{}/converse", args.chain);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let mut users = tokio::task::JoinSet::new();
    for user in 0..args.users {
        let (client, target, key) = (client.clone(), target.clone(), args.api_key.clone());
        let requests = args.requests;
        let until = args
            .seconds
            .map(|s| started + std::time::Duration::from_secs_f64(s));
        users.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..requests {
                if until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
                let body = format!(
                    r#"{{"messages":[{{"role":"user","content":[{{"text":"user {user} question {i}"}}]}}],"inferenceConfig":{{"maxTokens":200}}}}"#
                );
                let mut request = hyper::Request::post(&target).header("content-type", "application/json");
                if let Some(key) = &key {
                    request = request.header("authorization", format!("Bearer {key}"));
                }
                let outcome = match client.request(request.body(Full::new(Bytes::from(body)))?).await {
                    Ok(response) => {
                        let model = response
                            .headers()
                            .get("x-fallback-model")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        if ok { model.ok_or("no x-fallback-model header")? } else { "(error)".to_string() }
                    }
                    Err(_) => "(unreachable)".to_string(),
                };
                outcomes.push(outcome);
            }
            Ok::<_, BoxError>(outcomes)
        });
    }
    let mut served_by = BTreeMap::<String, usize>::new();
    while let Some(outcomes) = users.join_next().await {
        for model in outcomes?? {
            *served_by.entry(model).or_default() += 1;
        }
    }
    let total: usize = served_by.values().sum();
    let failed: usize = served_by
        .iter()
        .filter(|(m, _)| m.starts_with('('))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{total} requests from {} users in {:.2?}",
        args.users,
        started.elapsed()
    );
    for (model, count) in &served_by {
        println!("  {count:>6}  {model}");
    }
    println!("successes: {}   failures: {failed}", total - failed);
    let (status, stats) = {
        let response = client
            .request(hyper::Request::get(format!("{url}/model_stats")).body(Full::default())?)
            .await?;
        let status = response.status();
        (status, response.into_body().collect().await?.to_bytes())
    };
    if status.is_success() {
        let stats: serde_json::Value = serde_json::from_slice(&stats)?;
        let s = &stats["stats"];
        println!(
            "gateway: primary-model usage {}%, {} served by fallbacks, {} failed",
            s["primary_usage_percent"], s["served_by_fallback"], s["failed"]
        );
    }
    Ok(())
}

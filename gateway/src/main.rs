//! A Bedrock-compatible gateway with fallback. Point any Bedrock SDK's endpoint URL at it.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-gateway                       # embedded fake Bedrock, no AWS account
//! cargo run --release -p tower-model-fallback-gateway -- --upstream bedrock # the real Bedrock, standard credentials
//! cargo run --release -p tower-model-fallback-gateway -- --config gateway.toml --api-key secret --admin-token admin
//! ```

use std::path::PathBuf;

use clap::Parser;
use tokio::net::TcpListener;
use tower::BoxError;
use tower_model_fallback_gateway::{Gateway, GatewayConfig, UpstreamKind, shutdown_signal};

/// Bedrock-compatible gateway: model calls fall back along configured chains when Bedrock throttles.
#[derive(Parser)]
struct Args {
    /// TOML configuration file (chains, display names, policy numbers, listen address, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// `fake` starts an embedded fake Bedrock with a small quota on each primary.
    #[arg(long, value_enum)]
    upstream: Option<UpstreamKind>,
    /// AWS region for `--upstream bedrock`.
    #[arg(long)]
    region: Option<String>,
    /// Require `Authorization: Bearer <key>` on model calls.
    #[arg(long, env = "GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Token for the admin endpoints (they are refused without one).
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long)]
    max_body_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => GatewayConfig::from_file(path)?,
        None => GatewayConfig::default(),
    };
    config.listen = args.listen.unwrap_or(config.listen);
    config.upstream = args.upstream.unwrap_or(config.upstream);
    config.region = args.region.unwrap_or(config.region);
    config.api_key = args.api_key.or(config.api_key);
    config.admin_token = args.admin_token.or(config.admin_token);
    config.max_body_bytes = args.max_body_bytes.unwrap_or(config.max_body_bytes);

    let listener = TcpListener::bind(config.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let gateway = Gateway::new(config).await?;
    println!("{}", gateway.banner(&url));
    gateway.serve(listener, shutdown_signal()).await?;
    println!("gateway stopped");
    Ok(())
}

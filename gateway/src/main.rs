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
use tracing_subscriber::EnvFilter;

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
    /// Upstream endpoint for every model without its own (a VPC endpoint, a proxy, a local server).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Seconds to establish an upstream connection.
    #[arg(long)]
    connect_timeout_s: Option<f64>,
    /// Seconds one model call may take to its answer's headers (a stream: to its first content).
    #[arg(long)]
    attempt_timeout_s: Option<f64>,
    /// Seconds a whole request may take, fallbacks included.
    #[arg(long)]
    request_timeout_s: Option<f64>,
    /// Seconds a client has to send a request's headers (also closes idle keep-alive connections).
    #[arg(long)]
    header_read_timeout_s: Option<f64>,
    /// Seconds a client has to send a request's body; then 408.
    #[arg(long)]
    body_read_timeout_s: Option<f64>,
    /// Seconds a client may accept no bytes of its answer before it is disconnected.
    #[arg(long)]
    idle_timeout_s: Option<f64>,
    /// Seconds requests in flight get to finish after SIGTERM.
    #[arg(long)]
    shutdown_grace_s: Option<f64>,
    /// Open client connections at most (default: half the open-files limit, at most 10,000).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Model requests in flight at most; beyond it, 429 at once.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Bytes of request bodies buffered at once across clients; beyond it, 429 at once.
    #[arg(long)]
    max_buffered_body_bytes: Option<usize>,
    /// Token that `/metrics` and `/model_stats` require when set.
    #[arg(long, env = "GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Redis shared by the gateway's replicas: throttle state is shared per chain (adaptive and
    /// paced policies).
    #[arg(long, env = "GATEWAY_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of the Redis keys and channels (replicas that share it share their state).
    #[arg(long)]
    redis_namespace: Option<String>,
    /// Log lines as text or as JSON objects; the level comes from `RUST_LOG` (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    init_logs(args.log_format);
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
    config.endpoint_url = args.endpoint_url.or(config.endpoint_url);
    config.connect_timeout_s = args.connect_timeout_s.unwrap_or(config.connect_timeout_s);
    config.attempt_timeout_s = args.attempt_timeout_s.unwrap_or(config.attempt_timeout_s);
    config.request_timeout_s = args.request_timeout_s.unwrap_or(config.request_timeout_s);
    config.header_read_timeout_s = args
        .header_read_timeout_s
        .unwrap_or(config.header_read_timeout_s);
    config.body_read_timeout_s = args
        .body_read_timeout_s
        .unwrap_or(config.body_read_timeout_s);
    config.idle_timeout_s = args.idle_timeout_s.unwrap_or(config.idle_timeout_s);
    config.shutdown_grace_s = args.shutdown_grace_s.unwrap_or(config.shutdown_grace_s);
    config.max_connections = args.max_connections.or(config.max_connections);
    config.max_in_flight = args.max_in_flight.unwrap_or(config.max_in_flight);
    config.max_buffered_body_bytes = args
        .max_buffered_body_bytes
        .unwrap_or(config.max_buffered_body_bytes);
    config.metrics_token = args.metrics_token.or(config.metrics_token);
    config.redis_url = args.redis_url.or(config.redis_url);
    config.redis_namespace = args.redis_namespace.unwrap_or(config.redis_namespace);

    let listener = TcpListener::bind(config.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let gateway = Gateway::new(config).await?;
    println!("{}", gateway.banner(&url));
    gateway.serve(listener, shutdown_signal()).await?;
    println!("gateway stopped");
    Ok(())
}

//! A Bedrock-compatible HTTP gateway with fallback, built on `tower-model-fallback`.
//!
//! Any Bedrock client (the AWS SDKs for Rust, Python, JS, ...) gets fallback by changing only its
//! endpoint URL: the gateway serves `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke` and
//! `/invoke-with-response-stream` in Bedrock's wire format, where `{modelId}` names a configured chain by
//! its primary model id or alias, and sends each request down that chain with a [`Fallback`] layer over
//! an upstream service that forwards the raw request to the model of each attempt. Answers (event streams
//! included) are passed through untouched, with two headers added: `x-fallback-model` (the model that
//! answered) and `x-fallback-attempts`.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /` | a live status page: each chain's models, status, cooldown countdown, calls, throttles, success rate, and the primary's share over the last 10 minutes |
//! | `GET /model_stats` | JSON stats: per model status, cooldown, counters, success rate; per chain the primary's share over the last 10 minutes; totals |
//! | `POST /reset_model_cooldowns` | ends every cooldown (needs `Authorization: Bearer <admin token>`) |
//! | `GET /healthz` | `ok` |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors use Bedrock's format (status, `x-amzn-errortype`, `{"message": ...}`), so SDKs parse them
//! into their usual error variants: a missing or wrong API key is a 403 `AccessDeniedException`, an
//! unknown chain a 404 `ResourceNotFoundException`, malformed JSON a 400 `ValidationException`, an
//! oversized body a 413 `ValidationException`, a body too slow a 408, a request over the gateway's
//! limits a 429 `ThrottlingException`. Logs never contain prompts or keys.
//!
//! Every wait has a bound and every set of connections a limit: upstream connect, attempt and request
//! timeouts; client header, body and stalled-write timeouts; open connections, requests in flight and
//! buffered body bytes; a shutdown grace. Upstream models that keep failing are ejected
//! ([`OutlierEjection`](tower_model_fallback::policy::OutlierEjection)) and fallbacks are bounded by a
//! retry budget ([`FallbackBudget`](tower_model_fallback::FallbackBudget)). The crate's README lists
//! every option with its default and what the gateway does under each fault.
//!
//! [`Fallback`]: tower_model_fallback::Fallback

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::net::TcpListener;
use tower::BoxError;

use tower_model_fallback::Fallback;
use tower_model_fallback::FallbackLayer;
use tower_model_fallback::testing::{FakeBedrock, Quota};

mod config;
mod in_flight;
mod metrics;
mod routes;
mod server;
mod share_history;
mod shared_state;
mod upstream;

pub use config::{
    ChainConfig, FakeConfig, GatewayConfig, GatewayConfigError, ModelConfig, PolicyConfig,
    UpstreamKind,
};
use config::{Timeouts, bedrock_endpoint};
use metrics::{AttemptLatency, Metrics};
use server::ServerLimits;
use share_history::{SAMPLE_EVERY, Sample, ShareHistory};
use shared_state::SharedState;
use tokio::sync::Semaphore;
use upstream::{Target, Upstream, UpstreamErrors};

/// One configured chain and the service that walks it.
struct ChainRoute {
    alias: Option<String>,
    layer: FallbackLayer<UpstreamErrors>,
    service: Fallback<Upstream, UpstreamErrors>,
    share_history: ShareHistory,
    /// The link to the other replicas, with `redis_url`.
    shared: Option<SharedState>,
}

impl ChainRoute {
    /// The name clients use: the alias, or else the primary's id.
    fn name(&self) -> String {
        self.alias
            .clone()
            .unwrap_or_else(|| self.layer.policy().chain().primary().to_string())
    }
}

/// What the request handlers share.
pub(crate) struct AppState {
    chains: Vec<ChainRoute>,
    /// Primary ids and aliases to chain positions.
    names: HashMap<String, usize>,
    api_key: Option<String>,
    admin_token: Option<String>,
    metrics_token: Option<String>,
    max_body_bytes: usize,
    timeouts: Timeouts,
    /// One permit per model request being served (`max_in_flight`).
    in_flight: Arc<Semaphore>,
    /// One permit per byte of request body buffered (`max_buffered_body_bytes`).
    body_memory: Arc<Semaphore>,
    metrics: Metrics,
}

impl AppState {
    fn chain(&self, name: &str) -> Option<&ChainRoute> {
        self.names.get(name).and_then(|&i| self.chains.get(i))
    }
}

/// A configured gateway, ready to serve.
pub struct Gateway {
    state: Arc<AppState>,
    config: GatewayConfig,
    fake: Option<FakeBedrock>,
    limits: ServerLimits,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("fake", &self.fake)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates `config` and connects the upstream: for [`UpstreamKind::Fake`] it starts the embedded
    /// fake Bedrock on loopback, with `config.fake`'s quota on each chain's primary.
    pub async fn new(config: GatewayConfig) -> Result<Gateway, BoxError> {
        let chains = config.model_chains()?;
        let when_all_cooling = config.when_all_cooling()?;
        let pass_backoff = config.pass_backoff()?;
        let timeouts = config.timeouts()?;
        config.check_endpoints()?;
        let (fake, credentials) = match config.upstream {
            UpstreamKind::Fake => {
                let quota = Quota::new(
                    config.fake.primary_requests_per_minute,
                    config.fake.primary_tokens_per_minute,
                );
                let fake = chains
                    .iter()
                    .fold(FakeBedrock::builder(), |b, (_, chain)| {
                        b.quota(chain.primary().as_str(), quota)
                    })
                    .start()
                    .await?;
                (Some(fake), None)
            }
            UpstreamKind::Bedrock => {
                let region = aws_config::Region::new(config.region.clone());
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(region)
                    .load()
                    .await;
                let credentials: SharedCredentialsProvider = sdk.credentials_provider().ok_or(
                    "no AWS credentials found (environment, profile, SSO or instance role)",
                )?;
                (None, Some(credentials))
            }
        };
        let targets = targets(&config, fake.as_ref(), credentials)?;
        let latency = AttemptLatency::default();
        let upstream = Upstream::new(targets, timeouts.connect, timeouts.attempt, latency.clone())?;
        let mut names = HashMap::new();
        let mut routes = Vec::new();
        for (index, (alias, chain)) in chains.into_iter().enumerate() {
            for name in std::iter::once(chain.primary().to_string()).chain(alias.clone()) {
                if names.insert(name.clone(), index).is_some() {
                    return Err(GatewayConfigError::Invalid(format!(
                        "chain name {name:?} is used twice"
                    ))
                    .into());
                }
            }
            let name = alias.clone().unwrap_or_else(|| chain.primary().to_string());
            let (policy, shared) = config.policy(chain, &name)?;
            let builder = FallbackLayer::builder_shared(policy)
                .when_all_cooling(when_all_cooling)
                .passes(config.policy.passes)
                .pass_backoff(pass_backoff)
                .classify_responses(UpstreamErrors);
            // Each chain has its own budget: one chain's outage must not spend another's.
            let builder = match config.retry_budget()? {
                Some(budget) => builder.retry_budget(budget),
                None => builder,
            };
            let layer = builder.build()?;
            let service = tower::Layer::layer(&layer, upstream.clone());
            routes.push(ChainRoute {
                alias,
                layer,
                service,
                share_history: ShareHistory::default(),
                shared,
            });
        }
        let metrics = Metrics::new(
            routes
                .iter()
                .map(|c| {
                    (
                        c.name(),
                        c.layer.clone(),
                        c.shared.as_ref().map(SharedState::handle),
                    )
                })
                .collect(),
            latency,
        );
        let max_connections = config
            .max_connections
            .unwrap_or_else(server::default_max_connections);
        let limits = ServerLimits {
            max_connections,
            header_read_timeout: timeouts.header_read,
            idle_timeout: timeouts.idle,
            shutdown_grace: timeouts.shutdown_grace,
        };
        if max_connections == 0 || config.max_in_flight == 0 {
            return Err(GatewayConfigError::Invalid(
                "max_connections and max_in_flight must be above zero".into(),
            )
            .into());
        }
        if config.max_buffered_body_bytes < config.max_body_bytes {
            return Err(GatewayConfigError::Invalid(
                "max_buffered_body_bytes must be at least max_body_bytes".into(),
            )
            .into());
        }
        let state = AppState {
            chains: routes,
            names,
            api_key: config.api_key.clone(),
            admin_token: config.admin_token.clone(),
            metrics_token: config.metrics_token.clone(),
            max_body_bytes: config.max_body_bytes,
            timeouts,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            body_memory: Arc::new(Semaphore::new(
                config.max_buffered_body_bytes.min(Semaphore::MAX_PERMITS),
            )),
            metrics,
        };
        let state = Arc::new(state);
        tokio::spawn(sample_share_history(Arc::downgrade(&state)));
        Ok(Gateway {
            state,
            config,
            fake,
            limits,
        })
    }

    /// The axum router, to serve or to nest in your own app.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// A handle to the embedded fake Bedrock, when the upstream is `fake`: script it, count its calls.
    pub fn fake(&self) -> Option<FakeBedrock> {
        self.fake.clone()
    }

    /// A one-screen description: chains and a request to try.
    pub fn banner(&self, url: &str) -> String {
        let mut text = format!(
            "tower-model-fallback gateway on {url} (upstream: {:?})\n",
            self.config.upstream
        );
        for chain in &self.state.chains {
            let models: Vec<String> = chain
                .layer
                .policy()
                .chain()
                .iter()
                .map(ToString::to_string)
                .collect();
            let alias = chain
                .alias
                .as_deref()
                .map(|a| format!(" (alias {a})"))
                .unwrap_or_default();
            text.push_str(&format!("  chain{alias}: {}\n", models.join(" -> ")));
        }
        let name = self
            .state
            .chains
            .first()
            .map_or_else(String::new, ChainRoute::name);
        let auth = self
            .config
            .api_key
            .as_ref()
            .map(|_| " -H 'Authorization: Bearer $API_KEY'")
            .unwrap_or_default();
        text.push_str(&format!(
            "try: curl -s{auth} -H 'content-type: application/json' {url}/model/{name}/converse \
             -d '{{\"messages\":[{{\"role\":\"user\",\"content\":[{{\"text\":\"hi\"}}]}}]}}'\n\
             stats: curl -s {url}/model_stats"
        ));
        text
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting and lets requests in
    /// flight finish for `shutdown_grace_s`; whatever is still open then is cut.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(listener, self.router(), self.limits, shutdown).await;
        // The fake upstream stays up until every request through it has finished.
        drop(self);
        Ok(())
    }
}

/// Where each chain entry's calls go: its own endpoint or region, else the gateway's.
fn targets(
    config: &GatewayConfig,
    fake: Option<&FakeBedrock>,
    credentials: Option<SharedCredentialsProvider>,
) -> Result<HashMap<String, Target>, GatewayConfigError> {
    let mut targets: HashMap<String, Target> = HashMap::new();
    for model in config.chains.iter().flat_map(|c| &c.models) {
        let region = model.region.as_deref().unwrap_or(&config.region);
        let base = match (&model.endpoint_url, fake) {
            (Some(url), _) => url.clone(),
            (None, Some(fake)) => fake.endpoint_url(),
            (None, None) => match (&model.region, &config.endpoint_url) {
                (None, Some(url)) => url.clone(),
                _ => bedrock_endpoint(region),
            },
        };
        let target = match &credentials {
            Some(credentials) => Target::signed(&base, &model.id, region, credentials.clone()),
            None => Target::unsigned(&base, &model.id),
        };
        if let Some(known) = targets.get(model.key())
            && format!("{known:?}") != format!("{target:?}")
        {
            return Err(GatewayConfigError::Invalid(format!(
                "model key {:?} names two different targets; give one of them its own key",
                model.key()
            )));
        }
        targets.insert(model.key().to_string(), target);
    }
    Ok(targets)
}

/// Samples every chain's totals for the status page's chart until the gateway is dropped.
async fn sample_share_history(state: std::sync::Weak<AppState>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else { return };
        for chain in &state.chains {
            chain
                .share_history
                .record(Sample::now(&chain.layer.stats().totals));
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn chain_entries_reach_their_own_region_or_endpoint() {
        let config = GatewayConfig::from_toml(
            r#"
            region = "eu-west-1"
            endpoint_url = "https://vpce.example"
            [[chains]]
            models = [
                { id = "m" },
                { id = "m", key = "m-west", region = "us-west-2" },
                { id = "m", key = "m-local", endpoint_url = "http://127.0.0.1:9000" },
            ]
            "#,
        )
        .unwrap();
        let credentials =
            SharedCredentialsProvider::new(Credentials::new("AKID", "secret", None, None, "test"));
        let targets = targets(&config, None, Some(credentials)).unwrap();
        let shown = |key: &str| format!("{:?}", targets[key]);
        assert_eq!(
            shown("m"),
            r#"Target { base: "https://vpce.example", model_id: "m", signing_region: Some("eu-west-1") }"#
        );
        assert_eq!(
            shown("m-west"),
            r#"Target { base: "https://bedrock-runtime.us-west-2.amazonaws.com", model_id: "m", signing_region: Some("us-west-2") }"#
        );
        assert_eq!(
            shown("m-local"),
            r#"Target { base: "http://127.0.0.1:9000", model_id: "m", signing_region: Some("eu-west-1") }"#
        );
    }
}

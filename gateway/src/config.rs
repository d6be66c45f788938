//! Gateway configuration: a TOML file, overridden by command-line flags, with defaults that work
//! out of the box.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::shared_state::SharedState;
use tower_model_fallback::WhenAllCooling;
use tower_model_fallback::error::ConfigError;
use tower_model_fallback::policy::{
    AdaptiveCooldown, CooldownPolicy, OutlierEjection, PacedCooldown, PolicyKind, ProbingCooldown,
    Tier,
};
use tower_model_fallback::{FallbackBudget, ModelChain};

/// Where the gateway sends model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// An embedded fake Bedrock on loopback, with a small quota on each chain's primary.
    #[default]
    Fake,
    /// The real Bedrock runtime, signed with the standard AWS credential chain.
    Bedrock,
}

/// One model of a chain.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Bedrock model or inference profile id.
    pub id: String,
    /// Display name for stats.
    #[serde(default)]
    pub name: Option<String>,
    /// The entry's name in the chain: in stats, metrics and `x-fallback-model` (default: `id`). Needed
    /// when a chain holds the same model twice, in two regions.
    #[serde(default)]
    pub key: Option<String>,
    /// AWS region of this entry (default: the gateway's `region`).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint of this entry (default: the region's Bedrock runtime, or the gateway's `endpoint_url`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

impl ModelConfig {
    /// The entry's key in its chain.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.id)
    }
}

/// A fallback chain. Requests name it by its primary model id or by its alias.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ChainConfig {
    /// Another name for the chain in request paths, such as `claude`.
    #[serde(default)]
    pub alias: Option<String>,
    /// Models in priority order.
    pub models: Vec<ModelConfig>,
}

/// Which cooldown policy every chain uses, and its numbers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A [`PolicyKind`] name: `adaptive` (the default), `paced`, `probing` (adaptive plus probes
    /// every 1-8 s) or `fixed` (the naive global block, with its default 60 s).
    pub kind: String,
    /// `paced`: the share of the measured rate to pace a throttled model at.
    pub pace_margin: f64,
    /// `paced`: seconds' worth of the pace that may start at once after a lull.
    pub pace_burst_s: f64,
    /// `paced`: seconds without a throttle before a paced model is open again.
    pub pace_quiet_s: f64,
    /// `adaptive`: window in which throttles are counted, in seconds.
    pub window_s: f64,
    /// `adaptive`: `[throttles, cooldown seconds]` pairs.
    pub tiers: Vec<(u32, f64)>,
    /// `adaptive`: new requests skip a model while more than this many seconds of cooldown remain.
    pub skip_threshold_s: f64,
    /// `try_anyway`, `fail_fast` or `wait`.
    pub when_all_cooling: String,
    /// Passes through the chain before a request fails: after every model failed, wait and try
    /// them again (1: each model once).
    pub passes: u32,
    /// The longest wait before the second pass, in seconds (doubled for each further one); each
    /// request waits between half and all of it.
    pub pass_backoff_s: f64,
    /// Transient failures in a row (connect errors, timeouts, 5xx) that eject a model; 0 turns outlier
    /// ejection off.
    pub eject_after_failures: u32,
    /// The first ejection, in seconds; each ejection in a row doubles it.
    pub ejection_s: f64,
    /// The longest ejection, in seconds.
    pub max_ejection_s: f64,
    /// Fallback attempts allowed beyond each request's first, as a percentage of the requests of the
    /// last 10 s; 0 turns the retry budget off.
    pub retry_budget_percent: f64,
    /// Fallback attempts per second always allowed, on top of the percentage.
    pub retry_budget_min_per_s: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            kind: "adaptive".into(),
            pace_margin: 0.95,
            pace_burst_s: 2.0,
            pace_quiet_s: 60.0,
            window_s: 60.0,
            tiers: vec![(1, 10.0), (2, 30.0), (4, 60.0)],
            skip_threshold_s: 2.0,
            when_all_cooling: "try_anyway".into(),
            passes: 1,
            pass_backoff_s: 1.0,
            eject_after_failures: 5,
            ejection_s: 10.0,
            max_ejection_s: 300.0,
            retry_budget_percent: 20.0,
            retry_budget_min_per_s: 100,
        }
    }
}

/// The embedded fake upstream's quota on each chain's primary model (the others are generous).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    /// Requests per minute on each primary.
    pub primary_requests_per_minute: u32,
    /// Tokens per minute on each primary.
    pub primary_tokens_per_minute: u32,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            primary_requests_per_minute: 60,
            primary_tokens_per_minute: 60_000,
        }
    }
}

/// Everything the gateway needs.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Upstream kind.
    pub upstream: UpstreamKind,
    /// AWS region of the real Bedrock upstream.
    pub region: String,
    /// When set, model calls need `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Token for the admin endpoints; without one they are refused.
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Bedrock runtime endpoint for every model without its own (`https://bedrock-runtime.{region}.amazonaws.com`
    /// by default): a VPC endpoint, a proxy, or a local Bedrock-compatible server (`http://` allowed).
    pub endpoint_url: Option<String>,
    /// Seconds to establish an upstream connection (TCP and TLS).
    pub connect_timeout_s: f64,
    /// Seconds one model call may take to answer: to its response headers, and for streams to their
    /// first content event. A timed-out attempt falls back.
    pub attempt_timeout_s: f64,
    /// Seconds a whole request may take, fallbacks included: its deadline.
    pub request_timeout_s: f64,
    /// Seconds a client has to send a request's headers, counted from when the connection waits for
    /// a request (so it also closes idle keep-alive connections).
    pub header_read_timeout_s: f64,
    /// Seconds a client has to send a request's body once its headers are in; then 408.
    pub body_read_timeout_s: f64,
    /// Seconds a client may go without accepting any bytes of its answer before it is disconnected.
    pub idle_timeout_s: f64,
    /// Seconds requests in flight get to finish after SIGTERM; then they are cut and the process exits.
    pub shutdown_grace_s: f64,
    /// Open client connections at most; further clients wait in the listen backlog. Default: half
    /// the process's file-descriptor limit, at most 10,000.
    pub max_connections: Option<usize>,
    /// Model requests in flight at most; beyond it clients get a 429 `ThrottlingException` at once.
    pub max_in_flight: usize,
    /// Bytes of request bodies buffered at once, across all clients; beyond it clients get a 429.
    pub max_buffered_body_bytes: usize,
    /// When set, `/metrics` and `/model_stats` need `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// Redis shared by the gateway's replicas (`redis://host:6379`): each chain's throttle state is
    /// shared with the replicas that use the same namespace (adaptive policy only).
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys and channels; each chain adds its name.
    pub redis_namespace: String,
    /// Fallback chains.
    pub chains: Vec<ChainConfig>,
    /// Cooldown policy numbers, shared by every chain.
    pub policy: PolicyConfig,
    /// The fake upstream.
    pub fake: FakeConfig,
}

// Keys stay out of logs and debug output.
impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("region", &self.region)
            .field("api_key", &redact(&self.api_key))
            .field("admin_token", &redact(&self.admin_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("endpoint_url", &self.endpoint_url)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("attempt_timeout_s", &self.attempt_timeout_s)
            .field("request_timeout_s", &self.request_timeout_s)
            .field("header_read_timeout_s", &self.header_read_timeout_s)
            .field("body_read_timeout_s", &self.body_read_timeout_s)
            .field("idle_timeout_s", &self.idle_timeout_s)
            .field("shutdown_grace_s", &self.shutdown_grace_s)
            .field("max_connections", &self.max_connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_buffered_body_bytes", &self.max_buffered_body_bytes)
            .field("metrics_token", &redact(&self.metrics_token))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_namespace", &self.redis_namespace)
            .field("chains", &self.chains)
            .field("policy", &self.policy)
            .field("fake", &self.fake)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let model = |id: &str, name: &str| ModelConfig {
            id: id.into(),
            name: Some(name.into()),
            ..ModelConfig::default()
        };
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: UpstreamKind::Fake,
            region: "us-east-1".into(),
            api_key: None,
            admin_token: None,
            max_body_bytes: 1024 * 1024,
            endpoint_url: None,
            connect_timeout_s: 3.0,
            attempt_timeout_s: 60.0,
            request_timeout_s: 300.0,
            header_read_timeout_s: 10.0,
            body_read_timeout_s: 30.0,
            idle_timeout_s: 60.0,
            shutdown_grace_s: 30.0,
            max_connections: None,
            max_in_flight: 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            metrics_token: None,
            redis_url: None,
            redis_namespace: "tower-model-fallback".into(),
            chains: vec![ChainConfig {
                alias: Some("claude".into()),
                models: vec![
                    model(
                        "us.anthropic.claude-sonnet-4-20250514-v1:0",
                        "Claude Sonnet 4",
                    ),
                    model(
                        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                        "Claude 3.5 Haiku",
                    ),
                    model("us.amazon.nova-lite-v1:0", "Amazon Nova Lite"),
                ],
            }],
            policy: PolicyConfig::default(),
            fake: FakeConfig::default(),
        }
    }
}

/// The gateway's timeouts; see the fields of [`GatewayConfig`] of the same names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) attempt: Duration,
    pub(crate) request: Duration,
    pub(crate) header_read: Duration,
    pub(crate) body_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// A configuration problem, reported before the gateway starts.
#[derive(Debug)]
#[non_exhaustive]
pub enum GatewayConfigError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML for this configuration.
    Parse(String),
    /// A chain or the policy numbers are invalid.
    Invalid(String),
}

impl fmt::Display for GatewayConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConfigError::Read(path, err) => {
                write!(f, "cannot read {}: {err}", path.display())
            }
            GatewayConfigError::Parse(err) => write!(f, "invalid configuration: {err}"),
            GatewayConfigError::Invalid(err) => write!(f, "invalid configuration: {err}"),
        }
    }
}

impl std::error::Error for GatewayConfigError {}

impl From<ConfigError> for GatewayConfigError {
    fn from(err: ConfigError) -> Self {
        GatewayConfigError::Invalid(err.to_string())
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, GatewayConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        GatewayConfigError::Invalid(format!(
            "{name} must be a non-negative number of seconds, not {value}"
        ))
    })
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`: it becomes part of a host name.
fn check_region(region: &str) -> Result<(), GatewayConfigError> {
    let parts: Vec<&str> = region.split('-').collect();
    let well_formed = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if well_formed {
        Ok(())
    } else {
        Err(GatewayConfigError::Invalid(format!(
            "{region:?} is not an AWS region name (such as us-east-1)"
        )))
    }
}

/// An `http://` or `https://` URL with a host and no query.
fn check_endpoint_url(url: &str) -> Result<(), GatewayConfigError> {
    let invalid = || {
        GatewayConfigError::Invalid(format!(
            "endpoint_url {url:?} must be an http:// or https:// URL with a host"
        ))
    };
    let uri: axum::http::Uri = url.parse().map_err(|_| invalid())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if scheme_ok && uri.host().is_some_and(|h| !h.is_empty()) && uri.query().is_none() {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// The Bedrock runtime endpoint of `region`.
pub(crate) fn bedrock_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

impl GatewayConfig {
    /// Parses a TOML document; missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, GatewayConfigError> {
        toml::from_str(text).map_err(|e| GatewayConfigError::Parse(e.to_string()))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, GatewayConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| GatewayConfigError::Read(path.into(), e))?;
        GatewayConfig::from_toml(&text)
    }

    /// The chains as validated [`ModelChain`]s, with their aliases.
    pub(crate) fn model_chains(
        &self,
    ) -> Result<Vec<(Option<String>, ModelChain)>, GatewayConfigError> {
        if self.chains.is_empty() {
            return Err(ConfigError::EmptyChain.into());
        }
        self.chains
            .iter()
            .map(|c| {
                let chain = c
                    .models
                    .iter()
                    .fold(ModelChain::builder(), |b, m| match &m.name {
                        Some(name) => b.model_named(m.key(), name),
                        None => b.model(m.key()),
                    })
                    .build()?;
                Ok((c.alias.clone(), chain))
            })
            .collect()
    }

    /// A policy for `chain` with the configured kind and numbers; with `redis_url`, shared with the
    /// other replicas under `{redis_namespace}:{chain_name}`.
    pub(crate) fn policy(
        &self,
        chain: ModelChain,
        chain_name: &str,
    ) -> Result<(Arc<dyn CooldownPolicy>, Option<SharedState>), GatewayConfigError> {
        let p = &self.policy;
        let adaptive = |chain| -> Result<AdaptiveCooldown, GatewayConfigError> {
            let tiers = p
                .tiers
                .iter()
                .map(|(n, s)| Ok(Tier::new(*n, seconds("tier cooldown", *s)?)))
                .collect::<Result<Vec<_>, GatewayConfigError>>()?;
            Ok(AdaptiveCooldown::builder()
                .window(seconds("window_s", p.window_s)?)
                .tiers(tiers)
                .skip_threshold(seconds("skip_threshold_s", p.skip_threshold_s)?)
                .build(chain)?)
        };
        let paced = |chain| -> Result<PacedCooldown, GatewayConfigError> {
            Ok(PacedCooldown::builder()
                .margin(p.pace_margin)
                .burst(seconds("pace_burst_s", p.pace_burst_s)?)
                .quiet(seconds("pace_quiet_s", p.pace_quiet_s)?)
                .build(chain)?)
        };
        let kind = p.kind.parse::<PolicyKind>()?;
        let namespace = format!("{}:{chain_name}", self.redis_namespace);
        let mut shared = None;
        let policy: Arc<dyn CooldownPolicy> = match (kind, &self.redis_url) {
            (PolicyKind::Adaptive, Some(url)) => {
                let (policy, state) = SharedState::share(adaptive(chain)?, url, &namespace)?;
                shared = Some(state);
                policy
            }
            (PolicyKind::Paced, Some(url)) => {
                let (policy, state) = SharedState::share(paced(chain)?, url, &namespace)?;
                shared = Some(state);
                policy
            }
            (kind, Some(_)) => {
                return Err(GatewayConfigError::Invalid(format!(
                    "redis_url shares the adaptive and paced policies' state; policy kind {kind} cannot be shared"
                )));
            }
            (PolicyKind::Adaptive, None) => Arc::new(adaptive(chain)?),
            (PolicyKind::Probing, None) => Arc::new(ProbingCooldown::with_probes(
                adaptive(chain)?,
                Duration::from_secs(1),
                Duration::from_secs(8),
            )?),
            (PolicyKind::Paced, None) => Arc::new(paced(chain)?),
            (other, None) => other.with_defaults(chain),
        };
        if p.eject_after_failures == 0 {
            return Ok((policy, shared));
        }
        let ejecting = OutlierEjection::builder()
            .consecutive_failures(p.eject_after_failures)
            .base_ejection(seconds("ejection_s", p.ejection_s)?)
            .max_ejection(seconds("max_ejection_s", p.max_ejection_s)?)
            .wrap(policy)?;
        Ok((Arc::new(ejecting), shared))
    }

    /// Checks the regions and endpoint URLs of the gateway and of every chain entry.
    pub(crate) fn check_endpoints(&self) -> Result<(), GatewayConfigError> {
        check_region(&self.region)?;
        if let Some(url) = &self.endpoint_url {
            check_endpoint_url(url)?;
        }
        for model in self.chains.iter().flat_map(|c| &c.models) {
            if let Some(region) = &model.region {
                check_region(region)?;
            }
            if let Some(url) = &model.endpoint_url {
                check_endpoint_url(url)?;
            }
        }
        Ok(())
    }

    /// The timeouts, each a positive number of seconds.
    pub(crate) fn timeouts(&self) -> Result<Timeouts, GatewayConfigError> {
        let positive = |name: &str, value: f64| {
            seconds(name, value).and_then(|d| {
                if d.is_zero() {
                    Err(GatewayConfigError::Invalid(format!(
                        "{name} must be above zero"
                    )))
                } else {
                    Ok(d)
                }
            })
        };
        Ok(Timeouts {
            connect: positive("connect_timeout_s", self.connect_timeout_s)?,
            attempt: positive("attempt_timeout_s", self.attempt_timeout_s)?,
            request: positive("request_timeout_s", self.request_timeout_s)?,
            header_read: positive("header_read_timeout_s", self.header_read_timeout_s)?,
            body_read: positive("body_read_timeout_s", self.body_read_timeout_s)?,
            idle: positive("idle_timeout_s", self.idle_timeout_s)?,
            shutdown_grace: seconds("shutdown_grace_s", self.shutdown_grace_s)?,
        })
    }

    /// The retry budget shared by a chain's requests, or `None` when it is off.
    pub(crate) fn retry_budget(&self) -> Result<Option<FallbackBudget>, GatewayConfigError> {
        let percent = self.policy.retry_budget_percent;
        if percent == 0.0 {
            return Ok(None);
        }
        if !(percent > 0.0 && percent <= 1000.0) {
            return Err(GatewayConfigError::Invalid(format!(
                "retry_budget_percent must be between 0 and 1000, not {percent}"
            )));
        }
        let budget = FallbackBudget::new(
            Duration::from_secs(10),
            self.policy.retry_budget_min_per_s,
            percent / 100.0,
        )?;
        Ok(Some(budget))
    }

    /// The all-cooling mode.
    pub(crate) fn pass_backoff(&self) -> Result<Duration, GatewayConfigError> {
        seconds("pass_backoff_s", self.policy.pass_backoff_s)
    }

    pub(crate) fn when_all_cooling(&self) -> Result<WhenAllCooling, GatewayConfigError> {
        match self.policy.when_all_cooling.as_str() {
            "try_anyway" => Ok(WhenAllCooling::TryAnyway),
            "fail_fast" => Ok(WhenAllCooling::FailFast),
            "wait" => Ok(WhenAllCooling::Wait),
            other => Err(GatewayConfigError::Invalid(format!(
                "when_all_cooling must be try_anyway, fail_fast or wait, not {other:?}"
            ))),
        }
    }
}

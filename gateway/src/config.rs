//! Gateway configuration: a TOML file, overridden by command-line flags, with defaults that work
//! out of the box.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use tower_model_fallback::ModelChain;
use tower_model_fallback::WhenAllCooling;
use tower_model_fallback::error::ConfigError;
use tower_model_fallback::policy::{
    AdaptiveCooldown, CooldownPolicy, PacedCooldown, PolicyKind, ProbingCooldown, Tier,
};

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
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ModelConfig {
    /// Bedrock model or inference profile id.
    pub id: String,
    /// Display name for stats.
    #[serde(default)]
    pub name: Option<String>,
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
        };
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: UpstreamKind::Fake,
            region: "us-east-1".into(),
            api_key: None,
            admin_token: None,
            max_body_bytes: 1024 * 1024,
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
                        Some(name) => b.model_named(m.id.as_str(), name),
                        None => b.model(m.id.as_str()),
                    })
                    .build()?;
                Ok((c.alias.clone(), chain))
            })
            .collect()
    }

    /// A policy for `chain` with the configured kind and numbers.
    pub(crate) fn policy(
        &self,
        chain: ModelChain,
    ) -> Result<Arc<dyn CooldownPolicy>, GatewayConfigError> {
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
        Ok(match p.kind.parse::<PolicyKind>()? {
            PolicyKind::Adaptive => Arc::new(adaptive(chain)?),
            PolicyKind::Probing => Arc::new(ProbingCooldown::with_probes(
                adaptive(chain)?,
                Duration::from_secs(1),
                Duration::from_secs(8),
            )?),
            PolicyKind::Paced => Arc::new(
                PacedCooldown::builder()
                    .margin(p.pace_margin)
                    .burst(seconds("pace_burst_s", p.pace_burst_s)?)
                    .quiet(seconds("pace_quiet_s", p.pace_quiet_s)?)
                    .build(chain)?,
            ),
            other => other.with_defaults(chain),
        })
    }

    /// The all-cooling mode.
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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{AdaptiveCooldown, CooldownPolicy, FixedCooldown, PacedCooldown, ProbingCooldown};
use crate::chain::ModelChain;
use crate::error::ConfigError;

/// The policies this crate ships, by name: one list for configuration files, command lines and
/// comparison tables.
///
/// ```
/// use tower_model_fallback::policy::PolicyKind;
///
/// let kind: PolicyKind = "paced".parse()?;
/// assert_eq!(kind, PolicyKind::Paced);
/// assert_eq!(kind.to_string(), "paced");
/// assert!("sometimes".parse::<PolicyKind>().is_err());
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PolicyKind {
    /// [`FixedCooldown`]: the naive global block.
    Fixed,
    /// [`AdaptiveCooldown`]: the default.
    Adaptive,
    /// [`ProbingCooldown`]: adaptive plus single probes.
    Probing,
    /// [`PacedCooldown`]: throttled models paced at their measured rate.
    Paced,
}

impl PolicyKind {
    /// Every kind, from the naive to the best in the simulator.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Fixed,
        PolicyKind::Adaptive,
        PolicyKind::Probing,
        PolicyKind::Paced,
    ];

    /// The kind's name: `fixed`, `adaptive`, `probing` or `paced`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Fixed => "fixed",
            PolicyKind::Adaptive => "adaptive",
            PolicyKind::Probing => "probing",
            PolicyKind::Paced => "paced",
        }
    }

    /// The policy of this kind with its default numbers.
    pub fn with_defaults(self, chain: ModelChain) -> Arc<dyn CooldownPolicy> {
        match self {
            PolicyKind::Fixed => Arc::new(FixedCooldown::new(chain)),
            PolicyKind::Adaptive => Arc::new(AdaptiveCooldown::new(chain)),
            PolicyKind::Probing => Arc::new(ProbingCooldown::new(chain)),
            PolicyKind::Paced => Arc::new(PacedCooldown::new(chain)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, ConfigError> {
        PolicyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| ConfigError::UnknownPolicyKind(name.to_string()))
    }
}

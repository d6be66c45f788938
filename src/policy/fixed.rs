use std::time::Duration;

use super::{AttemptInfo, CooldownCell, CooldownPolicy, Epoch, Hint};
use crate::chain::ModelChain;
use crate::classify::Throttle;
use crate::error::ConfigError;
use crate::request::TokenCost;

/// The naive design: any throttle blocks the model for everyone for a fixed time (60 s by default),
/// and nothing ends the block early.
///
/// It is what the adaptive policy was built to replace, and it is kept for comparisons. It is also the
/// smallest complete [`CooldownPolicy`], built only from public pieces, so its source doubles as the
/// example of writing one: a lock-free [`CooldownCell`] per model, read on every request and written
/// on a throttle, on one [`Epoch`] clock.
///
/// ```
/// use std::time::Duration;
/// use tower_model_fallback::{FallbackLayer, ModelChain, policy::FixedCooldown};
///
/// let chain = ModelChain::new(["sonnet", "haiku"])?;
/// let layer = FallbackLayer::new(FixedCooldown::with_cooldown(chain, Duration::from_secs(30))?);
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct FixedCooldown {
    chain: ModelChain,
    cooldown: Duration,
    epoch: Epoch,
    models: Box<[CooldownCell]>,
}

impl FixedCooldown {
    /// Blocks throttled models for 60 s.
    pub fn new(chain: ModelChain) -> Self {
        let models = (0..chain.len()).map(|_| CooldownCell::default()).collect();
        FixedCooldown {
            chain,
            cooldown: Duration::from_secs(60),
            epoch: Epoch::start(),
            models,
        }
    }

    /// Blocks throttled models for `cooldown`, which must not be zero.
    pub fn with_cooldown(chain: ModelChain, cooldown: Duration) -> Result<Self, ConfigError> {
        if cooldown.is_zero() {
            return Err(ConfigError::ZeroCooldown);
        }
        Ok(FixedCooldown {
            cooldown,
            ..FixedCooldown::new(chain)
        })
    }

    /// The block length.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }
}

impl CooldownPolicy for FixedCooldown {
    fn chain(&self) -> &ModelChain {
        &self.chain
    }

    fn hint(&self, model: usize, _cost: Option<TokenCost>) -> Hint {
        match self.cooldown_remaining(model) {
            Some(remaining) => Hint::Cooling { remaining },
            None => Hint::Available,
        }
    }

    fn on_success(&self, _attempt: &AttemptInfo) {}

    fn on_throttle(&self, attempt: &AttemptInfo, _throttle: Throttle) -> Duration {
        if let Some(cell) = self.models.get(attempt.model) {
            cell.extend_to(&self.epoch, self.epoch.instant() + self.cooldown);
        }
        self.cooldown
    }

    fn cooldown_remaining(&self, model: usize) -> Option<Duration> {
        self.models.get(model)?.remaining(&self.epoch)
    }

    fn reset_cooldowns(&self) {
        self.models.iter().for_each(CooldownCell::clear);
    }
}

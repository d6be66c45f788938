//! The ordered list of models a layer may route to.

use std::fmt;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::request::ModelId;

/// The most models one chain may hold: per-request bookkeeping is a 64-bit set, so the layer never
/// allocates to remember which models a request has tried.
pub const MAX_MODELS: usize = 64;

#[derive(Debug)]
struct Entry {
    id: ModelId,
    name: Option<Arc<str>>,
}

/// Models in priority order: the first is the primary, the rest are fallbacks.
///
/// A chain is validated when built: it is not empty, has no duplicate or empty ids and at most
/// [`MAX_MODELS`] entries. Cloning is cheap.
///
/// ```
/// use tower_model_fallback::ModelChain;
///
/// let chain = ModelChain::builder()
///     .model_named("anthropic.claude-sonnet-4-v1:0", "Claude Sonnet")
///     .model("anthropic.claude-3-5-haiku-20241022-v1:0")
///     .build()?;
/// assert_eq!(chain.primary(), "anthropic.claude-sonnet-4-v1:0");
/// assert_eq!(chain.display_name(0), "Claude Sonnet");
/// # Ok::<(), tower_model_fallback::error::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ModelChain {
    entries: Arc<[Entry]>,
}

impl ModelChain {
    /// A chain of these ids, in this order.
    pub fn new<I, M>(models: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = M>,
        M: Into<ModelId>,
    {
        models
            .into_iter()
            .fold(ModelChain::builder(), |b, m| b.model(m))
            .build()
    }

    /// Starts a chain that can carry display names.
    pub fn builder() -> ModelChainBuilder {
        ModelChainBuilder {
            entries: Vec::new(),
        }
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always `false`: an empty chain is rejected when built.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The primary model.
    pub fn primary(&self) -> &ModelId {
        &self.entries[0].id
    }

    /// The model at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&ModelId> {
        self.entries.get(index).map(|e| &e.id)
    }

    /// The position of `model` in the chain.
    pub fn index_of(&self, model: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.id == *model)
    }

    /// The display name given to the model at `index`, or its id.
    pub fn display_name(&self, index: usize) -> &str {
        self.entries
            .get(index)
            .map(|e| e.name.as_deref().unwrap_or(e.id.as_str()))
            .unwrap_or("")
    }

    /// The ids in priority order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &ModelId> + '_ {
        self.entries.iter().map(|e| &e.id)
    }
}

impl fmt::Debug for ModelChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds a [`ModelChain`]; see [`ModelChain::builder`].
#[derive(Debug, Default)]
pub struct ModelChainBuilder {
    entries: Vec<Entry>,
}

impl ModelChainBuilder {
    /// Appends a model.
    pub fn model(mut self, id: impl Into<ModelId>) -> Self {
        self.entries.push(Entry {
            id: id.into(),
            name: None,
        });
        self
    }

    /// Appends a model with a human-friendly name for stats and logs.
    pub fn model_named(mut self, id: impl Into<ModelId>, name: impl AsRef<str>) -> Self {
        self.entries.push(Entry {
            id: id.into(),
            name: Some(Arc::from(name.as_ref())),
        });
        self
    }

    /// Validates and builds the chain.
    pub fn build(self) -> Result<ModelChain, ConfigError> {
        if self.entries.is_empty() {
            return Err(ConfigError::EmptyChain);
        }
        if self.entries.len() > MAX_MODELS {
            return Err(ConfigError::TooManyModels {
                count: self.entries.len(),
                max: MAX_MODELS,
            });
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.id.as_str().is_empty() {
                return Err(ConfigError::EmptyModelId);
            }
            if self.entries[..i].iter().any(|e| e.id == entry.id) {
                return Err(ConfigError::DuplicateModel(entry.id.clone()));
            }
        }
        Ok(ModelChain {
            entries: self.entries.into(),
        })
    }
}

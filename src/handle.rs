use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::layer::Shared;
use crate::request::ModelId;

/// One service's way to the layer's shared state, with a reference count and copies of the model
/// ids of its own: every call clones the handle into its future and an id into its request and its
/// response, so calls through services on different cores write no cache line in common. Aligned to
/// a cache line so that two handles (and their counts) never share one.
#[repr(align(64))]
pub(crate) struct Handle<C> {
    shared: Arc<Shared<C>>,
    ids: Box<[ModelId]>,
}

impl<C> Handle<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>) -> Arc<Self> {
        let ids = shared
            .chain
            .iter()
            .map(|id| ModelId::new(id.as_str()))
            .collect();
        Arc::new(Handle { shared, ids })
    }

    /// This handle's copy of the id of `model` (the primary's for an index out of range).
    pub(crate) fn id(&self, model: usize) -> ModelId {
        self.ids
            .get(model)
            .unwrap_or_else(|| self.shared.chain.primary())
            .clone()
    }
}

impl<C> Deref for Handle<C> {
    type Target = Shared<C>;

    fn deref(&self) -> &Shared<C> {
        &self.shared
    }
}

impl<C> fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

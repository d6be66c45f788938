use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use crate::classify::{ClassifyResponse, OkIsSuccess};
use crate::future::ResponseFuture;
use crate::handle::Handle;
use crate::layer::Shared;
use crate::policy::CooldownPolicy;
use crate::request::ModelRequest;
use crate::served::Served;
use crate::stats::StatsSnapshot;

/// Sends each request to the best model available now, and on to the next one when a model throttles
/// or fails.
///
/// Made by [`FallbackLayer`](crate::FallbackLayer). For every call it asks the shared policy which
/// models to skip, sets [`ModelRequest::model`] for each attempt, tries each model at most once and
/// stops at the first response or at the first error that another model would not fix.
///
/// Readiness follows tower's `retry`: `poll_ready` is the inner service's; `call` moves the service
/// that was polled ready into the response future and keeps a clone, and every later attempt polls its
/// service ready again before calling it. The model of that attempt is picked once and kept while
/// readiness is pending, so the policy decides (and may hand out capacity) once per decision.
///
/// Each service made by [`Layer::layer`](tower::Layer::layer) reaches the layer's shared state
/// through a handle of its own (its clones share it), so tasks on different cores that each make
/// their service from one layer write no cache line in common on the happy path; clones of one
/// service used on many cores share the handle's reference count.
///
/// `C` looks at `Ok` responses first ([`OkIsSuccess`] unless the layer was built with a response
/// classifier).
pub struct Fallback<S, C = OkIsSuccess> {
    inner: S,
    shared: Arc<Handle<C>>,
}

impl<S, C> Fallback<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        Fallback {
            inner,
            shared: Handle::new(shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The policy shared with the layer and its other services.
    pub fn policy(&self) -> &Arc<dyn CooldownPolicy> {
        &self.shared.policy
    }

    /// The policy as the type it was built with, or `None` if it is another type; see
    /// [`FallbackLayer::downcast_policy`](crate::FallbackLayer::downcast_policy).
    pub fn downcast_policy<P: CooldownPolicy>(&self) -> Option<&P> {
        self.shared.downcast_policy()
    }

    /// Counters and cooldowns of every model, as of now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.snapshot()
    }

    /// Ends every cooldown: all models go back to chain order for new requests.
    pub fn reset_cooldowns(&self) {
        self.shared.policy.reset_cooldowns();
    }
}

impl<S: Clone, C> Clone for Fallback<S, C> {
    fn clone(&self) -> Self {
        Fallback {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Fallback<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, B, C> Service<ModelRequest<B>> for Fallback<S, C>
where
    S: Service<ModelRequest<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyResponse<S::Response>,
{
    type Response = Served<S::Response>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: ModelRequest<B>) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(ready, request, self.shared.clone())
    }
}

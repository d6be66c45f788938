//! One inner service per model: Bedrock in another region, another account, another provider.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;
use tower::util::Oneshot;
use tower_service::Service;

use crate::error::UnknownModel;
use crate::request::{ModelId, ModelRequest};

/// Sends each [`ModelRequest`] to the service registered for its model.
///
/// The router is always ready. Each call clones the chosen model's service and drives it to
/// readiness inside the response future, so a model whose service is saturated (say, behind a
/// `ConcurrencyLimit`) delays only the requests sent to that model, never requests for the others.
/// A request for a model with no service fails with [`UnknownModel`].
///
/// All services share one type; box them with `tower::util::BoxCloneService` to mix kinds.
///
/// ```
/// use tower::{ServiceExt, service_fn};
/// use tower_model_fallback::{ModelRequest, Router};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let region = |name: &'static str| {
///     service_fn(move |_req: ModelRequest<()>| async move { Ok::<_, tower::BoxError>(name) })
/// };
/// let router = Router::new()
///     .route("claude-sonnet", region("us-east-1"))
///     .route("claude-haiku", region("us-west-2"));
/// let answer = router.oneshot(ModelRequest::new(()).with_model("claude-haiku")).await?;
/// assert_eq!(answer, "us-west-2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Router<S> {
    routes: HashMap<ModelId, S>,
}

impl<S> Router<S> {
    /// A router with no routes.
    pub fn new() -> Self {
        Router {
            routes: HashMap::new(),
        }
    }

    /// Sends requests for `model` to `service`, replacing any earlier route for it.
    pub fn route(mut self, model: impl Into<ModelId>, service: S) -> Self {
        self.routes.insert(model.into(), service);
        self
    }

    /// The service for `model`.
    pub fn get(&self, model: &str) -> Option<&S> {
        self.routes.get(model)
    }

    /// The routed models, in no particular order.
    pub fn models(&self) -> impl Iterator<Item = &ModelId> + '_ {
        self.routes.keys()
    }
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("models", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S, B> Service<ModelRequest<B>> for Router<S>
where
    S: Service<ModelRequest<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RouterFuture<S, ModelRequest<B>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<B>) -> Self::Future {
        let service = request
            .model()
            .and_then(|model| self.routes.get(model.as_str()));
        let inner = match service {
            Some(service) => Inner::Routed {
                future: Oneshot::new(service.clone(), request),
            },
            None => Inner::Unknown {
                error: Some(UnknownModel::new(request.model().cloned())),
            },
        };
        RouterFuture { inner }
    }
}

pin_project! {
    /// Response future of [`Router`].
    pub struct RouterFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        inner: Inner<S, R>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<S, R>
    where
        S: Service<R>,
    {
        // Readiness and call of the model's own service.
        Routed { #[pin] future: Oneshot<S, R> },
        // The request named a model with no route.
        Unknown { error: Option<UnknownModel> },
    }
}

impl<S, R> fmt::Debug for RouterFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Routed { .. } => f.write_str("RouterFuture::Routed"),
            Inner::Unknown { error } => f
                .debug_struct("RouterFuture::Unknown")
                .field("error", error)
                .finish(),
        }
    }
}

impl<S, R> Future for RouterFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Routed { future } => future.poll(cx).map_err(Into::into),
            InnerProj::Unknown { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "router future polled after completion".into(),
            })),
        }
    }
}

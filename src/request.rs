//! The request a [`Fallback`](crate::Fallback) routes: a payload plus the model of the current attempt.

use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// A Bedrock model id (or inference profile id), such as `anthropic.claude-3-5-haiku-20241022-v1:0`.
///
/// Cloning is a reference-count increment: ids are copied into every attempt and every stats entry.
/// Each id's count sits on a cache line of its own, so that threads cloning different ids never
/// write one line in common, wherever the allocator puts them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(Arc<IdText>);

/// The text of a [`ModelId`], aligned so that its reference count shares no line with other data.
#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(align(64))]
struct IdText(Box<str>);

impl ModelId {
    /// Creates a model id.
    pub fn new(id: impl AsRef<str>) -> Self {
        ModelId::from(Box::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0.0
    }
}

impl From<Box<str>> for ModelId {
    fn from(id: Box<str>) -> Self {
        ModelId(Arc::new(IdText(id)))
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for ModelId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ModelId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ModelId {
    fn from(id: &str) -> Self {
        ModelId::new(id)
    }
}

impl From<String> for ModelId {
    fn from(id: String) -> Self {
        ModelId::from(id.into_boxed_str())
    }
}

impl From<&String> for ModelId {
    fn from(id: &String) -> Self {
        ModelId::new(id)
    }
}

impl PartialEq<str> for ModelId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ModelId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ModelId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Identifies one logical request across all of its attempts, in traces and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// Wraps a caller-chosen id (for example one taken from an incoming request header).
    pub const fn new(id: u64) -> Self {
        RequestId(id)
    }

    /// A process-unique id, used when the caller does not set one.
    ///
    /// Each thread takes ids from a block of its own and goes back to the process-wide counter once
    /// per block, so threads creating requests do not all write one shared counter on every call.
    /// Ids are unique, not in creation order across threads.
    pub fn next() -> Self {
        /// Ids a thread takes from the process-wide counter at once.
        const BLOCK: u64 = 1024;
        static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            /// The next id of this thread's block, and the end of the block.
            static BLOCK_LEFT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        BLOCK_LEFT.with(|left| {
            let (mut next, mut end) = left.get();
            if next == end {
                next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
                end = next.saturating_add(BLOCK);
            }
            left.set((next + 1, end));
            RequestId(next)
        })
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An estimate of the tokens a request will consume.
///
/// Bedrock throttles on tokens per minute as well as requests per minute, so a policy may treat a
/// small request differently from a large one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenCost {
    /// Estimated input (prompt) tokens.
    pub input: u32,
    /// Estimated output tokens, usually the request's `maxTokens`.
    pub output: u32,
}

impl TokenCost {
    /// Creates an estimate.
    pub const fn new(input: u32, output: u32) -> Self {
        TokenCost { input, output }
    }

    /// Input plus output tokens.
    pub const fn total(&self) -> u64 {
        self.input as u64 + self.output as u64
    }
}

/// Which models a request may be served by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// The layer's chain, in priority order, skipping models whose cooldown is active.
    #[default]
    Chain,
    /// These models in this order, skipping models whose cooldown is active. Every id must be in the
    /// layer's chain.
    Order(Arc<[ModelId]>),
    /// Only this model, whatever its cooldown: the caller asked for it explicitly. A throttle is still
    /// recorded so that other requests benefit.
    Pinned(ModelId),
}

/// A model call routed by [`Fallback`](crate::Fallback).
///
/// The layer sets [`model`](Self::model) before every attempt; inner services read it to know which
/// model to call. The payload is cloned once per attempt, so keep it cheap to clone (put large bodies
/// behind an `Arc`).
#[derive(Clone, Debug)]
pub struct ModelRequest<B> {
    model: Option<ModelId>,
    body: B,
    id: RequestId,
    cost: Option<TokenCost>,
    route: Route,
    max_attempts: Option<u32>,
    deadline: Option<Instant>,
}

impl<B> ModelRequest<B> {
    /// Creates a request with a fresh [`RequestId`] and no per-request options.
    pub fn new(body: B) -> Self {
        ModelRequest {
            model: None,
            body,
            id: RequestId::next(),
            cost: None,
            route: Route::Chain,
            max_attempts: None,
            deadline: None,
        }
    }

    /// Sets the model to call. [`Fallback`](crate::Fallback) overwrites it for every attempt; set it
    /// yourself only when calling a model service directly.
    pub fn with_model(mut self, model: impl Into<ModelId>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the request id.
    pub fn with_id(mut self, id: RequestId) -> Self {
        self.id = id;
        self
    }

    /// Sets the token estimate.
    pub fn with_cost(mut self, cost: TokenCost) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Restricts the request to these models, in this order.
    pub fn with_order<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<ModelId>,
    {
        self.route = Route::Order(models.into_iter().map(Into::into).collect());
        self
    }

    /// Pins the request to one model: no fallback, cooldown ignored.
    pub fn pinned(mut self, model: impl Into<ModelId>) -> Self {
        self.route = Route::Pinned(model.into());
        self
    }

    /// Sets the route.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Caps the number of models tried for this request (at least one is always tried).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts.max(1));
        self
    }

    /// No attempt starts after `deadline`, and an attempt still running at `deadline` is dropped.
    /// The deadline is a tokio timer: call inside a tokio runtime with the time driver enabled.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The model of the current attempt, once a [`Fallback`](crate::Fallback) (or the caller) set it.
    pub fn model(&self) -> Option<&ModelId> {
        self.model.as_ref()
    }

    /// The payload.
    pub fn body(&self) -> &B {
        &self.body
    }

    /// The payload, mutably.
    pub fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// Takes the payload out of the request.
    pub fn into_body(self) -> B {
        self.body
    }

    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The token estimate, if the caller gave one.
    pub fn cost(&self) -> Option<TokenCost> {
        self.cost
    }

    /// Which models may serve the request.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The per-request attempt cap.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The per-request deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn set_model(&mut self, model: ModelId) {
        self.model = Some(model);
    }

    /// Replaces the payload, keeping the model and every option.
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> ModelRequest<C> {
        ModelRequest {
            model: self.model,
            body: f(self.body),
            id: self.id,
            cost: self.cost,
            route: self.route,
            max_attempts: self.max_attempts,
            deadline: self.deadline,
        }
    }
}

#[cfg(all(test, not(loom_model)))]
mod tests {
    use super::RequestId;

    #[test]
    fn request_ids_are_unique_across_threads() {
        let ids: Vec<u64> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..5_000)
                            .map(|_| RequestId::next().get())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect()
        });
        let unique: std::collections::HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), 20_000);
        assert!(!unique.contains(&0));
    }
}

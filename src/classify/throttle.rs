use std::time::Duration;

/// Which of a model's per-minute quotas a throttle says ran out.
///
/// Bedrock tells them apart in the throttle's message ("Too many requests, ..." or "Too many
/// tokens, ..."). A model limited by tokens runs out sooner on large requests than on small ones: a
/// policy can weigh each request by its token estimate there, and count requests elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaLimit {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// What a throttle told the caller, as the policy receives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throttle {
    /// How long the service asked callers to stay away, if it said.
    pub retry_after: Option<Duration>,
    /// The quota that ran out, if it said.
    pub limit: Option<QuotaLimit>,
}

impl Throttle {
    /// A throttle that said nothing more.
    pub const NONE: Throttle = Throttle {
        retry_after: None,
        limit: None,
    };

    /// A throttle with a retry-after hint.
    pub const fn retry_after(retry_after: Duration) -> Self {
        Throttle {
            retry_after: Some(retry_after),
            limit: None,
        }
    }

    /// The same throttle, saying which quota ran out.
    pub const fn with_limit(mut self, limit: QuotaLimit) -> Self {
        self.limit = Some(limit);
        self
    }
}

use std::time::Duration;

use tokio::time::Instant;

use crate::classify::{QuotaLimit, StatusError};
use crate::wire::bedrock_status;

/// What Bedrock answers a call when `limit` ran out: a `ThrottlingException` whose message names the
/// quota.
pub fn throttled(limit: QuotaLimit) -> StatusError {
    let message = match limit {
        QuotaLimit::Requests => "Too many requests, please wait before trying again.",
        QuotaLimit::Tokens => "Too many tokens, please wait before trying again.",
    };
    throttling_exception(message)
}

/// What Bedrock answers a call when a daily token quota ran out.
pub fn out_of_daily_tokens() -> StatusError {
    throttling_exception("Too many tokens per day, please wait before trying again.")
}

fn throttling_exception(message: &str) -> StatusError {
    StatusError::new(bedrock_status("ThrottlingException"))
        .with_code("ThrottlingException")
        .with_message(message)
}

/// A per-model quota, enforced the way Bedrock does: requests per minute and tokens per minute,
/// each a bucket that refills continuously and starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Requests per minute.
    pub requests_per_minute: u32,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: u32,
}

impl Quota {
    /// A quota of `requests_per_minute` and `tokens_per_minute`.
    pub const fn new(requests_per_minute: u32, tokens_per_minute: u32) -> Self {
        Quota {
            requests_per_minute,
            tokens_per_minute,
        }
    }
}

/// One continuously refilling bucket.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    capacity: f64,
    level: f64,
}

impl Bucket {
    fn new(per_minute: u32, burst: Duration) -> Self {
        let per_minute = f64::from(per_minute);
        let capacity = (per_minute * burst.as_secs_f64() / 60.0).max(1.0);
        Bucket {
            per_minute,
            capacity,
            level: capacity,
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        let added = self.per_minute * elapsed.as_secs_f64() / 60.0;
        self.level = (self.level + added).min(self.capacity);
    }
}

/// The live state of a [`Quota`]: its two buckets, on tokio's clock. What the fake Bedrock and
/// the simulator throttle with.
#[derive(Debug)]
pub struct QuotaState {
    requests: Bucket,
    tokens: Bucket,
    refilled: Instant,
}

impl QuotaState {
    /// Buckets that hold a full minute of quota.
    pub fn new(quota: Quota) -> Self {
        QuotaState::with_burst(quota, Duration::from_secs(60))
    }

    /// Buckets that hold `burst` worth of quota: the longest burst served at once after a quiet spell.
    pub fn with_burst(quota: Quota, burst: Duration) -> Self {
        QuotaState {
            requests: Bucket::new(quota.requests_per_minute, burst),
            tokens: Bucket::new(quota.tokens_per_minute, burst),
            refilled: Instant::now(),
        }
    }

    /// Whether a request of `tokens` tokens can ever be served: Bedrock rejects one larger than a
    /// minute's quota (a `ValidationException`), where a smaller one would only wait for a refill.
    pub fn fits(&self, tokens: u32) -> bool {
        f64::from(tokens) <= self.tokens.per_minute
    }

    /// Settles a served request charged `charged` tokens at its start that used `used`: Bedrock
    /// charges a request's input plus its whole output budget (`max_tokens`) up front and gives back
    /// what the answer did not use when it ends (or takes what it used beyond).
    pub fn settle(&mut self, charged: u32, used: u32) {
        let returned = f64::from(charged) - f64::from(used);
        self.tokens.level = (self.tokens.level + returned).min(self.tokens.capacity);
    }

    /// Takes one request and `tokens` tokens if both fit; a throttled request takes nothing and
    /// learns which quota ran out (requests, when both did). A request larger than a
    /// bucket shallower than a minute is taken when the bucket is full, and leaves it in debt: the
    /// quota still holds over the minute.
    pub fn try_take(&mut self, tokens: u32) -> Result<(), QuotaLimit> {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.requests.refill(elapsed);
        self.tokens.refill(elapsed);
        let tokens = f64::from(tokens);
        if self.requests.level < 1.0 {
            return Err(QuotaLimit::Requests);
        }
        if self.tokens.level < tokens.min(self.tokens.capacity) {
            return Err(QuotaLimit::Tokens);
        }
        self.requests.level -= 1.0;
        self.tokens.level -= tokens;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_budget_charged_up_front_comes_back_when_settled() {
        // 600 tokens per minute in a bucket of one minute.
        let mut quota = QuotaState::new(Quota::new(100, 600));
        assert!(quota.fits(600));
        assert!(!quota.fits(601), "larger than the whole bucket");
        assert!(quota.try_take(500).is_ok());
        assert_eq!(
            quota.try_take(200),
            Err(QuotaLimit::Tokens),
            "100 tokens left"
        );
        // The answer used 150 of the 500 charged: 350 come back.
        quota.settle(500, 150);
        assert!(quota.try_take(400).is_ok());
        // An answer that used more than it was charged leaves the bucket in debt.
        quota.settle(0, 100);
        assert_eq!(quota.try_take(1), Err(QuotaLimit::Tokens));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(quota.try_take(1).is_ok(), "the refill pays the debt back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_deeper_than_a_shallow_bucket_waits_for_it_to_fill_and_pays_in_full() {
        // 600 tokens per minute in a bucket of 6 s: 60 tokens deep, refilling 10 a second.
        let mut quota = QuotaState::with_burst(Quota::new(100, 600), Duration::from_secs(6));
        assert!(quota.fits(600), "a minute's quota can be served");
        assert!(!quota.fits(601), "more than a minute's quota never can");
        assert!(quota.try_take(10).is_ok());
        assert_eq!(
            quota.try_take(200),
            Err(QuotaLimit::Tokens),
            "taken only from a full bucket"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(quota.try_take(200).is_ok());
        // 200 taken from 60: 140 in debt, paid back in 14 s, then 0.1 s to hold one token.
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(quota.try_take(1), Err(QuotaLimit::Tokens));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(quota.try_take(1).is_ok());
    }
}

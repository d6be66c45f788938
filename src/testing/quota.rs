use std::time::Duration;

use tokio::time::Instant;

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

    /// Takes one request and `tokens` tokens if both fit; a throttled request takes nothing.
    pub fn try_take(&mut self, tokens: u32) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.requests.refill(elapsed);
        self.tokens.refill(elapsed);
        let tokens = f64::from(tokens).min(self.tokens.capacity);
        if self.requests.level >= 1.0 && self.tokens.level >= tokens {
            self.requests.level -= 1.0;
            self.tokens.level -= tokens;
            true
        } else {
            false
        }
    }
}

//! What a simulation measured, and the comparison table.

use std::fmt::Write as _;
use std::time::Duration;

use super::histogram::LatencyHistogram;
use super::model::Upstream;
use super::{PolicyKind, Scenario};

/// One user request, as the user saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// When it was sent, from the start of the run.
    pub start: Duration,
    /// How long the user waited for the answer or the error.
    pub latency: Duration,
    /// The model that answered (chain index), `None` if the request failed.
    pub served_by: Option<usize>,
    /// The request's size: its input and output tokens.
    pub tokens: u64,
    /// Every upstream attempt in order: model index and whether it was throttled.
    pub attempts: Vec<(usize, bool)>,
}

/// The figures of one run.
///
/// - `primary_usage`: share of all requests the primary answered.
/// - `primary_token_usage`: share of all requests' tokens (input and output) the primary answered.
///   Where the primary runs out of tokens, this is the share of the work it did: a policy can raise
///   `primary_usage` by sending it smaller requests without it doing more.
/// - `mean_latency_s`, `p99_latency_s`: what users waited, failures included (the p99 to within
///   0.1%: latencies are counted in buckets).
/// - `recovery_s`: mean time from the last throttle of a run of primary throttles to the primary's
///   next admitted call: how long the primary stays unused after it recovered. `None` without throttles.
/// - `success_rate`: share of requests some model answered.
/// - `attempts_per_request`, `throttled_per_request`: upstream calls per user request, all and
///   throttled only (the load the policy puts on Bedrock).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Policy.
    pub policy: PolicyKind,
    /// Seed.
    pub seed: u64,
    /// User requests sent.
    pub issued: usize,
    /// User requests that resolved (with an answer or an error).
    pub requests: usize,
    /// Calls the simulated Bedrock received.
    pub upstream_calls: usize,
    /// Requests some model answered.
    pub served: usize,
    /// Requests the primary answered.
    pub served_by_primary: usize,
    /// Share the primary answered, 0 to 1.
    pub primary_usage: f64,
    /// Share of the requests' tokens the primary answered, 0 to 1.
    pub primary_token_usage: f64,
    /// Mean response time in seconds.
    pub mean_latency_s: f64,
    /// 99th percentile response time in seconds.
    pub p99_latency_s: f64,
    /// Mean throttle recovery time in seconds.
    pub recovery_s: Option<f64>,
    /// Share of requests answered, 0 to 1.
    pub success_rate: f64,
    /// Upstream calls per request.
    pub attempts_per_request: f64,
    /// Throttled upstream calls per request.
    pub throttled_per_request: f64,
    /// The primary's share of each minute's answered requests.
    pub primary_share_by_minute: Vec<f64>,
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Outcomes added up as they happen: a run keeps this, not a list of every request.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    requests: usize,
    served: usize,
    served_by_primary: usize,
    /// Tokens of every request, and of those the primary answered.
    tokens: u64,
    tokens_by_primary: u64,
    latency_sum_s: f64,
    latencies: LatencyHistogram,
    attempts: usize,
    throttled: usize,
    /// Per minute of the scenario: answered by the primary, answered at all.
    per_minute: Vec<(usize, usize)>,
}

impl Tally {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        let minutes = scenario.duration.as_secs().div_ceil(60) as usize;
        Tally {
            requests: 0,
            served: 0,
            served_by_primary: 0,
            tokens: 0,
            tokens_by_primary: 0,
            latency_sum_s: 0.0,
            latencies: LatencyHistogram::default(),
            attempts: 0,
            throttled: 0,
            per_minute: vec![(0, 0); minutes.max(1)],
        }
    }

    pub(crate) fn record(&mut self, outcome: &Outcome) {
        self.requests += 1;
        self.served += usize::from(outcome.served_by.is_some());
        self.served_by_primary += usize::from(outcome.served_by == Some(0));
        self.tokens += outcome.tokens;
        if outcome.served_by == Some(0) {
            self.tokens_by_primary += outcome.tokens;
        }
        self.latency_sum_s += outcome.latency.as_secs_f64();
        self.latencies.record(outcome.latency);
        self.attempts += outcome.attempts.len();
        self.throttled += outcome.attempts.iter().filter(|a| a.1).count();
        let minute = ((outcome.start + outcome.latency).as_secs() / 60) as usize;
        if let (Some(model), Some(slot)) = (outcome.served_by, self.per_minute.get_mut(minute)) {
            slot.1 += 1;
            slot.0 += usize::from(model == 0);
        }
    }
}

impl Report {
    pub(crate) fn new(
        scenario: &Scenario,
        policy: PolicyKind,
        seed: u64,
        tally: &Tally,
        upstream: &Upstream,
        issued: usize,
    ) -> Self {
        let requests = tally.requests;
        Report {
            scenario: scenario.name.clone(),
            policy,
            seed,
            issued,
            requests,
            upstream_calls: upstream.calls,
            served: tally.served,
            served_by_primary: tally.served_by_primary,
            primary_usage: ratio(tally.served_by_primary, requests),
            primary_token_usage: tally.tokens_by_primary as f64 / tally.tokens.max(1) as f64,
            mean_latency_s: tally.latency_sum_s / requests.max(1) as f64,
            p99_latency_s: tally.latencies.quantile(0.99).as_secs_f64(),
            recovery_s: upstream.recovery_s(),
            success_rate: ratio(tally.served, requests),
            attempts_per_request: ratio(tally.attempts, requests),
            throttled_per_request: ratio(tally.throttled, requests),
            primary_share_by_minute: tally
                .per_minute
                .iter()
                .map(|(p, all)| ratio(*p, *all))
                .collect(),
        }
    }
}

/// The comparison table for reports of one scenario.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:>8} {:>9} {:>8} {:>10} {:>8} {:>10} {:>10}",
        "scenario",
        "policy",
        "primary",
        "mean",
        "p99",
        "recovery",
        "success",
        "calls/req",
        "thr/req"
    );
    for r in reports {
        let recovery = r.recovery_s.map_or("-".to_string(), |s| format!("{s:.1}s"));
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>7.1}% {:>8.2}s {:>7.1}s {:>10} {:>7.2}% {:>10.3} {:>10.3}",
            r.scenario,
            r.policy.name(),
            r.primary_usage * 100.0,
            r.mean_latency_s,
            r.p99_latency_s,
            recovery,
            r.success_rate * 100.0,
            r.attempts_per_request,
            r.throttled_per_request,
        );
    }
    out
}

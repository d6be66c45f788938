//! What a simulation measured, and the comparison table.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::model::Call;
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
    /// Every upstream attempt in order: model index and whether it was throttled.
    pub attempts: Vec<(usize, bool)>,
}

/// The figures of one run.
///
/// - `primary_usage`: share of all requests the primary answered.
/// - `mean_latency_s`, `p99_latency_s`: what users waited, failures included.
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

impl Report {
    pub(crate) fn new(
        scenario: &Scenario,
        policy: PolicyKind,
        seed: u64,
        origin: Instant,
        outcomes: &[Outcome],
        calls: &[Call],
        issued: usize,
    ) -> Self {
        let requests = outcomes.len();
        let served = outcomes.iter().filter(|o| o.served_by.is_some()).count();
        let served_by_primary = outcomes.iter().filter(|o| o.served_by == Some(0)).count();
        let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        latencies.sort_unstable();
        let mean =
            latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / requests.max(1) as f64;
        let p99 = latencies
            .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
            .map_or(0.0, Duration::as_secs_f64);
        let attempts: usize = outcomes.iter().map(|o| o.attempts.len()).sum();
        let throttled: usize = outcomes
            .iter()
            .map(|o| o.attempts.iter().filter(|a| a.1).count())
            .sum();

        let minutes = scenario.duration.as_secs().div_ceil(60) as usize;
        let mut per_minute = vec![(0usize, 0usize); minutes.max(1)];
        for outcome in outcomes {
            let minute = ((outcome.start + outcome.latency).as_secs() / 60) as usize;
            if let (Some(model), Some(slot)) = (outcome.served_by, per_minute.get_mut(minute)) {
                slot.1 += 1;
                slot.0 += usize::from(model == 0);
            }
        }

        Report {
            scenario: scenario.name.clone(),
            policy,
            seed,
            issued,
            requests,
            upstream_calls: calls.len(),
            served,
            served_by_primary,
            primary_usage: ratio(served_by_primary, requests),
            mean_latency_s: mean,
            p99_latency_s: p99,
            recovery_s: recovery(origin, calls),
            success_rate: ratio(served, requests),
            attempts_per_request: ratio(attempts, requests),
            throttled_per_request: ratio(throttled, requests),
            primary_share_by_minute: per_minute.iter().map(|(p, all)| ratio(*p, *all)).collect(),
        }
    }
}

/// Mean time from the last throttle of each run of primary throttles to the next admitted primary call.
fn recovery(origin: Instant, calls: &[Call]) -> Option<f64> {
    let mut last_throttle: Option<Instant> = None;
    let mut gaps = Vec::new();
    for call in calls.iter().filter(|c| c.model == 0) {
        match (call.throttled, last_throttle) {
            (true, _) => last_throttle = Some(call.at),
            (false, Some(at)) => {
                gaps.push(call.at.duration_since(at.max(origin)).as_secs_f64());
                last_throttle = None;
            }
            (false, None) => {}
        }
    }
    (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
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

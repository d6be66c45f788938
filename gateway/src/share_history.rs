//! The primary's share of served requests over the last ten minutes, per chain, for the status page.
//!
//! A background task samples each chain's totals every [`SAMPLE_EVERY`]; the share between two
//! samples is what the chart draws, so a page opened now shows the server's last ten minutes, not
//! only what happened while it was open. Nothing here is on the request path.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tower_model_fallback::stats::Totals;

/// How often the totals are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How far back the history reaches.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);

/// One chain's totals at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// Requests served by the primary.
    pub(crate) primary: u64,
    /// Requests that finished (served or failed).
    pub(crate) finished: u64,
}

impl Sample {
    /// The sample of `totals`, taken now.
    pub(crate) fn now(totals: &Totals) -> Sample {
        Sample {
            at: Instant::now(),
            primary: totals.served_by_primary,
            finished: totals.served + totals.failed,
        }
    }
}

/// The samples of one chain within the window, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ShareHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl ShareHistory {
    /// Records `sample` and forgets what fell out of the window (keeping one sample at or before
    /// the window's start, so the first interval is whole).
    pub(crate) fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        while samples
            .get(1)
            .is_some_and(|next| sample.at.duration_since(next.at) >= WINDOW)
        {
            samples.pop_front();
        }
    }

    /// The share over the window ending at `now` (the current totals), and one point per sampled
    /// interval that served anything: `age_s` (of the interval's end) and `share` (0-1).
    pub(crate) fn report(&self, now: Sample) -> Value {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let window_start = now.at.checked_sub(WINDOW);
        let first = samples
            .iter()
            .find(|s| window_start.is_none_or(|start| s.at >= start))
            .or(samples.back());
        let window_share = first.and_then(|first| share(first, &now));
        let points: Vec<Value> = samples
            .iter()
            .zip(samples.iter().skip(1).chain(std::iter::once(&now)))
            .filter_map(|(from, to)| {
                let age = now.at.duration_since(to.at);
                (age < WINDOW).then_some(())?;
                let share = share(from, to)?;
                Some(json!({ "age_s": age.as_secs(), "share": (share * 1000.0).round() / 1000.0 }))
            })
            .collect();
        json!({
            "window_s": WINDOW.as_secs(),
            "primary_share": window_share.map(|s| (s * 1000.0).round() / 1000.0),
            "points": points,
        })
    }
}

/// The primary's share of what finished between two samples; `None` when nothing did.
fn share(from: &Sample, to: &Sample) -> Option<f64> {
    let finished = to.finished.checked_sub(from.finished)?;
    let primary = to.primary.checked_sub(from.primary)?;
    (finished > 0).then(|| primary as f64 / finished as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64, primary: u64, finished: u64) -> Sample {
        Sample {
            at: start + Duration::from_secs(secs),
            primary,
            finished,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_covers_the_last_ten_minutes_only() {
        let start = Instant::now();
        let history = ShareHistory::default();
        // Minute 0-5: everything served by the primary; minutes 5-15: half of it.
        history.record(at(start, 0, 0, 0));
        history.record(at(start, 300, 100, 100));
        history.record(at(start, 600, 150, 200));
        let report = history.report(at(start, 900, 200, 300));
        // The window is 300 s-900 s: 100 of 200 by the primary.
        assert_eq!(report["primary_share"], 0.5);
        let points = report["points"].as_array().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0], json!({ "age_s": 300, "share": 0.5 }));
        assert_eq!(points[1], json!({ "age_s": 0, "share": 0.5 }));
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_are_forgotten_and_idle_intervals_draw_nothing() {
        let start = Instant::now();
        let history = ShareHistory::default();
        for i in 0..200 {
            history.record(at(start, i * 10, 7, 10));
        }
        assert!(history.samples.lock().unwrap().len() <= 62);
        let report = history.report(at(start, 2000, 7, 10));
        assert_eq!(report["primary_share"], Value::Null);
        assert_eq!(report["points"], json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gateway_younger_than_the_window_reports_since_its_start() {
        let start = Instant::now();
        let history = ShareHistory::default();
        history.record(at(start, 0, 0, 0));
        let report = history.report(at(start, 5, 3, 4));
        assert_eq!(report["primary_share"], 0.75);
    }
}

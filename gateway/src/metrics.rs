//! `/metrics`: the layers' stats in Prometheus text format, read fresh at every scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use tower_model_fallback::stats::{ModelStatus, StatsSnapshot};

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// Renders every chain's stats; `chains` yields each chain's name and snapshot.
pub(super) fn render(
    chains: impl Iterator<Item = (String, StatsSnapshot)>,
) -> Result<String, std::fmt::Error> {
    let attempts = Counters::default();
    let successes = Counters::default();
    let throttles = Counters::default();
    let failures = Counters::default();
    let cooling = Gauges::default();
    let cooldown = Gauges::default();
    let reopens = Gauges::default();
    let requests = Counters::default();
    let failed = Counters::default();
    let cancelled = Counters::default();
    let primary_usage = Gauges::default();
    for (chain, stats) in chains {
        for m in &stats.models {
            let labels = vec![("chain", chain.clone()), ("model", m.id.to_string())];
            attempts.get_or_create(&labels).inc_by(m.attempts);
            successes.get_or_create(&labels).inc_by(m.successes);
            throttles.get_or_create(&labels).inc_by(m.throttles);
            failures.get_or_create(&labels).inc_by(m.failures);
            let skipped = if m.status == ModelStatus::Skipped {
                1.0
            } else {
                0.0
            };
            cooling.get_or_create(&labels).set(skipped);
            cooldown.get_or_create(&labels).set(m.cooldown_remaining_s);
            reopens.get_or_create(&labels).set(m.reopens_in_s);
        }
        let labels = vec![("chain", chain)];
        requests
            .get_or_create(&labels)
            .inc_by(stats.totals.requests);
        failed.get_or_create(&labels).inc_by(stats.totals.failed);
        cancelled
            .get_or_create(&labels)
            .inc_by(stats.totals.cancelled);
        primary_usage
            .get_or_create(&labels)
            .set(stats.totals.primary_usage.unwrap_or(1.0));
    }
    let mut registry = Registry::with_prefix("model_fallback");
    registry.register("attempts", "Model attempts started", attempts);
    registry.register("successes", "Attempts that answered", successes);
    registry.register("throttles", "Attempts that were throttled", throttles);
    registry.register("failures", "Attempts that failed otherwise", failures);
    registry.register("cooling", "1 while new requests skip the model", cooling);
    registry.register(
        "cooldown_remaining_seconds",
        "Time until the cooldown ends",
        cooldown,
    );
    registry.register(
        "reopens_in_seconds",
        "Time until new requests try the model again",
        reopens,
    );
    registry.register("requests", "Requests received", requests);
    registry.register("requests_failed", "Requests no model answered", failed);
    registry.register(
        "requests_cancelled",
        "Requests dropped before they finished",
        cancelled,
    );
    registry.register(
        "primary_usage_ratio",
        "Share of finished requests the primary answered",
        primary_usage,
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

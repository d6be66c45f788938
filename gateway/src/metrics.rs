//! `/metrics`: one registry, built when the gateway starts. Request and attempt latencies, statuses,
//! in-flight and shed counts are recorded as they happen; the layers' stats and the process's own
//! figures are read fresh at every scrape.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use super::upstream::UpstreamErrors;
use tower_model_fallback::FallbackLayer;
use tower_model_fallback::cluster::ClusterStatus;
use tower_model_fallback::stats::ModelStatus;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Latency buckets for LLM calls: 10 ms to 5 minutes.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
    ])
}

/// Upstream call latencies by model and outcome: recorded by the upstream service, which exists
/// before the layers (and so before [`Metrics`]).
#[derive(Clone, Debug)]
pub(crate) struct AttemptLatency(Histograms);

impl Default for AttemptLatency {
    fn default() -> Self {
        AttemptLatency(Histograms::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        ))
    }
}

impl AttemptLatency {
    /// An upstream call to `model` ended with `outcome` after `elapsed`.
    pub(crate) fn observe(&self, model: &str, outcome: &str, elapsed: Duration) {
        let labels = vec![
            ("model", model.to_string()),
            ("outcome", outcome.to_string()),
        ];
        self.0.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// The gateway's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Histograms,
    responses: Counters,
    in_flight: Gauge,
    shed: Counters,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry, with a collector for the stats of `chains` (each chain's name and layer).
    pub(crate) fn new(
        chains: Vec<(
            String,
            FallbackLayer<UpstreamErrors>,
            Option<Arc<ClusterStatus>>,
        )>,
        attempts: AttemptLatency,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Histograms::new_with_constructor(latency_histogram as fn() -> Histogram);
        let responses = Counters::default();
        let in_flight = Gauge::default();
        let shed = Counters::default();
        let gateway = registry.sub_registry_with_prefix("gateway");
        gateway.register(
            "request_duration_seconds",
            "Model requests, from the request's headers to the answer's headers, by chain and status",
            requests.clone(),
        );
        gateway.register(
            "attempt_duration_seconds",
            "Upstream model calls, by model and outcome (HTTP status, timeout or unreachable)",
            attempts.0,
        );
        gateway.register(
            "responses",
            "Answers to model requests, by status",
            responses.clone(),
        );
        gateway.register(
            "in_flight_requests",
            "Model requests being served",
            in_flight.clone(),
        );
        gateway.register(
            "shed_requests",
            "Model requests refused at once with a 429, by limit",
            shed.clone(),
        );
        registry.register_collector(Box::new(LayerStats { chains }));
        registry.register_collector(Box::new(ProcessStats {
            started: SystemTime::now(),
        }));
        Metrics {
            registry,
            requests,
            responses,
            in_flight,
            shed,
        }
    }

    /// A model request ended with `status` after `elapsed`.
    pub(crate) fn request(&self, chain: &str, status: u16, elapsed: Duration) {
        let labels = vec![("chain", chain.to_string()), ("status", status.to_string())];
        self.requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.responses
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }

    /// A request was refused at once by `limit`.
    pub(crate) fn shed(&self, limit: &'static str) {
        self.shed
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }

    /// The in-flight gauge, moved by the requests themselves.
    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Prometheus text format (which OpenMetrics parsers also read).
    pub(crate) fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Every chain's layer stats and shared-state link, read at scrape time.
#[derive(Debug)]
struct LayerStats {
    chains: Vec<(
        String,
        FallbackLayer<UpstreamErrors>,
        Option<Arc<ClusterStatus>>,
    )>,
}

fn emit(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for LayerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let attempts = Counters::default();
        let successes = Counters::default();
        let throttles = Counters::default();
        let token_throttles = Counters::default();
        let failures = Counters::default();
        let cooling = Gauges::default();
        let cooldown = Gauges::default();
        let reopens = Gauges::default();
        let requests = Counters::default();
        let failed = Counters::default();
        let cancelled = Counters::default();
        let later_passes = Counters::default();
        let primary_usage = Gauges::default();
        let shared_connected = Gauges::default();
        let shared_lag = Gauges::default();
        let shared_sent = Counters::default();
        let shared_received = Counters::default();
        let shared_dropped = Counters::default();
        for (chain, layer, shared) in &self.chains {
            if let Some(shared) = shared {
                let status = shared.snapshot();
                let labels = vec![("chain", chain.clone())];
                let up = if status.connected { 1.0 } else { 0.0 };
                shared_connected.get_or_create(&labels).set(up);
                shared_lag
                    .get_or_create(&labels)
                    .set(status.lag_ms as f64 / 1000.0);
                shared_sent.get_or_create(&labels).inc_by(status.sent);
                shared_received
                    .get_or_create(&labels)
                    .inc_by(status.received);
                shared_dropped.get_or_create(&labels).inc_by(status.dropped);
            }
            let stats = layer.stats();
            for m in &stats.models {
                let labels = vec![("chain", chain.clone()), ("model", m.id.to_string())];
                attempts.get_or_create(&labels).inc_by(m.attempts);
                successes.get_or_create(&labels).inc_by(m.successes);
                throttles.get_or_create(&labels).inc_by(m.throttles);
                token_throttles
                    .get_or_create(&labels)
                    .inc_by(m.token_throttles);
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
            let labels = vec![("chain", chain.clone())];
            let totals = &stats.totals;
            requests.get_or_create(&labels).inc_by(totals.requests);
            failed.get_or_create(&labels).inc_by(totals.failed);
            cancelled.get_or_create(&labels).inc_by(totals.cancelled);
            later_passes
                .get_or_create(&labels)
                .inc_by(totals.later_passes);
            primary_usage
                .get_or_create(&labels)
                .set(totals.primary_usage.unwrap_or(1.0));
        }
        let e = &mut encoder;
        emit(
            e,
            "model_fallback_attempts",
            "Model attempts started",
            &attempts,
        )?;
        emit(
            e,
            "model_fallback_successes",
            "Attempts that answered",
            &successes,
        )?;
        emit(
            e,
            "model_fallback_throttles",
            "Attempts that were throttled",
            &throttles,
        )?;
        emit(
            e,
            "model_fallback_token_throttles",
            "Throttles whose message said the model ran out of tokens (the rest: requests, or unsaid)",
            &token_throttles,
        )?;
        emit(
            e,
            "model_fallback_failures",
            "Attempts that failed otherwise",
            &failures,
        )?;
        emit(
            e,
            "model_fallback_cooling",
            "1 while new requests skip the model",
            &cooling,
        )?;
        emit(
            e,
            "model_fallback_cooldown_remaining_seconds",
            "Time until the cooldown ends",
            &cooldown,
        )?;
        emit(
            e,
            "model_fallback_reopens_in_seconds",
            "Time until new requests try the model again",
            &reopens,
        )?;
        emit(e, "model_fallback_requests", "Requests received", &requests)?;
        emit(
            e,
            "model_fallback_requests_failed",
            "Requests no model answered",
            &failed,
        )?;
        emit(
            e,
            "model_fallback_requests_cancelled",
            "Requests dropped before they finished",
            &cancelled,
        )?;
        emit(
            e,
            "model_fallback_later_passes",
            "Passes through the chain begun after every model had failed once",
            &later_passes,
        )?;
        emit(
            e,
            "model_fallback_primary_usage_ratio",
            "Share of finished requests the primary answered",
            &primary_usage,
        )?;
        emit(
            e,
            "gateway_shared_state_connected",
            "1 while the chain's throttle state is shared with the other replicas (redis_url)",
            &shared_connected,
        )?;
        emit(
            e,
            "gateway_shared_state_lag_seconds",
            "How late the last event from another replica arrived",
            &shared_lag,
        )?;
        emit(
            e,
            "gateway_shared_state_sent",
            "Events published to the other replicas",
            &shared_sent,
        )?;
        emit(
            e,
            "gateway_shared_state_received",
            "Events of other replicas applied here",
            &shared_received,
        )?;
        emit(
            e,
            "gateway_shared_state_dropped",
            "Events that could not be published",
            &shared_dropped,
        )
    }
}

/// The process's CPU time, memory and file descriptors, read from `/proc` at scrape time (Linux;
/// elsewhere only the start time is reported).
#[derive(Debug)]
struct ProcessStats {
    started: SystemTime,
}

impl Collector for ProcessStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut encoder;
        let start = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        emit(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            &ConstGauge::new(start),
        )?;
        // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks of 1/100 s.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            let seconds = (user + system) as f64 / 100.0;
            emit(
                e,
                "process_cpu_seconds",
                "User and system CPU time spent",
                &ConstCounter::new(seconds),
            )?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let resident_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
        if let Some(kib) = resident_kib {
            emit(
                e,
                "process_resident_memory_bytes",
                "Resident memory size",
                &ConstGauge::new(kib * 1024),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            emit(
                e,
                "process_open_fds",
                "Open file descriptors",
                &ConstGauge::new(fds.count() as i64),
            )?;
        }
        Ok(())
    }
}

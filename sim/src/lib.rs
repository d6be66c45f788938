//! A deterministic simulation of Bedrock throttling that runs the real `tower-model-fallback` layer.
//!
//! It runs the real [`Fallback`] layer and the real policies against simulated
//! models on tokio's paused clock, on one thread, with seeded randomness: the same scenario, policy
//! and seed give the same [`Report`] byte for byte, and half an hour of traffic takes seconds.
//!
//! - **Models** throttle the way Bedrock does: a quota of requests and tokens per minute per model,
//!   refilled continuously and charged when a request starts (input tokens plus the output budget).
//!   An admitted call takes `latency_base + latency_per_output_token * output_tokens`, times a
//!   log-normal jitter; a throttle answers after `throttle_latency`. A streamed answer reaches the
//!   layer after `latency_base` (its first token) and streams on for the rest.
//! - **Users** think for an exponentially distributed time, send one request of a size drawn from
//!   the mix, wait for the answer, and repeat. Traffic shapes: steady, a ramp, or a burst of extra
//!   users.
//!
//! `cargo run --release -p tower-model-fallback-sim` prints the comparison table; see [`Report`] for what each
//! column means.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tower::ServiceExt;

use tower_model_fallback::Fallback;
use tower_model_fallback::ModelChain;
use tower_model_fallback::ModelId;
use tower_model_fallback::ModelRequest;
use tower_model_fallback::RequestId;
use tower_model_fallback::cluster::{
    ClusterApplier, ClusterEvent, ClusterPolicy, Clustered, LeaseDue,
};
use tower_model_fallback::error::{CoolingDown, DeadlineExceeded, FallbackError};
pub use tower_model_fallback::policy::PolicyKind;
use tower_model_fallback::policy::{AdaptiveCooldown, PacedCooldown};
use tower_model_fallback::{FallbackLayer, FallbackLayerBuilder, WhenAllCooling};

mod histogram;
mod model;
mod report;
mod scenario;
pub mod sweep;

use model::{SimBedrock, SimCall};
use report::Tally;
pub use report::{Outcome, Report, table};
pub use scenario::{RequestSize, Scenario, Shape, SimModel, parse_sizes};

/// The layer the simulator runs each policy in. When every model is cooling, the naive design
/// fails fast (the request fails when every model is blocked); the others try anyway. Every policy
/// makes the scenario's passes through the chain.
fn configure(builder: FallbackLayerBuilder, kind: PolicyKind, passes: u32) -> FallbackLayerBuilder {
    let when_all_cooling = match kind {
        PolicyKind::Fixed => WhenAllCooling::FailFast,
        _ => WhenAllCooling::TryAnyway,
    };
    builder.when_all_cooling(when_all_cooling).passes(passes)
}

/// Runs `scenario` under `policy` with `seed`.
pub fn run(scenario: &Scenario, policy: PolicyKind, seed: u64) -> Result<Report, tower::BoxError> {
    run_replicated(scenario, policy, seed, Replicas::ONE)
}

/// How many replicas of the service share the models' quotas, and whether they share their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// Replicas, each with its own layer and policy; users are spread over them round-robin, as a
    /// load balancer would.
    pub count: usize,
    /// `Some(delay)`: the replicas share their throttle state ([`Clustered`] policies), each event
    /// reaching the others `delay` after it was published (an in-memory store in place of Redis).
    /// The adaptive and paced policies can be shared.
    pub shared: Option<Duration>,
    /// With shared state, probe leases of this length ([`Clustered::set_probe_lease`]).
    pub probe_lease: Option<Duration>,
}

impl Replicas {
    /// One process: the default.
    pub const ONE: Replicas = Replicas {
        count: 1,
        shared: None,
        probe_lease: None,
    };

    /// `count` replicas, sharing their state with events `delay` late when `shared` is set.
    pub fn new(count: usize, shared: Option<Duration>) -> Replicas {
        Replicas {
            count,
            shared,
            probe_lease: None,
        }
    }
}

/// Runs `scenario` under `policy` with `seed`, on `replicas`.
pub fn run_replicated(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
    replicas: Replicas,
) -> Result<Report, tower::BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime
        .block_on(simulate(scenario, policy, seed, replicas, false))
        .map(|(report, _)| report)
}

/// One layer per replica; with shared state, an in-memory bus that delivers each replica's events
/// to the others after `delay`.
fn replica_layers(
    chain: &ModelChain,
    policy: PolicyKind,
    replicas: Replicas,
    passes: u32,
) -> Result<Vec<FallbackLayer>, tower::BoxError> {
    let count = replicas.count.max(1);
    let Some(delay) = replicas.shared else {
        return (0..count)
            .map(|_| {
                let builder = FallbackLayer::builder_shared(policy.with_defaults(chain.clone()));
                Ok(configure(builder, policy, passes).build()?)
            })
            .collect();
    };
    match policy {
        PolicyKind::Adaptive => {
            shared_layers(count, delay, replicas.probe_lease, policy, passes, || {
                AdaptiveCooldown::new(chain.clone())
            })
        }
        PolicyKind::Paced => {
            shared_layers(count, delay, replicas.probe_lease, policy, passes, || {
                PacedCooldown::new(chain.clone())
            })
        }
        other => Err(format!("the {other} policy cannot share its state").into()),
    }
}

/// How often a replica's lease task looks for a probe lease to contest when none is coming up (the
/// real driver is woken by events instead).
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Probe leases in memory: when each model's lease runs out.
type LeaseStore = Arc<Mutex<HashMap<ModelId, Instant>>>;

/// Contests `applier`'s probe leases in `store`, each contest `delay` late, as the Redis driver does
/// with `SET NX PX`.
async fn contest_leases<P: ClusterPolicy>(
    applier: ClusterApplier<P>,
    store: LeaseStore,
    delay: Duration,
) {
    loop {
        match applier.next_probe_lease() {
            LeaseDue::Contest { model, lease } => {
                tokio::time::sleep(delay).await;
                let now = Instant::now();
                let mut leases = store.lock().unwrap_or_else(PoisonError::into_inner);
                if leases.get(&model).is_some_and(|until| *until > now) {
                    applier.lost_probe_lease(&model);
                } else {
                    leases.insert(model.clone(), now + lease);
                    applier.won_probe_lease(&model);
                }
            }
            LeaseDue::Wait(wait) => tokio::time::sleep(wait.min(LEASE_POLL)).await,
            _ => tokio::time::sleep(LEASE_POLL).await,
        }
    }
}

/// `count` layers over [`Clustered`] policies from `make`, joined by an in-memory bus and lease
/// store.
fn shared_layers<P: ClusterPolicy>(
    count: usize,
    delay: Duration,
    probe_lease: Option<Duration>,
    kind: PolicyKind,
    passes: u32,
    make: impl Fn() -> P,
) -> Result<Vec<FallbackLayer>, tower::BoxError> {
    let mut layers = Vec::new();
    let mut outboxes = Vec::new();
    let mut appliers = Vec::new();
    for _ in 0..count {
        let (shared, link) = Clustered::new(make());
        if let Some(lease) = probe_lease {
            shared.set_probe_lease(lease);
        }
        let (outbox, applier) = link.into_parts();
        layers.push(configure(FallbackLayer::builder(shared), kind, passes).build()?);
        outboxes.push(outbox);
        appliers.push(applier);
    }
    let store = LeaseStore::default();
    if probe_lease.is_some() {
        for applier in &appliers {
            tokio::spawn(contest_leases(applier.clone(), store.clone(), delay));
        }
    }
    for (from, mut outbox) in outboxes.into_iter().enumerate() {
        let others: Vec<_> = appliers
            .iter()
            .enumerate()
            .filter(|(to, _)| *to != from)
            .map(|(_, applier)| applier.clone())
            .collect();
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(event) = outbox.next().await {
                // A throttle or a clearing success answers any probe: its lease ends.
                if let ClusterEvent::Throttled { model, .. } | ClusterEvent::Cleared { model } =
                    &event
                {
                    store
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(model);
                }
                for applier in &others {
                    let (applier, event) = (applier.clone(), event.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        applier.apply(&event, delay);
                    });
                }
            }
        });
    }
    Ok(layers)
}

/// Runs `scenario` and also returns every request's [`Outcome`], in the order they finished.
pub fn run_with_outcomes(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
) -> Result<(Report, Vec<Outcome>), tower::BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(simulate(scenario, policy, seed, Replicas::ONE, true))
}

/// What a run keeps of its requests: their sums, and the requests themselves only when asked.
struct Collector {
    tally: Tally,
    kept: Option<Vec<Outcome>>,
}

async fn simulate(
    scenario: &Scenario,
    policy: PolicyKind,
    seed: u64,
    replicas: Replicas,
    keep_outcomes: bool,
) -> Result<(Report, Vec<Outcome>), tower::BoxError> {
    scenario.validate()?;
    let start = Instant::now();
    let chain = ModelChain::new(scenario.models.iter().map(|m| m.id.as_str()))?;
    // Every replica calls the same simulated Bedrock: one account, one quota.
    let bedrock = SimBedrock::new(&scenario.models, scenario.max_tokens, scenario.streaming);
    let services: Vec<Fallback<SimBedrock>> =
        replica_layers(&chain, policy, replicas, scenario.passes)?
            .iter()
            .map(|layer| tower::Layer::layer(layer, bedrock.clone()))
            .collect();
    let outcomes = Arc::new(Mutex::new(Collector {
        tally: Tally::new(scenario),
        kept: keep_outcomes.then(Vec::new),
    }));
    let issued = Arc::new(AtomicUsize::new(0));
    let end = start + scenario.duration;

    let mut users = Vec::new();
    for (user, (from, until)) in scenario.user_windows().into_iter().enumerate() {
        let user_seed = seed ^ (user as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let task = user_loop(
            scenario.clone(),
            services[user % services.len()].clone(),
            StdRng::seed_from_u64(user_seed),
            start,
            (start + from, (start + until).min(end)),
            outcomes.clone(),
            issued.clone(),
        );
        users.push(tokio::spawn(task));
    }
    if scenario.arrivals_per_s > 0.0 {
        let arrivals_seed = seed ^ 0xA5A5_5A5A_DEAD_BEEF;
        users.push(tokio::spawn(open_loop(
            scenario.clone(),
            services.clone(),
            StdRng::seed_from_u64(arrivals_seed),
            start,
            outcomes.clone(),
            issued.clone(),
        )));
    }
    for user in users {
        user.await?;
    }
    let collector = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    let issued = issued.load(Ordering::Relaxed);
    let report = bedrock.upstream(|upstream| {
        Report::new(scenario, policy, seed, &collector.tally, upstream, issued)
    });
    let outcomes = collector.kept.clone().unwrap_or_default();
    Ok((report, outcomes))
}

async fn user_loop(
    scenario: Scenario,
    service: Fallback<SimBedrock>,
    mut rng: StdRng,
    origin: Instant,
    (from, until): (Instant, Instant),
    outcomes: Arc<Mutex<Collector>>,
    issued: Arc<AtomicUsize>,
) {
    tokio::time::sleep_until(from).await;
    loop {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let think = scenario.think_time.mul_f64(-u.ln());
        tokio::time::sleep(think).await;
        if Instant::now() >= until {
            return;
        }
        let size = scenario.pick_size(rng.random::<f64>());
        let call = SimCall::new(size, rng.random(), scenario.models.len());
        // A streamed answer goes on after its first token; the user reads it to the end.
        let streaming = send_one(&scenario, &service, call, origin, &outcomes, &issued).await;
        tokio::time::sleep(streaming).await;
    }
}

/// Requests that arrive on their own, at `scenario`'s arrival rate (a Poisson process), spread over
/// the replicas; each is sent at once, whatever the others are doing.
async fn open_loop(
    scenario: Scenario,
    services: Vec<Fallback<SimBedrock>>,
    mut rng: StdRng,
    origin: Instant,
    outcomes: Arc<Mutex<Collector>>,
    issued: Arc<AtomicUsize>,
) {
    let end = origin + scenario.duration;
    let mut running = tokio::task::JoinSet::new();
    for arrival in 0usize.. {
        let rate = scenario.arrival_rate(Instant::now().duration_since(origin));
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        tokio::time::sleep(Duration::from_secs_f64(-u.ln() / rate.max(1e-9)).min(end - origin))
            .await;
        if Instant::now() >= end {
            break;
        }
        let size = scenario.pick_size(rng.random::<f64>());
        let call = SimCall::new(size, rng.random(), scenario.models.len());
        let (scenario, outcomes, issued) = (scenario.clone(), outcomes.clone(), issued.clone());
        let service = services[arrival % services.len()].clone();
        running.spawn(async move {
            send_one(&scenario, &service, call, origin, &outcomes, &issued).await;
        });
        // Finished requests leave the set, so a long run keeps only those in flight.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Sends one request, `call`, through `service` and records its outcome; returns how long its
/// answer still streams.
async fn send_one(
    scenario: &Scenario,
    service: &Fallback<SimBedrock>,
    call: SimCall,
    origin: Instant,
    outcomes: &Mutex<Collector>,
    issued: &AtomicUsize,
) -> Duration {
    let started = Instant::now();
    // Ids in the order requests are issued, so that whatever the layer derives from them replays.
    let id = RequestId::new(issued.fetch_add(1, Ordering::Relaxed) as u64);
    let estimate = scenario.estimate(call.size);
    let tokens = call.size.total();
    let request = ModelRequest::new(call).with_id(id).with_cost(estimate);
    let result = service.clone().oneshot(request).await;
    let failed = match &result {
        Ok(served) => served.failed_attempts(),
        Err(error) => error
            .downcast_ref::<FallbackError>()
            .map(FallbackError::attempts)
            .or_else(|| {
                error
                    .downcast_ref::<DeadlineExceeded>()
                    .map(DeadlineExceeded::attempts)
            })
            .or_else(|| {
                error
                    .downcast_ref::<CoolingDown>()
                    .map(CoolingDown::attempts)
            })
            .unwrap_or_default(),
    };
    let mut trail: Vec<(usize, bool)> = failed
        .iter()
        .map(|a| {
            (
                index_of(scenario, a.model().as_str()),
                a.class().is_throttled(),
            )
        })
        .collect();
    let served_by = result
        .as_ref()
        .ok()
        .map(|s| index_of(scenario, s.model().as_str()));
    if let Some(model) = served_by {
        trail.push((model, false));
    }
    let outcome = Outcome {
        start: started.duration_since(origin),
        latency: started.elapsed(),
        served_by,
        tokens,
        attempts: trail,
    };
    let mut collector = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    collector.tally.record(&outcome);
    if let Some(kept) = &mut collector.kept {
        kept.push(outcome);
    }
    result.map_or(Duration::ZERO, |served| *served.response())
}

fn index_of(scenario: &Scenario, model: &str) -> usize {
    scenario
        .models
        .iter()
        .position(|m| m.id == model)
        .unwrap_or(usize::MAX)
}

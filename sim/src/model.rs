//! Simulated Bedrock models: quotas that refill continuously, latency that grows with output tokens,
//! throttles that answer fast.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tower_service::Service;

use super::SimModel;
use tower_model_fallback::classify::{QuotaLimit, StatusError};
use tower_model_fallback::testing::{QuotaState, out_of_daily_tokens, throttled};
use tower_model_fallback::{ModelRequest, TokenCost};

/// The upstream calls as they happen, added up: their number, and the primary's recovery after each
/// run of throttles (from the last throttle to the next admitted call), without keeping the calls.
#[derive(Debug)]
pub(crate) struct Upstream {
    origin: Instant,
    /// Calls received.
    pub(crate) calls: usize,
    last_throttle: Option<Instant>,
    recovery_sum_s: f64,
    recoveries: usize,
}

impl Upstream {
    fn new(origin: Instant) -> Self {
        Upstream {
            origin,
            calls: 0,
            last_throttle: None,
            recovery_sum_s: 0.0,
            recoveries: 0,
        }
    }

    fn record(&mut self, at: Instant, model: usize, throttled: bool) {
        self.calls += 1;
        if model != 0 {
            return;
        }
        match (throttled, self.last_throttle) {
            (true, _) => self.last_throttle = Some(at),
            (false, Some(throttle)) => {
                self.recovery_sum_s += at.duration_since(throttle.max(self.origin)).as_secs_f64();
                self.recoveries += 1;
                self.last_throttle = None;
            }
            (false, None) => {}
        }
    }

    /// Mean time from the last throttle of each run of primary throttles to the next admitted
    /// primary call; `None` without throttles.
    pub(crate) fn recovery_s(&self) -> Option<f64> {
        (self.recoveries > 0).then(|| self.recovery_sum_s / self.recoveries as f64)
    }
}

struct State {
    quotas: Vec<QuotaState>,
    /// Tokens charged today per model, and when the day started, for daily quotas.
    today: Vec<u64>,
    day_started: Instant,
    upstream: Upstream,
    /// Calls in flight per model.
    in_flight: Vec<u32>,
}

/// The simulated Bedrock: one service for every model, keyed by the attempt's model id.
#[derive(Clone)]
pub(crate) struct SimBedrock {
    models: Arc<[SimModel]>,
    max_tokens: Option<u32>,
    streaming: bool,
    state: Arc<Mutex<State>>,
}

impl SimBedrock {
    /// Must be created on the simulation's clock: quota buckets start full now.
    pub(crate) fn new(models: &[SimModel], max_tokens: Option<u32>, streaming: bool) -> Self {
        SimBedrock {
            models: models.into(),
            max_tokens,
            streaming,
            state: Arc::new(Mutex::new(State {
                quotas: models
                    .iter()
                    .map(|m| QuotaState::with_burst(m.quota, m.burst))
                    .collect(),
                upstream: Upstream::new(Instant::now()),
                in_flight: vec![0; models.len()],
                today: vec![0; models.len()],
                day_started: Instant::now(),
            })),
        }
    }

    /// What the calls so far added up to.
    pub(crate) fn upstream<T>(&self, read: impl FnOnce(&Upstream) -> T) -> T {
        read(
            &self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .upstream,
        )
    }
}

/// A standard normal sample (Box-Muller), for log-normal latency jitter.
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What a simulated request carries to the model: its size, and the seed of every random draw a
/// model makes for it.
///
/// The draws belong to the request, not to the order calls reach the model: the same request on the
/// same model is throttled, fails or takes as long under every policy, so two policies compared on
/// one seed differ by what they decide rather than by the luck of the draws (common random numbers).
/// A request that calls a model again (on a later pass) draws afresh: a retry is a new call.
#[derive(Clone, Debug)]
pub(crate) struct SimCall {
    pub(crate) size: TokenCost,
    luck: u64,
    /// Calls this request has made on each model.
    calls: Arc<[AtomicU32]>,
}

impl SimCall {
    /// A request of `size` with the seed `luck`, on a chain of `models`.
    pub(crate) fn new(size: TokenCost, luck: u64, models: usize) -> Self {
        SimCall {
            size,
            luck,
            calls: (0..models).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The draws of this request's next call on the model at `index`.
    fn next_draws(&self, index: usize) -> StdRng {
        let repeat = self
            .calls
            .get(index)
            .map_or(0, |calls| calls.fetch_add(1, Ordering::Relaxed));
        let model = (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let repeat = u64::from(repeat).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        StdRng::seed_from_u64(self.luck ^ model ^ repeat)
    }
}

impl Service<ModelRequest<SimCall>> for SimBedrock {
    /// How long a served answer still streams after the layer has it (zero unless the scenario
    /// streams).
    type Response = Duration;
    type Error = StatusError;
    type Future = Pin<Box<dyn Future<Output = Result<Duration, StatusError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<SimCall>) -> Self::Future {
        let index = request
            .model()
            .and_then(|m| self.models.iter().position(|sim| sim.id == m.as_str()));
        let Some(index) = index else {
            return Box::pin(async {
                Err(StatusError::new(404).with_code("ResourceNotFoundException"))
            });
        };
        let model = &self.models[index];
        let size = request.body().size;
        let mut draws = request.body().next_draws(index);
        let (answer, latency) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let state = &mut *state;
            // How loaded the model is: 1 when idle, 2 at the knee. Random draws happen only for
            // the effects a scenario turns on, so scenarios without them replay as before.
            let load = model
                .concurrency_knee
                .map(|knee| 1.0 + f64::from(state.in_flight[index]) / f64::from(knee));
            let capacity_throttle = model.capacity_throttle_rate > 0.0
                && draws.random::<f64>() < model.capacity_throttle_rate * load.unwrap_or(1.0);
            let unavailable = !capacity_throttle
                && model.server_error_rate > 0.0
                && draws.random::<f64>() < model.server_error_rate;
            // Charged up front: the input and the output budget; settled to the real output when
            // the answer ends.
            let budget = self.max_tokens.unwrap_or(size.output);
            let charged = size
                .input
                .saturating_add(budget.saturating_mul(model.output_burndown));
            let used = size
                .input
                .saturating_add(size.output.saturating_mul(model.output_burndown));
            let day = Duration::from_secs(24 * 3600);
            if Instant::now().duration_since(state.day_started) >= day {
                state.day_started += day;
                state.today.iter_mut().for_each(|t| *t = 0);
            }
            let over_daily = model
                .tokens_per_day
                .is_some_and(|limit| state.today[index] + u64::from(charged) > limit);
            let answer = if !state.quotas[index].fits(charged) {
                Answer::TooLarge
            } else if over_daily {
                Answer::Throttled(None)
            } else if capacity_throttle {
                // The caller cannot tell a capacity throttle from an empty request quota.
                Answer::Throttled(Some(QuotaLimit::Requests))
            } else if unavailable {
                Answer::Unavailable
            } else if let Err(limit) = state.quotas[index].try_take(charged) {
                Answer::Throttled(Some(limit))
            } else {
                state.today[index] += u64::from(charged);
                let timed_out =
                    model.timeout_rate > 0.0 && draws.random::<f64>() < model.timeout_rate;
                if timed_out {
                    Answer::TimedOut {
                        charged,
                        used: size.input,
                    }
                } else {
                    Answer::Served { charged, used }
                }
            };
            // How long until the answer reaches the layer, and how long it streams after that: a
            // stream reaches it after the base latency.
            let latency = match answer {
                Answer::Served { .. } => {
                    let jitter = (model.latency_jitter * normal(&mut draws)).exp();
                    let scaled = |d: Duration| {
                        let d = d.mul_f64(jitter);
                        load.map_or(d, |load| d.mul_f64(load))
                    };
                    let output = model.latency_per_output_token * size.output;
                    if self.streaming {
                        (scaled(model.latency_base), scaled(output))
                    } else {
                        (scaled(model.latency_base + output), Duration::ZERO)
                    }
                }
                Answer::Unavailable => (model.latency_base, Duration::ZERO),
                Answer::TimedOut { .. } => (model.timeout_after, Duration::ZERO),
                Answer::Throttled(_) | Answer::TooLarge => (model.throttle_latency, Duration::ZERO),
            };
            state.upstream.record(
                Instant::now(),
                index,
                matches!(answer, Answer::Throttled(_)),
            );
            let cap = Duration::from_secs(300);
            (answer, (latency.0.min(cap), latency.1.min(cap)))
        };
        let in_flight = InFlight::start(&self.state, index);
        let state = self.state.clone();
        let (first, rest) = latency;
        Box::pin(async move {
            tokio::time::sleep(first).await;
            match answer {
                Answer::Served { charged, used } => {
                    // The call stays in flight, and its tokens unsettled, until its answer ends.
                    let ended = async move {
                        if !rest.is_zero() {
                            tokio::time::sleep(rest).await;
                        }
                        drop(in_flight);
                        settle(&state, index, charged, used);
                    };
                    if rest.is_zero() {
                        ended.await;
                    } else {
                        tokio::spawn(ended);
                    }
                    Ok(rest)
                }
                Answer::TooLarge => Err(StatusError::new(400)
                    .with_code("ValidationException")
                    .with_message("Input is too long for requested model.")),
                Answer::Throttled(Some(limit)) => Err(throttled(limit)),
                Answer::Throttled(None) => Err(out_of_daily_tokens()),
                Answer::Unavailable => {
                    Err(StatusError::new(503).with_code("ServiceUnavailableException"))
                }
                Answer::TimedOut { charged, used } => {
                    drop(in_flight);
                    settle(&state, index, charged, used);
                    Err(StatusError::new(408)
                        .with_code("ModelTimeoutException")
                        .with_message("Model has timed out in processing the request."))
                }
            }
        })
    }
}

/// Settles a call that charged `charged` tokens up front to the `used` it really used.
fn settle(state: &Mutex<State>, index: usize, charged: u32, used: u32) {
    if charged != used {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.quotas[index].settle(charged, used);
        let today = state.today[index] + u64::from(used);
        state.today[index] = today.saturating_sub(u64::from(charged));
    }
}

/// What the simulated model answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Served, having charged `charged` tokens up front and used `used`.
    Served {
        charged: u32,
        used: u32,
    },
    /// Throttled because this quota ran out; `None`: the daily token quota.
    Throttled(Option<QuotaLimit>),
    Unavailable,
    /// Admitted, then hung until the model's processing timeout, having used only its input.
    TimedOut {
        charged: u32,
        used: u32,
    },
    /// Larger than a minute's token quota: never served.
    TooLarge,
}

/// A call in flight on a model, counted until its answer (or until the caller gives up on it).
struct InFlight {
    state: Arc<Mutex<State>>,
    model: usize,
}

impl InFlight {
    fn start(state: &Arc<Mutex<State>>, model: usize) -> Self {
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight[model] += 1;
        InFlight {
            state: state.clone(),
            model,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight[self.model] = state.in_flight[self.model].saturating_sub(1);
    }
}

//! Simulated Bedrock models: quotas that refill continuously, latency that grows with output tokens,
//! throttles that answer fast.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tower_service::Service;

use super::SimModel;
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::testing::QuotaState;
use tower_model_fallback::{ModelRequest, TokenCost};

/// One upstream call, as the simulated Bedrock saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) at: Instant,
    pub(crate) model: usize,
    pub(crate) throttled: bool,
}

struct State {
    quotas: Vec<QuotaState>,
    rng: StdRng,
    calls: Vec<Call>,
}

/// The simulated Bedrock: one service for every model, keyed by the attempt's model id.
#[derive(Clone)]
pub(crate) struct SimBedrock {
    models: Arc<[SimModel]>,
    state: Arc<Mutex<State>>,
}

impl SimBedrock {
    /// Must be created on the simulation's clock: quota buckets start full now.
    pub(crate) fn new(models: &[SimModel], seed: u64) -> Self {
        SimBedrock {
            models: models.into(),
            state: Arc::new(Mutex::new(State {
                quotas: models
                    .iter()
                    .map(|m| QuotaState::with_burst(m.quota, m.burst))
                    .collect(),
                rng: StdRng::seed_from_u64(seed),
                calls: Vec::new(),
            })),
        }
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .calls
            .clone()
    }
}

/// A standard normal sample (Box-Muller), for log-normal latency jitter.
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Service<ModelRequest<TokenCost>> for SimBedrock {
    type Response = ();
    type Error = StatusError;
    type Future = Pin<Box<dyn Future<Output = Result<(), StatusError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StatusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<TokenCost>) -> Self::Future {
        let index = request
            .model()
            .and_then(|m| self.models.iter().position(|sim| sim.id == m.as_str()));
        let Some(index) = index else {
            return Box::pin(async {
                Err(StatusError::new(404).with_code("ResourceNotFoundException"))
            });
        };
        let model = &self.models[index];
        let size = *request.body();
        let (admitted, latency) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let tokens = size.input.saturating_add(size.output);
            let admitted = state.quotas[index].try_take(tokens);
            let latency = if admitted {
                let jitter = (model.latency_jitter * normal(&mut state.rng)).exp();
                (model.latency_base + model.latency_per_output_token * size.output).mul_f64(jitter)
            } else {
                model.throttle_latency
            };
            state.calls.push(Call {
                at: Instant::now(),
                model: index,
                throttled: !admitted,
            });
            (admitted, latency.min(Duration::from_secs(300)))
        };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            if admitted {
                Ok(())
            } else {
                Err(StatusError::new(429)
                    .with_code("ThrottlingException")
                    .with_message("Too many requests, please wait before trying again."))
            }
        })
    }
}

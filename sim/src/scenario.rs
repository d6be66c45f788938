//! What a simulation runs: models, users, traffic shape, request sizes.

use std::time::Duration;

use tower_model_fallback::TokenCost;
use tower_model_fallback::testing::Quota;

/// One simulated model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimModel {
    /// Model id.
    pub id: String,
    /// Requests and tokens per minute.
    #[serde(skip)]
    pub quota: Quota,
    /// How much quota the buckets hold: a model idle this long can take a burst of this much
    /// quota at once.
    pub burst: Duration,
    /// Time to answer before any output token.
    pub latency_base: Duration,
    /// Time per output token.
    pub latency_per_output_token: Duration,
    /// Sigma of the log-normal factor on latency (0 for none).
    pub latency_jitter: f64,
    /// Time to answer a throttle.
    pub throttle_latency: Duration,
    /// Chance that a call is throttled although its quota has room (on-demand capacity is short at
    /// the provider), before any load; it rises with the model's calls in flight (see
    /// `concurrency_knee`). Such a throttle does not charge the quota.
    pub capacity_throttle_rate: f64,
    /// Chance that a call fails with a 503 `ServiceUnavailableException` after the base latency,
    /// without charging the quota.
    pub server_error_rate: f64,
    /// Chance that a call the quota admits runs into the model's processing timeout: it hangs for
    /// `timeout_after` and then fails with a 408 `ModelTimeoutException`, having charged its request
    /// and its input tokens.
    pub timeout_rate: f64,
    /// How long a call that times out hangs first.
    pub timeout_after: Duration,
    /// How many tokens of quota each output token burns (Bedrock documents 5 for some Claude
    /// models); 1 for most.
    pub output_burndown: u32,
    /// A daily token quota next to the per-minute one (a day of simulated time, then it starts
    /// over); `None` for none.
    pub tokens_per_day: Option<u64>,
    /// Calls in flight at which the model's latency has doubled (it grows linearly with them), and
    /// its capacity throttles too; `None`: latency does not depend on load.
    pub concurrency_knee: Option<u32>,
}

/// How many users are active when.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Shape {
    /// Every user is active for the whole run.
    Steady,
    /// Users join one by one, evenly over this time.
    Ramp(Duration),
    /// `extra_users` more users are active from `at` for `length`.
    Burst {
        /// When the burst starts.
        at: Duration,
        /// How long it lasts.
        length: Duration,
        /// How many users it adds.
        extra_users: usize,
    },
}

/// One kind of request in the size mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RequestSize {
    /// Relative frequency.
    pub weight: u32,
    /// Input tokens.
    pub input_tokens: u32,
    /// Output tokens (also the output budget charged against the quota).
    pub output_tokens: u32,
}

/// A workload.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Scenario {
    /// Name in tables.
    pub name: String,
    /// Simulated time.
    pub duration: Duration,
    /// Users active from the start.
    pub users: usize,
    /// Mean think time between a user's answer and their next request.
    pub think_time: Duration,
    /// Traffic shape.
    pub shape: Shape,
    /// Requests per second arriving on their own (a Poisson process), next to the users' closed
    /// loop: a policy that fails fast does not get to send more of them. 0 for none.
    pub arrivals_per_s: f64,
    /// Whether the open-loop arrival rate follows a day's curve: from a quarter of the rate at the
    /// run's start up to the full rate at its middle and back, as one day compressed into the run.
    pub diurnal: bool,
    /// The output budget (`max_tokens`) every request declares: when set, Bedrock charges it
    /// (times the model's burndown) with the input at the start and settles to the real output at
    /// the end; `None` charges the real output at the start.
    pub max_tokens: Option<u32>,
    /// Whether answers stream (ConverseStream): the layer's attempt ends at the first token, after
    /// the model's base latency, and the rest of the answer streams for its per-token time while
    /// the user waits and the call stays in flight. The latency columns are then times to first
    /// token.
    pub streaming: bool,
    /// Request size mix.
    pub sizes: Vec<RequestSize>,
    /// Models in chain order: the first is the primary.
    pub models: Vec<SimModel>,
    /// Passes the layer makes through the chain before a request fails (1: each model once; see
    /// `FallbackLayerBuilder::passes`).
    pub passes: u32,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Scenario {
    /// The default scenario: 54 users (think time 20 s) for 30 minutes, each request declaring an
    /// output budget of 2,048 tokens as Bedrock charges it; a fast primary (140 requests per minute,
    /// buckets holding 5 s of quota) whose quota is just under the demand, and a slower fallback (125
    /// per minute). Calibrated by sweeping users, the primary's latency and the fallback's quota until
    /// the naive policy landed near a production deployment's figures with a global block (primary
    /// usage 45%, mean 3.2 s, success 94%) and the adaptive one near its figures after the switch
    /// (78%, 2.1 s, 99%); docs/simulator.md has the figures it gives.
    pub fn default_scenario() -> Self {
        Scenario {
            name: "default".into(),
            duration: Duration::from_secs(30 * 60),
            users: 54,
            think_time: Duration::from_secs(20),
            shape: Shape::Steady,
            arrivals_per_s: 0.0,
            diurnal: false,
            max_tokens: Some(2_048),
            streaming: false,
            sizes: vec![
                RequestSize {
                    weight: 70,
                    input_tokens: 500,
                    output_tokens: 200,
                },
                RequestSize {
                    weight: 25,
                    input_tokens: 2_000,
                    output_tokens: 600,
                },
                RequestSize {
                    weight: 5,
                    input_tokens: 8_000,
                    output_tokens: 1_500,
                },
            ],
            models: vec![
                SimModel {
                    id: "primary".into(),
                    quota: Quota::new(140, 400_000),
                    burst: Duration::from_secs(5),
                    latency_base: ms(500),
                    latency_per_output_token: Duration::from_micros(2_500),
                    latency_jitter: 0.3,
                    throttle_latency: ms(50),
                    capacity_throttle_rate: 0.0,
                    server_error_rate: 0.0,
                    timeout_rate: 0.0,
                    timeout_after: Duration::from_secs(60),
                    output_burndown: 1,
                    tokens_per_day: None,
                    concurrency_knee: None,
                },
                SimModel {
                    id: "fallback".into(),
                    quota: Quota::new(125, 500_000),
                    burst: Duration::from_secs(10),
                    latency_base: ms(1_500),
                    latency_per_output_token: ms(9),
                    latency_jitter: 0.3,
                    throttle_latency: ms(50),
                    capacity_throttle_rate: 0.0,
                    server_error_rate: 0.0,
                    timeout_rate: 0.0,
                    timeout_after: Duration::from_secs(60),
                    output_burndown: 1,
                    tokens_per_day: None,
                    concurrency_knee: None,
                },
            ],
            passes: 1,
        }
    }

    /// The default scenario with 60 extra users for 5 minutes in the middle.
    pub fn big_burst() -> Self {
        Scenario {
            name: "big-burst".into(),
            shape: Shape::Burst {
                at: Duration::from_secs(12 * 60),
                length: Duration::from_secs(5 * 60),
                extra_users: 60,
            },
            ..Scenario::default_scenario()
        }
    }

    /// A primary whose quota is a third of the demand, with a third model behind the fallback.
    pub fn starved_primary() -> Self {
        let mut scenario = Scenario::default_scenario();
        scenario.name = "starved-primary".into();
        scenario.models[0].quota = Quota::new(50, 150_000);
        scenario.models[1].quota = Quota::new(100, 300_000);
        scenario.models.push(SimModel {
            id: "last-resort".into(),
            quota: Quota::new(100, 300_000),
            burst: Duration::from_secs(10),
            latency_base: ms(2_000),
            latency_per_output_token: ms(10),
            latency_jitter: 0.3,
            throttle_latency: ms(50),
            capacity_throttle_rate: 0.0,
            server_error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_after: Duration::from_secs(60),
            output_burndown: 1,
            tokens_per_day: None,
            concurrency_knee: None,
        });
        scenario
    }

    /// Thousands of requests per second against a primary whose quota refills at one request per
    /// second (a minute's worth in its bucket) and answers at once, with a fallback that never throttles: a pace must
    /// not let more than the quota's refill through, however many requests ask. Not in
    /// [`all`](Self::all): it measures one failure mode rather than a deployment.
    pub fn flood() -> Self {
        let mut scenario = Scenario::default_scenario();
        scenario.name = "flood".into();
        scenario.duration = Duration::from_secs(60);
        scenario.users = 2_000;
        scenario.think_time = ms(200);
        scenario.models[0].quota = Quota::new(60, 10_000_000);
        scenario.models[0].burst = Duration::from_secs(60);
        // Answers come back faster than throttles, so the bucket's burst is served (and seen as a
        // rate) before the first throttle arrives, as it is on a fast upstream.
        scenario.models[0].latency_base = ms(5);
        scenario.models[0].latency_per_output_token = Duration::ZERO;
        scenario.models[0].latency_jitter = 0.0;
        scenario.models[0].throttle_latency = ms(20);
        scenario.models[1].quota = Quota::new(10_000_000, 4_000_000_000);
        scenario.models[1].latency_base = ms(300);
        scenario.models[1].latency_per_output_token = Duration::ZERO;
        scenario
    }

    /// The named scenarios.
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario::default_scenario(),
            Scenario::big_burst(),
            Scenario::starved_primary(),
        ]
    }

    /// The scenario called `name`: one of [`all`](Self::all), or `flood`.
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::all()
            .into_iter()
            .chain([Scenario::flood()])
            .find(|s| s.name == name)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() || self.sizes.iter().all(|s| s.weight == 0) {
            return Err("a scenario needs at least one model and one request size".into());
        }
        if self.think_time.is_zero() {
            return Err("think time must be longer than zero".into());
        }
        if !(self.arrivals_per_s >= 0.0 && self.arrivals_per_s.is_finite()) {
            return Err("the arrival rate must be a finite number, 0 or more".into());
        }
        for model in &self.models {
            for rate in [
                model.capacity_throttle_rate,
                model.server_error_rate,
                model.timeout_rate,
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("{}: rates are chances from 0 to 1", model.id));
                }
            }
            if model.output_burndown == 0 {
                return Err(format!(
                    "{}: the output burndown must be 1 or more",
                    model.id
                ));
            }
            if model.concurrency_knee == Some(0) {
                return Err(format!(
                    "{}: the concurrency knee must be above 0",
                    model.id
                ));
            }
        }
        Ok(())
    }

    /// When each user is active, as offsets from the start.
    pub(crate) fn user_windows(&self) -> Vec<(Duration, Duration)> {
        let all = (Duration::ZERO, self.duration);
        match &self.shape {
            Shape::Steady => vec![all; self.users],
            Shape::Ramp(over) => (0..self.users)
                .map(|i| {
                    (
                        over.mul_f64(i as f64 / self.users.max(1) as f64),
                        self.duration,
                    )
                })
                .collect(),
            Shape::Burst {
                at,
                length,
                extra_users,
            } => {
                let mut windows = vec![all; self.users];
                windows.extend(std::iter::repeat_n((*at, *at + *length), *extra_users));
                windows
            }
        }
    }

    /// Keeps `count` models: the first ones, or copies of the last one (`fallback-2`, ...) after it.
    pub fn set_model_count(&mut self, count: usize) -> Result<(), String> {
        let Some(last) = self.models.last().cloned() else {
            return Err("the scenario has no model to copy".into());
        };
        if count == 0 {
            return Err("a chain needs at least one model".into());
        }
        self.models.truncate(count);
        while self.models.len() < count {
            let copy = SimModel {
                id: format!("{}-{}", last.id, self.models.len()),
                ..last.clone()
            };
            self.models.push(copy);
        }
        Ok(())
    }

    /// The open-loop arrival rate `at` into the run, in requests per second.
    pub(crate) fn arrival_rate(&self, at: Duration) -> f64 {
        if !self.diurnal {
            return self.arrivals_per_s;
        }
        let phase = at.as_secs_f64() / self.duration.as_secs_f64().max(f64::MIN_POSITIVE);
        // A quarter at the start and the end, all of it at the middle.
        let curve = 0.625 - 0.375 * (std::f64::consts::TAU * phase).cos();
        self.arrivals_per_s * curve
    }

    /// The request size for a uniform draw `u` in `[0, 1)`.
    pub(crate) fn pick_size(&self, u: f64) -> TokenCost {
        let total: u32 = self.sizes.iter().map(|s| s.weight).sum();
        let mut target = u * f64::from(total);
        for size in &self.sizes {
            target -= f64::from(size.weight);
            if target < 0.0 {
                return TokenCost::new(size.input_tokens, size.output_tokens);
            }
        }
        self.sizes.last().map_or(TokenCost::default(), |s| {
            TokenCost::new(s.input_tokens, s.output_tokens)
        })
    }

    /// What the caller can tell the layer about a request of `size` before its answer, as the
    /// gateway estimates it: the input and the output budget it declares (the real output only
    /// where the scenario declares no budget).
    pub(crate) fn estimate(&self, size: TokenCost) -> TokenCost {
        self.max_tokens
            .map_or(size, |budget| TokenCost::new(size.input, budget))
    }
}

/// Parses a request-size mix: `WEIGHT:INPUT:OUTPUT` per size, comma-separated.
pub fn parse_sizes(text: &str) -> Result<Vec<RequestSize>, String> {
    let sizes = text
        .split(',')
        .map(|size| {
            let fields: Vec<&str> = size.trim().split(':').collect();
            let [weight, input, output] = fields[..] else {
                return Err(format!("{size:?}: expected WEIGHT:INPUT:OUTPUT"));
            };
            let number = |field: &str| {
                field
                    .parse::<u32>()
                    .map_err(|e| format!("{size:?}: {field:?}: {e}"))
            };
            Ok(RequestSize {
                weight: number(weight)?,
                input_tokens: number(input)?,
                output_tokens: number(output)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if sizes.iter().all(|s| s.weight == 0) {
        return Err("the size mix needs a weight above 0".into());
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_is_told_the_declared_budget_not_the_output_to_come() {
        let mut scenario = Scenario::default_scenario();
        let size = TokenCost::new(500, 200);
        assert_eq!(scenario.estimate(size), TokenCost::new(500, 2_048));
        scenario.max_tokens = None;
        assert_eq!(scenario.estimate(size), size);
    }
}

//! A grid of workloads the built-in scenarios do not cover, every policy on each, compared with the
//! adaptive policy metric by metric.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_model_fallback::policy::PolicyKind;

use super::{Report, Scenario};

/// One workload of the grid: the default scenario's models with these numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Users active from the start.
    pub users: usize,
    /// Mean think time in seconds.
    pub think_s: f64,
    /// The primary's requests per minute.
    pub primary_rpm: u32,
    /// Seconds of quota the buckets hold.
    pub burst_s: f64,
    /// Chance of a capacity throttle on any call.
    pub capacity_throttles: f64,
    /// Bedrock's token accounting with a 2,048-token budget and a 5x output burndown on the
    /// primary, or the real output charged at the start.
    pub token_accounting: bool,
    /// Simulated minutes.
    pub minutes: u64,
    /// The first seed.
    pub seed: u64,
    /// Seeds each policy runs (`seed`, `seed + 10,000`, ...); the metrics compared are their means.
    pub seeds: u64,
}

impl Workload {
    /// The scenario it runs.
    pub fn scenario(&self) -> Scenario {
        let mut scenario = Scenario::default_scenario();
        scenario.name = "sweep".into();
        scenario.users = self.users;
        scenario.think_time = Duration::from_secs_f64(self.think_s);
        scenario.duration = Duration::from_secs(self.minutes * 60);
        let tpm = scenario.models[0].quota.tokens_per_minute;
        scenario.models[0].quota = tower_model_fallback::testing::Quota::new(self.primary_rpm, tpm);
        for model in &mut scenario.models {
            model.burst = Duration::from_secs_f64(self.burst_s);
            model.capacity_throttle_rate = self.capacity_throttles;
        }
        if self.token_accounting {
            scenario.max_tokens = Some(2_048);
            scenario.models[0].output_burndown = 5;
        } else {
            scenario.max_tokens = None;
        }
        scenario
    }

    /// The most requests per minute its users can send (one each think time, answers taking no
    /// time) over the chain's request quotas together: an upper bound on the load.
    pub fn request_load(&self) -> f64 {
        let capacity: f64 = self
            .scenario()
            .models
            .iter()
            .map(|model| f64::from(model.quota.requests_per_minute))
            .sum();
        self.users as f64 * 60.0 / self.think_s / capacity.max(1.0)
    }

    /// The command that runs it alone (on its first seed).
    pub fn command(&self) -> String {
        let mut command = format!(
            "cargo run --release -p tower-model-fallback-sim -- --scenario default --users {} \
             --think-s {} --primary-rpm {} --burst-s {} --minutes {} --seed {}",
            self.users, self.think_s, self.primary_rpm, self.burst_s, self.minutes, self.seed
        );
        if self.capacity_throttles > 0.0 {
            let _ = write!(command, " --capacity-throttles {}", self.capacity_throttles);
        }
        if self.token_accounting {
            command.push_str(" --max-tokens 2048 --output-burndown 5");
        } else {
            command.push_str(" --max-tokens 0");
        }
        command
    }
}

/// The grid: users 10-300, think time 0.5-60 s, the primary's quota from starved to ample, buckets
/// from half a second to a minute, with and without capacity throttles and token accounting:
/// 5 x 4 x 3 x 3 x 2 x 2 = 720 workloads of `minutes` each, `seeds` seeds each.
pub fn grid(minutes: u64, seeds: u64) -> Vec<Workload> {
    let mut grid = Vec::new();
    for users in [10, 30, 55, 100, 300] {
        for think_s in [0.5, 5.0, 20.0, 60.0] {
            for primary_rpm in [50, 140, 400] {
                for burst_s in [0.5, 5.0, 60.0] {
                    for capacity_throttles in [0.0, 0.01] {
                        for token_accounting in [false, true] {
                            let seed = grid.len() as u64 + 1;
                            grid.push(Workload {
                                users,
                                think_s,
                                primary_rpm,
                                burst_s,
                                capacity_throttles,
                                token_accounting,
                                minutes,
                                seed,
                                seeds: seeds.max(1),
                            });
                        }
                    }
                }
            }
        }
    }
    grid
}

/// One metric of a report, and how much worse than the adaptive policy still counts as "as good".
struct Metric {
    name: &'static str,
    /// The metric of one run; a policy's value on a workload is the mean over its seeds.
    value: fn(&Report) -> f64,
    /// How much worse a policy's value is than the adaptive policy's (positive: worse), in the
    /// metric's unit.
    worse_by: fn(policy: f64, adaptive: f64) -> f64,
    tolerance: f64,
    unit: &'static str,
}

fn points(policy: f64, adaptive: f64) -> f64 {
    (adaptive - policy) * 100.0
}

fn excess(policy: f64, adaptive: f64) -> f64 {
    policy - adaptive
}

const METRICS: [Metric; 6] = [
    Metric {
        name: "primary share",
        value: |r| r.primary_usage,
        worse_by: points,
        tolerance: 0.5,
        unit: " points",
    },
    Metric {
        name: "success",
        value: |r| r.success_rate,
        worse_by: points,
        tolerance: 0.5,
        unit: " points",
    },
    Metric {
        name: "mean latency",
        value: |r| r.mean_latency_s,
        worse_by: relative,
        tolerance: 2.0,
        unit: "%",
    },
    Metric {
        name: "p99 latency",
        value: |r| r.p99_latency_s,
        worse_by: relative,
        tolerance: 2.0,
        unit: "%",
    },
    Metric {
        name: "throttled/request",
        value: |r| r.throttled_per_request,
        worse_by: excess,
        tolerance: 0.001,
        unit: "",
    },
    Metric {
        name: "calls/request",
        value: |r| r.attempts_per_request,
        worse_by: excess,
        tolerance: 0.001,
        unit: "",
    },
];

impl Metric {
    /// How much worse `policy`'s runs are than `adaptive`'s, their means compared.
    fn worse(&self, policy: &Runs, adaptive: &Runs) -> f64 {
        (self.worse_by)(mean(policy, self.value), mean(adaptive, self.value))
    }
}

/// The mean of `value` over `runs`.
fn mean(runs: &Runs, value: fn(&Report) -> f64) -> f64 {
    runs.iter().map(value).sum::<f64>() / runs.len().max(1) as f64
}

/// How much larger `value` is than `base`, in percent.
fn relative(value: f64, base: f64) -> f64 {
    if base <= 0.0 {
        if value <= 0.0 { 0.0 } else { 100.0 }
    } else {
        (value / base - 1.0) * 100.0
    }
}

/// What the adaptive policy's seeds are moved by for the noise floor: the same policy, other seeds.
const OTHER_SEED: u64 = 1_000_003;
/// Between one seed of a workload and its next (grid seeds run from 1 to 720).
const SEED_STRIDE: u64 = 10_000;

/// One policy's reports on one workload, a report per seed.
pub type Runs = Vec<Report>;

/// Runs every policy on every workload of `grid` on `threads` threads; per workload, the runs in
/// the order of [`PolicyKind::ALL`], then the adaptive policy once more on other seeds (the noise
/// floor of the comparison). The same grid gives the same reports, whatever `threads` is.
pub fn run(grid: &[Workload], threads: usize) -> Result<Vec<Vec<Runs>>, tower::BoxError> {
    // Workers take the next workload as they finish one, so a slow part of the grid is shared.
    let next = AtomicUsize::new(0);
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(workload) = grid.get(index) else {
                            return done;
                        };
                        let scenario = workload.scenario();
                        let other_seeds = (PolicyKind::Adaptive, workload.seed + OTHER_SEED);
                        let reports = PolicyKind::ALL
                            .iter()
                            .map(|&policy| (policy, workload.seed))
                            .chain([other_seeds])
                            .map(|(policy, first)| {
                                (0..workload.seeds)
                                    .map(|k| super::run(&scenario, policy, first + k * SEED_STRIDE))
                                    .collect::<Result<Runs, _>>()
                            })
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string());
                        done.push((index, reports));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| "a sweep worker panicked".to_string())
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut ordered: Vec<(usize, Result<Vec<Runs>, String>)> =
        results.into_iter().flatten().collect();
    ordered.sort_by_key(|(index, _)| *index);
    Ok(ordered
        .into_iter()
        .map(|(_, reports)| reports)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Per policy and metric: the share of workloads where the policy is at least as good as the
/// adaptive policy within the metric's tolerance, and the worst case with its command. The last row
/// compares the adaptive policy with itself on other seeds: how often a policy no better and no
/// worse passes, the ceiling the comparison can show with this many seeds.
pub fn table(grid: &[Workload], reports: &[Vec<Runs>]) -> String {
    let mut out = String::new();
    let adaptive = PolicyKind::ALL
        .iter()
        .position(|p| *p == PolicyKind::Adaptive)
        .unwrap_or(0);
    let seeds = grid.first().map_or(1, |w| w.seeds);
    let _ = writeln!(
        out,
        "{} workloads, {seeds} seed(s) each; share of them where each policy is at least as good as \
         adaptive, means over the seeds compared (tolerances: 0.5 points of share and success, 2% \
         of latency, 0.001 calls per request)\n",
        grid.len()
    );
    let _ = write!(out, "| policy |");
    for metric in &METRICS {
        let _ = write!(out, " {} |", metric.name);
    }
    let _ = writeln!(out, " all six |");
    let _ = writeln!(out, "|---|{}---|", "---|".repeat(METRICS.len()));
    let mut worst_cases = String::new();
    let rows = PolicyKind::ALL
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != adaptive)
        .map(|(index, policy)| (index, policy.to_string()))
        .chain([(PolicyKind::ALL.len(), "adaptive, other seeds".to_string())]);
    for (index, policy) in rows {
        let noise_floor = index == PolicyKind::ALL.len();
        let _ = write!(out, "| {policy} |");
        let mut all_good = vec![true; grid.len()];
        for metric in &METRICS {
            let mut good = 0;
            let mut worst: Option<(f64, usize)> = None;
            for (w, runs) in reports.iter().enumerate() {
                let worse_by = metric.worse(&runs[index], &runs[adaptive]);
                if worse_by <= metric.tolerance {
                    good += 1;
                } else {
                    all_good[w] = false;
                }
                if worst.is_none_or(|(by, _)| worse_by > by) {
                    worst = Some((worse_by, w));
                }
            }
            let _ = write!(
                out,
                " {:.1}% |",
                100.0 * good as f64 / grid.len().max(1) as f64
            );
            if let Some((by, w)) = worst.filter(|_| !noise_floor) {
                let _ = writeln!(
                    worst_cases,
                    "- {policy}, {}: worse by {by:.3}{}: `{}`",
                    metric.name,
                    metric.unit,
                    grid[w].command()
                );
            }
        }
        let all = all_good.iter().filter(|g| **g).count();
        let _ = writeln!(
            out,
            " {:.1}% |",
            100.0 * all as f64 / grid.len().max(1) as f64
        );
    }
    let _ = writeln!(out, "\nWorst case per policy and metric:\n\n{worst_cases}");
    capacity_allows(&mut out, grid, reports);
    out
}

/// Where capacity allows (no token accounting, buckets of at least 2 s, request load under 0.8),
/// how often each policy answers at least 99.9% of requests, and its lowest success.
fn capacity_allows(out: &mut String, grid: &[Workload], reports: &[Vec<Runs>]) {
    let ample: Vec<usize> = (0..grid.len())
        .filter(|&w| {
            let workload = &grid[w];
            !workload.token_accounting && workload.burst_s >= 2.0 && workload.request_load() < 0.8
        })
        .collect();
    let _ = writeln!(
        out,
        "Where capacity allows (no token accounting, buckets of at least 2 s, request load under \
         0.8): {} workloads\n\n| policy | at least 99.9% success | lowest success |\n|---|---|---|",
        ample.len()
    );
    for (index, policy) in PolicyKind::ALL.iter().enumerate() {
        let success = |w: usize| mean(&reports[w][index], |r| r.success_rate);
        let met = ample.iter().filter(|&&w| success(w) >= 0.999).count();
        let lowest = ample
            .iter()
            .map(|&w| (success(w), w))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let _ = write!(
            out,
            "| {policy} | {:.1}% |",
            100.0 * met as f64 / ample.len().max(1) as f64
        );
        match lowest {
            Some((rate, w)) => {
                let _ = writeln!(out, " {:.2}%: `{}` |", rate * 100.0, grid[w].command());
            }
            None => {
                let _ = writeln!(out, " - |");
            }
        }
    }
}

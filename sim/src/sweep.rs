//! A grid of workloads the built-in scenarios do not cover, every policy on each, compared with the
//! adaptive policy metric by metric.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_model_fallback::policy::PolicyKind;
use tower_model_fallback::testing::Quota;

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
    /// Replicas of the service on the one quota, each with its own state.
    pub replicas: usize,
    /// Requests per second arriving on their own (Poisson) next to the users.
    pub arrivals_per_s: f64,
    /// Answers stream (the latency metrics are then times to first token).
    pub streaming: bool,
    /// The request-size mix, `WEIGHT:INPUT:OUTPUT,...`; the default scenario's unless set.
    pub sizes: Option<&'static str>,
    /// Simulated minutes.
    pub minutes: u64,
    /// The first seed.
    pub seed: u64,
    /// Seeds each policy runs (`seed`, `seed + 10,000`, ...); the metrics compared are their means.
    pub seeds: u64,
    /// Passes the layer makes through the chain (1 in the grid).
    pub passes: u32,
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
        scenario.models[0].quota = Quota::new(self.primary_rpm, tpm);
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
        scenario.arrivals_per_s = self.arrivals_per_s;
        scenario.streaming = self.streaming;
        scenario.passes = self.passes;
        if let Some(sizes) = self.sizes.and_then(|s| super::parse_sizes(s).ok()) {
            scenario.sizes = sizes;
        }
        scenario
    }

    /// The replicas it runs on.
    pub fn replicas(&self) -> super::Replicas {
        super::Replicas::new(self.replicas, None)
    }

    /// An upper bound on the load: the most its users and arrivals can send (one request per user
    /// per think time, answers taking no time) over the chain's quotas together, in requests or in
    /// tokens (each request's input and real output), whichever is higher.
    pub fn load(&self) -> f64 {
        let scenario = self.scenario();
        let per_minute = self.users as f64 * 60.0 / self.think_s + self.arrivals_per_s * 60.0;
        let weights: f64 = scenario.sizes.iter().map(|s| f64::from(s.weight)).sum();
        let tokens_per_request = scenario
            .sizes
            .iter()
            .map(|s| f64::from(s.weight) * f64::from(s.input_tokens + s.output_tokens))
            .sum::<f64>()
            / weights.max(1.0);
        let quota = |of: fn(&Quota) -> u32| -> f64 {
            scenario
                .models
                .iter()
                .map(|m| f64::from(of(&m.quota)))
                .sum::<f64>()
                .max(1.0)
        };
        let requests = per_minute / quota(|q| q.requests_per_minute);
        let tokens = per_minute * tokens_per_request / quota(|q| q.tokens_per_minute);
        requests.max(tokens)
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
        if self.replicas > 1 {
            let _ = write!(command, " --replicas {}", self.replicas);
        }
        if self.arrivals_per_s > 0.0 {
            let _ = write!(command, " --arrivals-per-s {}", self.arrivals_per_s);
        }
        if self.streaming {
            command.push_str(" --streaming");
        }
        if let Some(sizes) = self.sizes {
            let _ = write!(command, " --sizes {sizes}");
        }
        if self.passes > 1 {
            let _ = write!(command, " --passes {}", self.passes);
        }
        command
    }
}

/// A mix of long requests next to the default scenario's (which is mostly short).
pub const LONG_REQUESTS: &str = "60:2000:800,40:8000:2000";

/// The grid: users 10-300, think time 0.5-60 s, the primary's quota from starved to ample, buckets
/// from half a second to a minute, with and without capacity throttles and token accounting:
/// 5 x 4 x 3 x 3 x 2 x 2 = 720 workloads of `minutes` each, `seeds` seeds each. Each workload also
/// runs on one or three replicas, with or without 0.5 requests per second arriving on their own,
/// streamed or whole answers, and the default or the long size mix: one of these 16 combinations,
/// drawn for it by a fixed hash of its place in the grid (so each level is in about half the
/// workloads, independently of the other dimensions).
pub fn grid(minutes: u64, seeds: u64) -> Vec<Workload> {
    let mut grid = Vec::new();
    for users in [10, 30, 55, 100, 300] {
        for think_s in [0.5, 5.0, 20.0, 60.0] {
            for primary_rpm in [50, 140, 400] {
                for burst_s in [0.5, 5.0, 60.0] {
                    for capacity_throttles in [0.0, 0.01] {
                        for token_accounting in [false, true] {
                            let seed = grid.len() as u64 + 1;
                            let extra = mix(seed);
                            grid.push(Workload {
                                users,
                                think_s,
                                primary_rpm,
                                burst_s,
                                capacity_throttles,
                                token_accounting,
                                replicas: if extra & 1 == 0 { 1 } else { 3 },
                                arrivals_per_s: if extra & 2 == 0 { 0.0 } else { 0.5 },
                                streaming: extra & 4 != 0,
                                sizes: (extra & 8 != 0).then_some(LONG_REQUESTS),
                                minutes,
                                seed,
                                seeds: seeds.max(1),
                                passes: 1,
                            });
                        }
                    }
                }
            }
        }
    }
    grid
}

/// SplitMix64's finaliser: a fixed hash whose low bits are evenly spread.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

/// Where [`METRICS`] holds the primary's share of requests.
const PRIMARY_SHARE: usize = 0;

/// The primary's share of the requests' tokens: checked against the same 2 points as the primary's
/// share of requests, because where the primary runs out of tokens a policy can raise the share of
/// requests by letting the primary's quota take the smaller ones, with no more work done there.
const PRIMARY_TOKENS: Metric = Metric {
    name: "primary tokens",
    value: |r| r.primary_token_usage,
    worse_by: points,
    tolerance: 0.5,
    unit: " points",
};

impl Metric {
    /// How much worse `policy`'s runs are than `adaptive`'s, their means compared.
    fn worse(&self, policy: &Runs, adaptive: &Runs) -> f64 {
        (self.worse_by)(mean(policy, self.value), mean(adaptive, self.value))
    }
}

impl Metric {
    /// Whether `policy` is worse than `adaptive` by more than the tolerance, beyond the noise (see
    /// [`Metric::shown_worse_by`]).
    fn shown_worse(&self, policy: &Runs, adaptive: &Runs) -> bool {
        self.shown_worse_by(policy, adaptive, self.tolerance)
    }

    /// Whether `policy` is worse than `adaptive` by more than `tolerance`, beyond the noise: the
    /// differences seed by seed (both policies ran the same seeds, so each pair shares its users'
    /// draws), in a one-sided paired t-test at 95%. One seed shows nothing.
    fn shown_worse_by(&self, policy: &Runs, adaptive: &Runs, tolerance: f64) -> bool {
        let differences: Vec<f64> = policy
            .iter()
            .zip(adaptive)
            .map(|(p, a)| (self.worse_by)((self.value)(p), (self.value)(a)))
            .collect();
        let n = differences.len();
        if n < 2 {
            return false;
        }
        let mean = differences.iter().sum::<f64>() / n as f64;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        mean - tolerance > t_95(n - 1) * (variance / n as f64).sqrt()
    }
}

/// The one-sided 95% quantile of Student's t with `df` degrees of freedom (exact to three places up
/// to 10, then the first Cornish-Fisher term, within 0.3% of it).
fn t_95(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
    ];
    TABLE
        .get(df.wrapping_sub(1))
        .copied()
        .unwrap_or(1.645 + 1.524 / df as f64)
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
                                    .map(|k| {
                                        let seed = first + k * SEED_STRIDE;
                                        super::run_replicated(
                                            &scenario,
                                            policy,
                                            seed,
                                            workload.replicas(),
                                        )
                                    })
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
/// worse passes, the ceiling the comparison can show with this many seeds. With two seeds or more,
/// a paired test follows: where each policy is shown worse than the adaptive one.
pub fn table(grid: &[Workload], reports: &[Vec<Runs>]) -> String {
    let mut out = String::new();
    let adaptive = PolicyKind::ALL
        .iter()
        .position(|p| *p == PolicyKind::Adaptive)
        .unwrap_or(0);
    let seeds = grid.first().map_or(1, |w| w.seeds);
    // Where no policy served a single request, every policy looks the same: nothing to compare.
    let compared: Vec<usize> = (0..reports.len())
        .filter(|&w| reports[w].iter().flatten().any(|report| report.served > 0))
        .collect();
    let left_out = if compared.len() < grid.len() {
        " (in the others no policy served a request)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{} of {} workloads compared{left_out}, {seeds} seed(s) each; share of them where each \
         policy is at least as good as adaptive, means over the seeds compared (tolerances: 0.5 \
         points of share and success, 2% of latency, 0.001 calls per request)\n",
        compared.len(),
        grid.len()
    );
    header(&mut out, &[]);
    let mut worst_cases = String::new();
    for (index, policy) in rows(adaptive) {
        let _ = write!(out, "| {policy} |");
        let mut all_good = vec![true; grid.len()];
        for metric in &METRICS {
            let mut good = 0;
            let mut worst: Option<(f64, usize)> = None;
            for &w in &compared {
                let runs = &reports[w];
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
            let _ = write!(out, " {:.1}% |", share(good, compared.len()));
            if let Some((by, w)) = worst {
                let _ = write!(
                    worst_cases,
                    "- {policy}, {}: worse by {by:.3}{}: `{}`",
                    metric.name,
                    metric.unit,
                    grid[w].command()
                );
                if index == PolicyKind::ALL.len() {
                    let other = grid[w].seed + OTHER_SEED;
                    let _ = write!(worst_cases, " against its other seeds (`--seed {other}`)");
                }
                let _ = writeln!(worst_cases);
            }
        }
        let all = compared.iter().filter(|&&w| all_good[w]).count();
        let _ = writeln!(out, " {:.1}% |", share(all, compared.len()));
    }
    let _ = writeln!(out, "\nWorst case per policy and metric:\n\n{worst_cases}");
    if seeds >= 2 {
        paired(&mut out, grid, &compared, reports, adaptive);
    }
    capacity_allows(&mut out, grid, reports);
    out
}

/// Per policy and metric, the share of workloads where the policy is not shown worse than the
/// adaptive policy by more than the tolerance (see [`Metric::shown_worse`]). The last row, the
/// adaptive policy against itself on other seeds, should pass about 95% per metric: the test's
/// false alarms. A last column reads the primary's share in tokens instead of requests (see
/// [`PRIMARY_TOKENS`]).
fn paired(
    out: &mut String,
    grid: &[Workload],
    compared: &[usize],
    reports: &[Vec<Runs>],
    adaptive: usize,
) {
    let _ = writeln!(
        out,
        "Paired test: share of workloads where each policy is not shown worse than adaptive by \
         more than the tolerance (seed by seed differences, one-sided t-test at 95%)\n"
    );
    header(out, &["all six, share in tokens"]);
    let mut paced_none_worse = Vec::new();
    for (index, policy) in rows(adaptive) {
        let _ = write!(out, "| {policy} |");
        let mut none_worse = vec![true; reports.len()];
        for metric in &METRICS {
            let mut passed = 0;
            for &w in compared {
                let runs = &reports[w];
                if metric.shown_worse(&runs[index], &runs[adaptive]) {
                    none_worse[w] = false;
                } else {
                    passed += 1;
                }
            }
            let _ = write!(out, " {:.1}% |", share(passed, compared.len()));
        }
        let all = compared.iter().filter(|&&w| none_worse[w]).count();
        // The same, with the primary's share of requests read in tokens.
        let in_tokens = compared
            .iter()
            .filter(|&&w| {
                let runs = &reports[w];
                METRICS
                    .iter()
                    .enumerate()
                    .filter(|&(m, _)| m != PRIMARY_SHARE)
                    .map(|(_, metric)| metric)
                    .chain([&PRIMARY_TOKENS])
                    .all(|metric| !metric.shown_worse(&runs[index], &runs[adaptive]))
            })
            .count();
        let _ = writeln!(
            out,
            " {:.1}% | {:.1}% |",
            share(all, compared.len()),
            share(in_tokens, compared.len())
        );
        if PolicyKind::ALL.get(index) == Some(&PolicyKind::Paced) {
            paced_none_worse = none_worse;
        }
    }
    by_dimension(out, grid, compared, &paced_none_worse);
    let _ = writeln!(
        out,
        "\nWorkloads where each policy is shown worse than adaptive by more than {GOAL_POINTS} points, \
         the same test:\n\n| policy | primary share | success | primary tokens |\n|---|---|---|---|"
    );
    let mut listed = String::new();
    for (index, policy) in rows(adaptive) {
        let _ = write!(out, "| {policy} |");
        // Each loss of requests or success also says what it is in the primary's tokens.
        let goals = METRICS
            .iter()
            .filter(|m| m.unit == " points")
            .map(|m| (m, true));
        for (metric, with_tokens) in goals.chain([(&PRIMARY_TOKENS, false)]) {
            let worse: Vec<usize> = compared
                .iter()
                .copied()
                .filter(|&w| {
                    let runs = &reports[w];
                    metric.shown_worse_by(&runs[index], &runs[adaptive], GOAL_POINTS)
                })
                .collect();
            let _ = write!(out, " {} |", worse.len());
            if worse.len() <= MAX_LISTED {
                for w in worse {
                    let (runs, base) = (&reports[w][index], &reports[w][adaptive]);
                    let by = metric.worse(runs, base);
                    let tokens = if with_tokens {
                        let by = PRIMARY_TOKENS.worse(runs, base);
                        format!(" ({by:.3} of the primary's tokens)")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        listed,
                        "- {policy}, {}: worse by {by:.3} points{tokens}: `{}`",
                        metric.name,
                        grid[w].command()
                    );
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "\n{listed}");
}

/// One dimension of the grid: its name, and a workload's level on it.
type Dimension = (&'static str, fn(&Workload) -> String);

/// The grid's dimensions.
const DIMENSIONS: [Dimension; 10] = [
    ("users", |w| w.users.to_string()),
    ("think time (s)", |w| w.think_s.to_string()),
    ("primary requests per minute", |w| w.primary_rpm.to_string()),
    ("bucket (s)", |w| w.burst_s.to_string()),
    ("capacity throttles", |w| w.capacity_throttles.to_string()),
    ("token accounting", |w| w.token_accounting.to_string()),
    ("replicas", |w| w.replicas.to_string()),
    ("arrivals per second", |w| w.arrivals_per_s.to_string()),
    ("streaming", |w| w.streaming.to_string()),
    ("long requests", |w| w.sizes.is_some().to_string()),
];

/// Where the paced policy is shown worse (`none_worse[w]` false), counted per level of each
/// dimension of the grid: what a better policy would have to win back, and where.
fn by_dimension(out: &mut String, grid: &[Workload], compared: &[usize], none_worse: &[bool]) {
    let _ = writeln!(
        out,
        "\nWhere paced is shown worse on some metric, by level of each dimension (shown worse / \
         workloads):\n"
    );
    for (name, level_of) in DIMENSIONS {
        let mut levels: Vec<(String, usize, usize)> = Vec::new();
        for &w in compared {
            let level = level_of(&grid[w]);
            let at = match levels.iter().position(|(l, ..)| *l == level) {
                Some(at) => at,
                None => {
                    levels.push((level, 0, 0));
                    levels.len() - 1
                }
            };
            levels[at].1 += usize::from(!none_worse.get(w).copied().unwrap_or(true));
            levels[at].2 += 1;
        }
        levels.sort_by(|a, b| match (a.0.parse::<f64>(), b.0.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => a.0.cmp(&b.0),
        });
        let levels: Vec<String> = levels
            .iter()
            .map(|(level, worse, all)| format!("{level}: {worse}/{all}"))
            .collect();
        let _ = writeln!(out, "- {name}: {}", levels.join(", "));
    }
}

/// The most points of primary share or success a policy may lose to the adaptive one.
const GOAL_POINTS: f64 = 2.0;
/// Workloads shown worse by more than that are listed when there are at most this many.
const MAX_LISTED: usize = 12;

/// The head of a table with a column per metric, one for all of them, then `more`.
fn header(out: &mut String, more: &[&str]) {
    let _ = write!(out, "| policy |");
    for metric in METRICS
        .iter()
        .map(|m| m.name)
        .chain(["all six"])
        .chain(more.iter().copied())
    {
        let _ = write!(out, " {metric} |");
    }
    let _ = writeln!(
        out,
        "\n|---|{}",
        "---|".repeat(METRICS.len() + 1 + more.len())
    );
}

/// The rows of the comparison: every policy but the adaptive one (index into a workload's runs,
/// name), then the adaptive one on other seeds.
fn rows(adaptive: usize) -> impl Iterator<Item = (usize, String)> {
    PolicyKind::ALL
        .iter()
        .enumerate()
        .filter(move |(index, _)| *index != adaptive)
        .map(|(index, policy)| (index, policy.to_string()))
        .chain([(PolicyKind::ALL.len(), "adaptive, other seeds".to_string())])
}

/// `part` of `whole`, in percent.
fn share(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Where capacity allows (no token accounting, buckets of at least 2 s, a [`Workload::load`] under
/// 0.8), how often each policy answers at least 99.9% of requests, and its lowest success.
fn capacity_allows(out: &mut String, grid: &[Workload], reports: &[Vec<Runs>]) {
    let ample: Vec<usize> = (0..grid.len())
        .filter(|&w| {
            let workload = &grid[w];
            !workload.token_accounting && workload.burst_s >= 2.0 && workload.load() < 0.8
        })
        .collect();
    let _ = writeln!(
        out,
        "Where capacity allows (no token accounting, buckets of at least 2 s, load under 0.8 in \
         requests and in tokens): {} workloads\n\n| policy | at least 99.9% success | lowest success |\n|---|---|---|",
        ample.len()
    );
    for (index, policy) in PolicyKind::ALL.iter().enumerate() {
        let success = |w: usize| mean(&reports[w][index], |r| r.success_rate);
        let met = ample.iter().filter(|&&w| success(w) >= 0.999).count();
        let lowest = ample
            .iter()
            .map(|&w| (success(w), w))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let _ = write!(out, "| {policy} | {:.1}% |", share(met, ample.len()));
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

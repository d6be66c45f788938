//! Compares the cooldown policies on a simulated Bedrock, deterministically.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-sim                    # every scenario, every policy
//! cargo run --release -p tower-model-fallback-sim -- --scenario default --seed 7 --json
//! cargo run --release -p tower-model-fallback-sim -- --plot primary-share.svg
//! cargo run --release -p tower-model-fallback-sim -- --replicas-table   # replicas, unshared vs shared
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use plotters::prelude::*;
use tower::BoxError;
use tower_model_fallback::testing::Quota;
use tower_model_fallback_sim::{self as sim, PolicyKind, Replicas, Report, Scenario};

/// Simulate Bedrock throttling and compare the fallback policies on the same workload and seed.
#[derive(Parser)]
struct Args {
    /// Scenario: default, big-burst, starved-primary, flood, or all (all but flood).
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Users active from the start (overrides the scenario).
    #[arg(long)]
    users: Option<usize>,
    /// Simulated minutes (overrides the scenario).
    #[arg(long)]
    minutes: Option<u64>,
    /// Mean think time in seconds (overrides the scenario).
    #[arg(long)]
    think_s: Option<f64>,
    /// Primary quota in requests per minute (overrides the scenario).
    #[arg(long)]
    primary_rpm: Option<u32>,
    /// Primary quota in tokens per minute (overrides the scenario).
    #[arg(long)]
    primary_tpm: Option<u32>,
    /// Every fallback model's quota in requests per minute (overrides the scenario).
    #[arg(long)]
    fallback_rpm: Option<u32>,
    /// Every fallback model's quota in tokens per minute (overrides the scenario).
    #[arg(long)]
    fallback_tpm: Option<u32>,
    /// Seconds of quota every model's buckets hold (overrides the scenario).
    #[arg(long)]
    burst_s: Option<f64>,
    /// The output budget every request declares: charged (times the burndown) at its start, settled
    /// to the real output at its end, as Bedrock does (the default scenario's is 2,048; 0 for none:
    /// the real output is charged at the start).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Answers stream: the latency columns become times to first token, and each answer goes on
    /// streaming (its per-token time) while its user waits and the model counts it in flight.
    #[arg(long)]
    streaming: bool,
    /// Tokens of quota every output token burns on the primary (5 for some Claude models).
    #[arg(long)]
    output_burndown: Option<u32>,
    /// A daily token quota on the primary.
    #[arg(long)]
    primary_tokens_per_day: Option<u64>,
    /// Models in the chain: extra models are copies of the last one (with its quota); fewer keep the
    /// first ones.
    #[arg(long)]
    models: Option<usize>,
    /// The request-size mix, `WEIGHT:INPUT:OUTPUT` per size, comma-separated (e.g.
    /// `70:500:200,30:4000:1000`).
    #[arg(long)]
    sizes: Option<String>,
    /// Requests per second arriving on their own (Poisson), next to the scenario's users.
    #[arg(long)]
    arrivals_per_s: Option<f64>,
    /// The arrival rate follows a day's curve over the run (a quarter of it at the ends).
    #[arg(long)]
    diurnal: bool,
    /// Chance that any model throttles a call although its quota has room (provider capacity),
    /// rising with the model's calls in flight when --concurrency-knee is set.
    #[arg(long)]
    capacity_throttles: Option<f64>,
    /// Chance that any model fails a call with a 503.
    #[arg(long)]
    server_errors: Option<f64>,
    /// Chance that any model's admitted call hangs until its processing timeout and fails with a
    /// 408 `ModelTimeoutException`.
    #[arg(long)]
    timeouts: Option<f64>,
    /// How long a call that times out hangs first, in seconds (60 unless set).
    #[arg(long)]
    timeout_after_s: Option<f64>,
    /// Calls in flight at which every model's latency has doubled (it grows linearly with load).
    #[arg(long)]
    concurrency_knee: Option<u32>,
    /// Replicas of the service sharing the quotas (users spread over them round-robin).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The replicas share their throttle state, each event arriving this many milliseconds late
    /// (adaptive and paced policies only).
    #[arg(long)]
    shared_delay_ms: Option<u64>,
    /// With shared state, replicas take turns at probing a reopening model, each turn a lease of this
    /// many milliseconds.
    #[arg(long)]
    probe_lease_ms: Option<u64>,
    /// Print, for the adaptive and paced policies on 1, 2, 4 and 8 replicas, each scenario unshared
    /// and shared (events 5 ms late, or --shared-delay-ms).
    #[arg(long)]
    replicas_table: bool,
    /// Passes the layer makes through the chain before a request fails, waiting half a second to
    /// a second before the second (1: each model once).
    #[arg(long, default_value_t = 1)]
    passes: u32,
    /// Run every policy on the sweep's grid of 720 workloads (on every core) and print how often each
    /// is at least as good as the adaptive policy, metric by metric, with the worst cases.
    #[arg(long)]
    sweep: bool,
    /// Seeds per workload and policy in the sweep; the metrics compared are their means, and with two
    /// or more a paired test shows where each policy is worse beyond the noise.
    #[arg(long, default_value_t = 1)]
    sweep_seeds: u64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write an SVG plot of the primary's share per minute, per policy.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.sweep {
        let mut grid = sim::sweep::grid(args.minutes.unwrap_or(10), args.sweep_seeds);
        for workload in &mut grid {
            workload.passes = args.passes;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = std::time::Instant::now();
        let reports = sim::sweep::run(&grid, threads)?;
        print!("{}", sim::sweep::table(&grid, &reports));
        eprintln!(
            "{} runs in {:.1} s",
            reports.iter().map(Vec::len).sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let mut scenarios = match args.scenario.as_str() {
        "all" => Scenario::all(),
        name => vec![Scenario::named(name).ok_or_else(|| format!("unknown scenario {name:?}"))?],
    };
    for s in &mut scenarios {
        if let Some(users) = args.users {
            s.users = users;
        }
        if let Some(minutes) = args.minutes {
            s.duration = Duration::from_secs(minutes * 60);
        }
        if let Some(think) = args.think_s {
            s.think_time = Duration::try_from_secs_f64(think)?;
        }
        if let Some(burst) = args.burst_s {
            for model in &mut s.models {
                model.burst = Duration::try_from_secs_f64(burst)?;
            }
        }
        let quota = |q: &Quota, rpm: Option<u32>, tpm: Option<u32>| {
            Quota::new(
                rpm.unwrap_or(q.requests_per_minute),
                tpm.unwrap_or(q.tokens_per_minute),
            )
        };
        for (index, model) in s.models.iter_mut().enumerate() {
            model.quota = if index == 0 {
                quota(&model.quota, args.primary_rpm, args.primary_tpm)
            } else {
                quota(&model.quota, args.fallback_rpm, args.fallback_tpm)
            };
            if let Some(rate) = args.capacity_throttles {
                model.capacity_throttle_rate = rate;
            }
            if let Some(rate) = args.server_errors {
                model.server_error_rate = rate;
            }
            if let Some(rate) = args.timeouts {
                model.timeout_rate = rate;
            }
            if let Some(after) = args.timeout_after_s {
                model.timeout_after = Duration::try_from_secs_f64(after)
                    .map_err(|e| format!("--timeout-after-s: {e}"))?;
            }
            if args.concurrency_knee.is_some() {
                model.concurrency_knee = args.concurrency_knee;
            }
        }
        if let Some(rate) = args.arrivals_per_s {
            s.arrivals_per_s = rate;
        }
        if let Some(count) = args.models {
            s.set_model_count(count)?;
        }
        if let Some(sizes) = &args.sizes {
            s.sizes = sim::parse_sizes(sizes)?;
        }
        if let Some(budget) = args.max_tokens {
            s.max_tokens = (budget > 0).then_some(budget);
        }
        if let Some(burndown) = args.output_burndown {
            s.models[0].output_burndown = burndown;
        }
        if args.primary_tokens_per_day.is_some() {
            s.models[0].tokens_per_day = args.primary_tokens_per_day;
        }
        s.diurnal |= args.diurnal;
        s.streaming |= args.streaming;
        s.passes = args.passes;
    }
    let probe_lease = args.probe_lease_ms.map(Duration::from_millis);
    if args.replicas_table {
        let delay = Duration::from_millis(args.shared_delay_ms.unwrap_or(5));
        return replicas_table(&scenarios, args.seed, delay, probe_lease);
    }
    let replicas = Replicas {
        probe_lease,
        ..Replicas::new(
            args.replicas,
            args.shared_delay_ms.map(Duration::from_millis),
        )
    };
    let policies: Vec<PolicyKind> = if replicas.shared.is_some() {
        vec![PolicyKind::Adaptive, PolicyKind::Paced]
    } else {
        PolicyKind::ALL.to_vec()
    };
    let mut reports: Vec<Report> = Vec::new();
    let started = std::time::Instant::now();
    let mut simulated = Duration::ZERO;
    for scenario in &scenarios {
        for &policy in &policies {
            reports.push(sim::run_replicated(scenario, policy, args.seed, replicas)?);
            simulated += scenario.duration;
        }
    }
    // On stderr, so that the table stays the same from run to run.
    let hours = simulated.as_secs_f64() / 3600.0;
    eprintln!(
        "{hours:.1} simulated hours in {:.1} s of wall time: {:.2} s per simulated hour",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / hours.max(f64::MIN_POSITIVE),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", sim::table(&reports));
    }
    if let Some(path) = &args.plot {
        plot(path, &reports)?;
    }
    Ok(())
}

/// The shareable policies on 1, 2, 4 and 8 replicas, each with and without shared state.
fn replicas_table(
    scenarios: &[Scenario],
    seed: u64,
    delay: Duration,
    probe_lease: Option<Duration>,
) -> Result<(), BoxError> {
    println!(
        "| scenario | policy | replicas | unshared: primary | success | throttled/request | shared: primary | success | throttled/request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for scenario in scenarios {
        for policy in [PolicyKind::Adaptive, PolicyKind::Paced] {
            for count in [1, 2, 4, 8] {
                let run = |shared| {
                    let replicas = Replicas {
                        probe_lease,
                        ..Replicas::new(count, shared)
                    };
                    sim::run_replicated(scenario, policy, seed, replicas)
                };
                let (alone, shared) = (run(None)?, run(Some(delay))?);
                println!(
                    "| {} | {policy} | {count} | {:.1}% | {:.1}% | {:.4} | {:.1}% | {:.1}% | {:.4} |",
                    scenario.name,
                    alone.primary_usage * 100.0,
                    alone.success_rate * 100.0,
                    alone.throttled_per_request,
                    shared.primary_usage * 100.0,
                    shared.success_rate * 100.0,
                    shared.throttled_per_request,
                );
            }
        }
    }
    Ok(())
}

fn plot(path: &PathBuf, reports: &[Report]) -> Result<(), BoxError> {
    let scenario = &reports[0].scenario;
    let reports: Vec<&Report> = reports.iter().filter(|r| &r.scenario == scenario).collect();
    let minutes = reports
        .iter()
        .map(|r| r.primary_share_by_minute.len())
        .max()
        .unwrap_or(1);
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("primary-model share per minute ({scenario})"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..minutes as f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("minute")
        .y_desc("% served by primary")
        .draw()?;
    for (i, report) in reports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = report
            .primary_share_by_minute
            .iter()
            .enumerate()
            .map(|(m, s)| (m as f64 + 0.5, s * 100.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(report.policy.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

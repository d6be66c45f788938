//! The simulator: deterministic, and every simulated request resolves exactly once.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use tower_model_fallback_sim::{self as sim, PolicyKind, Scenario, Shape};

fn short(mut scenario: Scenario, minutes: u64, users: usize) -> Scenario {
    scenario.duration = Duration::from_secs(minutes * 60);
    scenario.users = users;
    if let Shape::Burst { at, length, .. } = &mut scenario.shape {
        *at = Duration::from_secs(minutes * 20);
        *length = Duration::from_secs(minutes * 20);
    }
    scenario
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let scenario = short(Scenario::default_scenario(), 5, 40);
    for policy in PolicyKind::ALL {
        let a = sim::run(&scenario, policy, 11).unwrap();
        let b = sim::run(&scenario, policy, 11).unwrap();
        assert_eq!(a, b, "{policy:?}");
        assert_eq!(sim::table(std::slice::from_ref(&a)), sim::table(&[b]));
        let c = sim::run(&scenario, policy, 12).unwrap();
        assert_ne!(
            a.mean_latency_s, c.mean_latency_s,
            "another seed, another run"
        );
    }
}

#[test]
fn the_default_scenario_ranks_the_policies_as_documented() {
    let scenario = Scenario::default_scenario();
    let [fixed, adaptive, probing] = [PolicyKind::Fixed, PolicyKind::Adaptive, PolicyKind::Probing]
        .map(|p| sim::run(&scenario, p, 1).unwrap());
    // The naive global block loses most of the primary and some users; the adaptive policy keeps
    // most of both; probing keeps more of the primary, answers faster and recovers in seconds.
    assert!(
        fixed.primary_usage < 0.5 && fixed.success_rate < 0.99,
        "{fixed:?}"
    );
    assert!(
        adaptive.primary_usage > 0.75 && adaptive.success_rate > 0.999,
        "{adaptive:?}"
    );
    assert!(probing.primary_usage >= 0.9, "{probing:?}");
    assert!(probing.success_rate >= adaptive.success_rate);
    assert!(probing.mean_latency_s < adaptive.mean_latency_s);
    assert!(probing.p99_latency_s < adaptive.p99_latency_s);
    assert!(probing.recovery_s.unwrap() < adaptive.recovery_s.unwrap());
    assert!(
        fixed.recovery_s.unwrap() > 55.0,
        "the naive block waits its full minute"
    );
}

/// The means over seeds 1-8 of each metric of the table, for `policy` on `scenario`. Single seeds
/// differ by about as much as the policies do on some metrics (a tenth of a point of success on
/// big-burst, a thousandth of a throttled call per request on default).
fn means(scenario: &Scenario, policy: PolicyKind) -> [f64; 7] {
    let runs: Vec<sim::Report> = (1..=8)
        .map(|seed| sim::run(scenario, policy, seed).unwrap())
        .collect();
    let mean = |metric: fn(&sim::Report) -> f64| runs.iter().map(metric).sum::<f64>() / 8.0;
    [
        // Higher is better for the first two; the sign makes every column lower-is-better.
        -mean(|r| r.primary_usage),
        -mean(|r| r.success_rate),
        mean(|r| r.mean_latency_s),
        mean(|r| r.p99_latency_s),
        mean(|r| r.recovery_s.unwrap_or(0.0)),
        mean(|r| r.attempts_per_request),
        mean(|r| r.throttled_per_request),
    ]
}

#[test]
fn paced_beats_adaptive_on_every_metric_of_every_scenario() {
    for scenario in Scenario::all() {
        let paced = means(&scenario, PolicyKind::Paced);
        let adaptive = means(&scenario, PolicyKind::Adaptive);
        assert!(
            paced[0] < adaptive[0],
            "{}: more of the primary",
            scenario.name
        );
        for (column, (p, a)) in paced.iter().zip(&adaptive).enumerate() {
            assert!(
                p <= a,
                "{}, column {column}: {paced:?} vs {adaptive:?}",
                scenario.name
            );
        }
    }
}

/// The default scenario's goals over seeds 1-20, not only the documented one: every seed answers
/// at least 99.9% of requests and keeps more of the primary than the adaptive policy does, and the
/// primary answers at least 90% of requests on average (single seeds range from 89.99% to 93.2%).
/// What a single seed's share can reach depends on how many requests its users send: the goal per
/// seed is that the primary answers at least 95% of what its request quota admits in the run.
#[test]
fn paced_meets_the_default_goals_over_seeds_1_to_20() {
    let scenario = Scenario::default_scenario();
    let primary_model = &scenario.models[0];
    let per_s = f64::from(primary_model.quota.requests_per_minute) / 60.0;
    let admissible = per_s * (scenario.duration + primary_model.burst).as_secs_f64();
    let seeds: Vec<u64> = (1..=20).collect();
    let primary: f64 = std::thread::scope(|scope| {
        let workers: Vec<_> = seeds
            .chunks(10)
            .map(|chunk| {
                let scenario = &scenario;
                scope.spawn(move || {
                    let mut primary = 0.0;
                    for &seed in chunk {
                        let paced = sim::run(scenario, PolicyKind::Paced, seed).unwrap();
                        let adaptive = sim::run(scenario, PolicyKind::Adaptive, seed).unwrap();
                        assert!(paced.success_rate >= 0.999, "seed {seed}: {paced:?}");
                        assert!(
                            paced.primary_usage > adaptive.primary_usage,
                            "seed {seed}: {paced:?}"
                        );
                        let quota_used = paced.served_by_primary as f64 / admissible;
                        assert!(quota_used >= 0.95, "seed {seed}: {quota_used}, {paced:?}");
                        primary += paced.primary_usage;
                    }
                    primary
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let mean = primary / seeds.len() as f64;
    assert!(mean >= 0.9, "mean primary share {mean}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn every_request_resolves_once_and_no_model_is_tried_twice_in_a_pass(
        seed in any::<u64>(),
        which in 0usize..3,
        users in 5usize..60,
        policy in prop::sample::select(PolicyKind::ALL.to_vec()),
        passes in 1u32..=2,
    ) {
        let mut scenario = short(Scenario::all().swap_remove(which), 3, users);
        scenario.passes = passes;
        let (report, outcomes) = sim::run_with_outcomes(&scenario, policy, seed).unwrap();
        prop_assert_eq!(report.issued, report.requests);
        prop_assert_eq!(outcomes.len(), report.requests);
        let attempts: usize = outcomes.iter().map(|o| o.attempts.len()).sum();
        prop_assert_eq!(attempts, report.upstream_calls, "each attempt reached the model exactly once");
        let chain = scenario.models.len();
        for outcome in &outcomes {
            prop_assert!(outcome.attempts.len() <= chain * passes as usize, "{:?}", outcome);
            for pass in outcome.attempts.chunks(chain) {
                let models: HashSet<usize> = pass.iter().map(|a| a.0).collect();
                prop_assert_eq!(models.len(), pass.len(), "a model tried twice in a pass: {:?}", outcome);
            }
            if let Some(model) = outcome.served_by {
                prop_assert_eq!(outcome.attempts.last().map(|a| a.0), Some(model));
            }
        }
    }
}

#[test]
fn a_flood_of_requests_gets_no_more_from_a_paced_primary_than_its_quota_refills() {
    // About 4,000 requests per second for 10 s against a primary that holds 60 requests and refills
    // one per second: at most 70 answers, and few throttles on the way. Most of those few are the
    // requests of the first 40 ms: sent before the first throttle came back (20 ms), and before a
    // second showed that the first was not a lone one.
    let mut flood = Scenario::flood();
    flood.duration = Duration::from_secs(10);
    let paced = sim::run(&flood, PolicyKind::Paced, 1).unwrap();
    let throttled = paced.throttled_per_request * paced.requests as f64;
    assert!(paced.requests > 30_000, "{paced:?}");
    assert!(paced.served_by_primary <= 70, "{paced:?}");
    assert!(throttled < 500.0, "{throttled} throttled calls: {paced:?}");
    assert_eq!(paced.success_rate, 1.0);
}

#[test]
fn replicas_that_share_their_state_throttle_less_on_one_quota() {
    use sim::Replicas;
    let scenario = Scenario::named("starved-primary").unwrap();
    let run = |count, shared| {
        let replicas = Replicas::new(count, shared);
        sim::run_replicated(&scenario, PolicyKind::Adaptive, 1, replicas).unwrap()
    };
    let alone = run(8, None);
    let shared = run(8, Some(Duration::from_millis(5)));
    // Eight replicas each learn every throttle alone; shared, they learn it once.
    assert!(
        shared.throttled_per_request * 2.0 < alone.throttled_per_request,
        "{} vs {}",
        shared.throttled_per_request,
        alone.throttled_per_request
    );
    // One replica sharing with nobody is the plain run; the same seed gives the same report.
    assert_eq!(
        run(1, Some(Duration::from_millis(5))),
        sim::run(&scenario, PolicyKind::Adaptive, 1).unwrap()
    );
    assert_eq!(
        run(4, Some(Duration::from_millis(5))),
        run(4, Some(Duration::from_millis(5)))
    );
    // Only the adaptive and paced policies can share their state.
    let probing = sim::run_replicated(
        &scenario,
        PolicyKind::Probing,
        1,
        Replicas::new(2, Some(Duration::ZERO)),
    );
    assert!(probing.is_err());
}

#[test]
fn probe_leases_let_one_replica_probe_and_stay_deterministic() {
    use sim::Replicas;
    let scenario = Scenario::named("default").unwrap();
    let run = |lease| {
        let replicas = Replicas {
            probe_lease: lease,
            ..Replicas::new(4, Some(Duration::from_millis(5)))
        };
        sim::run_replicated(&scenario, PolicyKind::Adaptive, 1, replicas).unwrap()
    };
    let leased = run(Some(Duration::from_secs(5)));
    assert_eq!(leased, run(Some(Duration::from_secs(5))));
    // Leases change who probes (docs/simulator.md has the comparison), not whether users are served.
    assert_ne!(leased, run(None));
    assert_eq!(leased.success_rate, 1.0);
}

/// The default models with quotas no load here reaches: only what a test turns on throttles.
fn ample(minutes: u64, users: usize) -> Scenario {
    let mut scenario = short(Scenario::default_scenario(), minutes, users);
    for model in &mut scenario.models {
        model.quota = tower_model_fallback::testing::Quota::new(1_000_000, 1_000_000_000);
    }
    scenario
}

#[test]
fn open_loop_arrivals_do_not_depend_on_what_the_policy_does() {
    let mut scenario = short(Scenario::default_scenario(), 10, 0);
    scenario.arrivals_per_s = 2.0;
    let fixed = sim::run(&scenario, PolicyKind::Fixed, 3).unwrap();
    let paced = sim::run(&scenario, PolicyKind::Paced, 3).unwrap();
    // A policy that fails fast gets no more requests to send than one that waits.
    assert_eq!(fixed.issued, paced.issued);
    assert!((1_100..1_300).contains(&paced.issued), "{}", paced.issued);
    assert_eq!(paced.requests, paced.issued, "every arrival resolves");
    // Over a day's curve a run gets 0.625 of the full rate on average.
    scenario.diurnal = true;
    let diurnal = sim::run(&scenario, PolicyKind::Paced, 3).unwrap();
    assert!((650..850).contains(&diurnal.issued), "{}", diurnal.issued);
    assert_eq!(diurnal, sim::run(&scenario, PolicyKind::Paced, 3).unwrap());
}

#[test]
fn capacity_throttles_and_server_errors_happen_with_quota_to_spare() {
    let calm = sim::run(&ample(5, 30), PolicyKind::Adaptive, 4).unwrap();
    assert_eq!(calm.throttled_per_request, 0.0);

    let mut scenario = ample(5, 30);
    for model in &mut scenario.models {
        model.capacity_throttle_rate = 0.05;
    }
    let capacity = sim::run(&scenario, PolicyKind::Adaptive, 4).unwrap();
    assert!(capacity.throttled_per_request > 0.02, "{capacity:?}");
    assert!(capacity.success_rate > 0.99, "{capacity:?}");

    let mut scenario = ample(5, 30);
    scenario.models[0].server_error_rate = 0.1;
    let errors = sim::run(&scenario, PolicyKind::Adaptive, 4).unwrap();
    // A 503 is not a throttle: the request moves on to the fallback and is answered there.
    assert_eq!(errors.throttled_per_request, 0.0);
    assert!(errors.attempts_per_request > 1.05, "{errors:?}");
    assert_eq!(errors.success_rate, 1.0);
}

#[test]
fn a_second_pass_answers_requests_every_model_throttled_once() {
    let mut scenario = ample(5, 30);
    for model in &mut scenario.models {
        model.capacity_throttle_rate = 0.3;
    }
    let one = sim::run(&scenario, PolicyKind::Adaptive, 4).unwrap();
    scenario.passes = 2;
    let two = sim::run(&scenario, PolicyKind::Adaptive, 4).unwrap();
    // A pass fails when both models throttle (0.3 x 0.3); the second draws afresh.
    assert!((0.88..0.94).contains(&one.success_rate), "{one:?}");
    assert!(two.success_rate > 0.98, "{two:?}");
    assert!(two.attempts_per_request > one.attempts_per_request);
    assert_eq!(two.requests, two.issued, "every request resolves");
}

#[test]
fn a_timed_out_call_hangs_then_moves_on_to_the_next_model() {
    let calm = sim::run(&ample(5, 30), PolicyKind::Adaptive, 4).unwrap();
    let mut scenario = ample(5, 30);
    scenario.models[0].timeout_rate = 0.1;
    scenario.models[0].timeout_after = Duration::from_secs(30);
    let hung = sim::run(&scenario, PolicyKind::Adaptive, 4).unwrap();
    // A 408 is not a throttle: the request waits out the hang, then the fallback answers it.
    assert_eq!(hung.throttled_per_request, 0.0);
    assert_eq!(hung.success_rate, 1.0);
    assert!(hung.attempts_per_request > 1.05, "{hung:?}");
    assert!(hung.p99_latency_s >= 30.0, "{hung:?}");
    // One call in ten waits 30 s more than it would have.
    let added = hung.mean_latency_s - calm.mean_latency_s;
    assert!((2.0..4.5).contains(&added), "{added} s added");
}

/// `scenario` run with every model's latency doubled at two calls in flight, and its mean latency
/// at least 1.3 times the mean latency of `idle` (the same scenario without the knee).
fn assert_slower_past_the_knee(mut scenario: Scenario, idle: &sim::Report) {
    for model in &mut scenario.models {
        model.concurrency_knee = Some(2);
    }
    let loaded = sim::run(&scenario, PolicyKind::Adaptive, 5).unwrap();
    assert!(
        loaded.mean_latency_s > idle.mean_latency_s * 1.3,
        "{} vs {}",
        loaded.mean_latency_s,
        idle.mean_latency_s
    );
}

#[test]
fn latency_grows_with_the_calls_in_flight_past_the_knee() {
    let idle = sim::run(&ample(5, 60), PolicyKind::Adaptive, 5).unwrap();
    assert_slower_past_the_knee(ample(5, 60), &idle);
}

#[test]
fn streamed_answers_are_timed_to_their_first_token_and_read_to_their_end() {
    let whole = sim::run(&ample(5, 60), PolicyKind::Adaptive, 5).unwrap();
    let mut scenario = ample(5, 60);
    scenario.streaming = true;
    let streamed = sim::run(&scenario, PolicyKind::Adaptive, 5).unwrap();
    // The first token comes after the base latency, long before the whole answer.
    assert!(
        streamed.mean_latency_s < whole.mean_latency_s * 0.5,
        "{} vs {}",
        streamed.mean_latency_s,
        whole.mean_latency_s
    );
    // Users still read every answer to its end before they think again: as many requests.
    let ratio = streamed.issued as f64 / whole.issued as f64;
    assert!((0.97..1.03).contains(&ratio), "{ratio}");
    // A stream keeps its model busy until its end: past the knee, first tokens come later.
    assert_slower_past_the_knee(scenario, &streamed);
}

#[test]
fn tokens_are_charged_at_the_output_budget_and_settled_to_what_was_used() {
    // A primary limited by tokens, not requests.
    let mut scenario = short(Scenario::default_scenario(), 10, 55);
    scenario.models[0].quota = tower_model_fallback::testing::Quota::new(1_000, 150_000);
    scenario.max_tokens = None;
    let real = sim::run(&scenario, PolicyKind::Adaptive, 6).unwrap();
    // Charging a budget of 4,096 output tokens up front leaves less room for other requests, even
    // though what is not used comes back at the end.
    scenario.max_tokens = Some(4_096);
    let budgeted = sim::run(&scenario, PolicyKind::Adaptive, 6).unwrap();
    assert!(
        budgeted.served_by_primary < real.served_by_primary,
        "{budgeted:?} vs {real:?}"
    );
    // Output that burns five tokens of quota each leaves even less.
    scenario.max_tokens = None;
    scenario.models[0].output_burndown = 5;
    let burned = sim::run(&scenario, PolicyKind::Adaptive, 6).unwrap();
    assert!(
        burned.served_by_primary < real.served_by_primary,
        "{burned:?} vs {real:?}"
    );
}

#[test]
fn a_primary_out_of_tokens_answers_a_larger_share_of_requests_than_of_tokens() {
    // The primary's token quota is what runs out: whichever requests fit what is left of it get
    // through, and more of them are small ones.
    let mut scenario = short(Scenario::default_scenario(), 10, 55);
    scenario.models[0].quota = tower_model_fallback::testing::Quota::new(1_000, 150_000);
    scenario.max_tokens = None;
    let (report, outcomes) = sim::run_with_outcomes(&scenario, PolicyKind::Adaptive, 6).unwrap();
    let tokens: u64 = outcomes.iter().map(|o| o.tokens).sum();
    let on_primary: u64 = outcomes
        .iter()
        .filter(|o| o.served_by == Some(0))
        .map(|o| o.tokens)
        .sum();
    assert!(on_primary > 0 && on_primary < tokens);
    assert_eq!(
        report.primary_token_usage,
        on_primary as f64 / tokens as f64
    );
    assert!(
        report.primary_token_usage + 0.02 < report.primary_usage,
        "{report:?}"
    );
}

#[test]
fn a_request_larger_than_a_minute_of_quota_is_rejected_not_charged() {
    let mut scenario = short(Scenario::default_scenario(), 2, 10);
    scenario.max_tokens = Some(1_000_000);
    let report = sim::run(&scenario, PolicyKind::Adaptive, 7).unwrap();
    // A ValidationException: the request's own fault, not worth another model.
    assert_eq!(report.success_rate, 0.0);
    assert_eq!(report.attempts_per_request, 1.0);
    assert_eq!(report.throttled_per_request, 0.0);
}

#[test]
fn a_request_deeper_than_a_shallow_bucket_is_served_when_the_bucket_is_full() {
    // Half a second of the primary's tokens is 3,333; every request is charged its input plus
    // 2,048 x 5 output tokens, more than that and less than a minute's quota.
    let mut scenario = short(Scenario::default_scenario(), 5, 10);
    for model in &mut scenario.models {
        model.burst = Duration::from_millis(500);
    }
    scenario.models[0].output_burndown = 5;
    let report = sim::run(&scenario, PolicyKind::Adaptive, 7).unwrap();
    assert!(report.success_rate > 0.9, "{report:?}");
    assert!(report.primary_usage > 0.2, "{report:?}");
    assert_eq!(report.requests, report.issued, "every request resolves");
}

#[test]
fn a_daily_token_quota_runs_out() {
    let mut scenario = ample(10, 30);
    let unlimited = sim::run(&scenario, PolicyKind::Adaptive, 8).unwrap();
    assert_eq!(unlimited.primary_usage, 1.0);
    scenario.models[0].tokens_per_day = Some(500_000);
    let limited = sim::run(&scenario, PolicyKind::Adaptive, 8).unwrap();
    // The primary serves until its day's tokens are gone, then the fallback serves everyone.
    assert_eq!(limited.success_rate, 1.0);
    assert!(limited.primary_usage < 0.6, "{limited:?}");
    assert_eq!(limited.primary_share_by_minute.last(), Some(&0.0));
    assert_eq!(limited.primary_share_by_minute.first(), Some(&1.0));
}

#[test]
fn the_sweep_is_deterministic_whatever_the_threads() {
    let grid: Vec<_> = sim::sweep::grid(1, 2).into_iter().step_by(97).collect();
    assert_eq!(grid.len(), 8);
    let one = sim::sweep::run(&grid, 1).unwrap();
    let two = sim::sweep::run(&grid, 2).unwrap();
    assert_eq!(one, two);
    assert_eq!(one.len(), grid.len());
    // Every policy, then the adaptive one on other seeds, which differ; two seeds each.
    assert!(
        one.iter()
            .all(|runs| runs.len() == PolicyKind::ALL.len() + 1)
    );
    assert!(one.iter().flatten().all(|seeds| seeds.len() == 2));
    let adaptive = PolicyKind::ALL
        .iter()
        .position(|p| *p == PolicyKind::Adaptive)
        .unwrap();
    let other = PolicyKind::ALL.len();
    assert!(one.iter().all(|runs| {
        runs[other][0].mean_latency_s != runs[adaptive][0].mean_latency_s
            && runs[adaptive][0].mean_latency_s != runs[adaptive][1].mean_latency_s
    }));
    let table = sim::sweep::table(&grid, &one);
    assert_eq!(table, sim::sweep::table(&grid, &two));
    assert!(
        table.starts_with("8 of 8 workloads compared, 2 seed(s)"),
        "{table}"
    );
    assert!(table.contains("| adaptive, other seeds |"), "{table}");
    assert!(table.contains("Paired test"), "two seeds each: {table}");
    assert!(table.contains("by more than 2 points"), "{table}");
    // The paired test's rows also read the primary's share in tokens: a last column, a share each.
    let paired: Vec<&str> = table
        .lines()
        .skip_while(|line| !line.starts_with("Paired test"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert!(
        paired[0].ends_with("| all six | all six, share in tokens |"),
        "{table}"
    );
    assert_eq!(paired.len(), 2 + PolicyKind::ALL.len(), "{table}");
    assert!(
        paired[2..]
            .iter()
            .all(|row| row.matches("% |").count() == 8),
        "{table}"
    );
    // ... of the primary's requests, and of the tokens it answered.
    assert!(
        table.contains("| policy | primary share | success | primary tokens |"),
        "{table}"
    );
    // The noise floor's worst cases name the other seeds they ran.
    assert!(
        table.contains("against its other seeds (`--seed "),
        "{table}"
    );
    assert!(table.contains("Where capacity allows"), "{table}");
    // Per dimension, the paced policy's losses over the levels: every workload once, on each.
    let counts: Vec<(usize, usize)> = table
        .lines()
        .skip_while(|line| !line.starts_with("Where paced is shown worse"))
        .skip(2)
        .take_while(|line| !line.is_empty())
        .map(|line| {
            let (_, levels) = line.split_once(": ").unwrap();
            levels.split(", ").fold((0, 0), |(worse, all), level| {
                let (_, count) = level.rsplit_once(": ").unwrap();
                let (w, a) = count.split_once('/').unwrap();
                (
                    worse + w.parse::<usize>().unwrap(),
                    all + a.parse::<usize>().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(counts.len(), 10, "{table}");
    assert!(
        counts.iter().all(|&c| c == counts[0] && c.1 == 8),
        "{table}"
    );
    // Every worst case names a command that runs its workload alone.
    assert!(
        table.contains("cargo run --release -p tower-model-fallback-sim -- --scenario default")
    );
}

#[test]
fn the_grid_spans_replicas_arrivals_streaming_and_sizes_evenly() {
    let grid = sim::sweep::grid(10, 1);
    assert_eq!(grid.len(), 720);
    let half = |count: usize| (300..420).contains(&count);
    let levels = [
        grid.iter().filter(|w| w.replicas > 1).count(),
        grid.iter().filter(|w| w.arrivals_per_s > 0.0).count(),
        grid.iter().filter(|w| w.streaming).count(),
        grid.iter().filter(|w| w.sizes.is_some()).count(),
    ];
    assert!(levels.into_iter().all(half), "{levels:?}");
    // Independently of the base grid: with and without token accounting alike.
    let streamed_with_tokens = grid
        .iter()
        .filter(|w| w.streaming && w.token_accounting)
        .count();
    assert!(
        (140..220).contains(&streamed_with_tokens),
        "{streamed_with_tokens}"
    );
    // A workload's command runs that workload.
    let workload = grid.iter().find(|w| w.replicas > 1 && w.streaming).unwrap();
    let command = workload.command();
    assert!(command.contains("--replicas 3") && command.contains("--streaming"));
    assert!(workload.scenario().streaming);
    assert_eq!(workload.replicas().count, 3);
}

#[test]
fn the_chain_length_and_the_size_mix_can_be_set() {
    let mut scenario = short(Scenario::default_scenario(), 5, 30);
    scenario.set_model_count(4).unwrap();
    let ids: Vec<&str> = scenario.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["primary", "fallback", "fallback-2", "fallback-3"]);
    scenario.set_model_count(1).unwrap();
    assert_eq!(scenario.models.len(), 1);
    assert!(scenario.set_model_count(0).is_err());

    scenario.sizes = sim::parse_sizes("70:500:200, 30:4000:1000").unwrap();
    assert_eq!(scenario.sizes.len(), 2);
    assert_eq!(scenario.sizes[1].input_tokens, 4_000);
    assert!(sim::run(&scenario, PolicyKind::Adaptive, 9).is_ok());
    for bad in ["1:2", "a:1:2", "0:1:2", ""] {
        assert!(sim::parse_sizes(bad).is_err(), "{bad}");
    }
}

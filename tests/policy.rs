//! Cooldown arithmetic of the policies, on a paused clock.

use std::time::Duration;

use tokio::time::advance;
use tower_model_fallback::ModelChain;
use tower_model_fallback::classify::Throttle;
use tower_model_fallback::error::ConfigError;
use tower_model_fallback::policy::{
    AdaptiveCooldown, AttemptInfo, CooldownPolicy, FixedCooldown, Hint, PacedCooldown,
    ProbingCooldown, Tier,
};

const A: usize = 0;

fn chain() -> ModelChain {
    ModelChain::new(["A", "B"]).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Starts an attempt on `model` and returns what the policy needs to hear its outcome.
fn begin(policy: &dyn CooldownPolicy, model: usize) -> AttemptInfo {
    AttemptInfo::new(model, policy.on_attempt(model, None), None)
}

fn throttle(policy: &dyn CooldownPolicy, model: usize) -> Duration {
    let attempt = begin(policy, model);
    policy.on_throttle(&attempt, Throttle::NONE)
}

#[tokio::test(start_paused = true)]
async fn cooldown_grows_with_throttles_in_the_window() {
    let policy = AdaptiveCooldown::new(chain());
    let expected = [10, 30, 30, 60, 60];
    for (n, want) in expected.into_iter().enumerate() {
        assert_eq!(throttle(&policy, A), secs(want), "throttle {}", n + 1);
        advance(Duration::from_millis(100)).await;
    }
    assert_eq!(policy.cooldown_for(0), Duration::ZERO);
    assert_eq!(policy.cooldown_for(100), secs(60));
}

#[tokio::test(start_paused = true)]
async fn throttles_older_than_the_window_stop_counting() {
    let policy = AdaptiveCooldown::new(chain());
    assert_eq!(throttle(&policy, A), secs(10));
    advance(secs(30)).await;
    assert_eq!(throttle(&policy, A), secs(30), "two throttles within 60 s");
    advance(secs(31)).await;
    // The first throttle is now 61 s old: only the second and this one count.
    assert_eq!(throttle(&policy, A), secs(30));
    advance(secs(61)).await;
    assert_eq!(
        throttle(&policy, A),
        secs(10),
        "window slid past every earlier throttle"
    );
}

#[tokio::test(start_paused = true)]
async fn models_cool_independently() {
    let policy = AdaptiveCooldown::new(chain());
    throttle(&policy, A);
    assert!(matches!(policy.hint(A, None), Hint::Cooling { .. }));
    assert_eq!(policy.hint(1, None), Hint::Available);
    assert_eq!(policy.cooldown_remaining(1), None);
}

#[tokio::test(start_paused = true)]
async fn skip_threshold_boundary_is_two_seconds() {
    let policy = AdaptiveCooldown::new(chain());
    throttle(&policy, A);
    advance(Duration::from_millis(7_999)).await;
    assert_eq!(
        policy.hint(A, None),
        Hint::Cooling {
            remaining: Duration::from_millis(1)
        },
        "2.001 s left: skipped, and tried again in 1 ms"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        policy.hint(A, None),
        Hint::Available,
        "exactly 2 s left: tried again"
    );
    assert_eq!(
        policy.cooldown_remaining(A),
        Some(secs(2)),
        "still cooling for stats"
    );
    advance(secs(2)).await;
    assert_eq!(policy.cooldown_remaining(A), None);
}

#[tokio::test(start_paused = true)]
async fn fresh_success_clears_history_and_cooldown() {
    let policy = AdaptiveCooldown::new(chain());
    throttle(&policy, A);
    throttle(&policy, A);
    let probe = begin(&policy, A);
    policy.on_success(&probe);
    assert_eq!(policy.cooldown_remaining(A), None);
    assert_eq!(policy.hint(A, None), Hint::Available);
    // History is gone too: the next throttle is a first throttle again.
    assert_eq!(throttle(&policy, A), secs(10));
}

#[tokio::test(start_paused = true)]
async fn stale_success_does_not_reopen_the_model() {
    let policy = AdaptiveCooldown::new(chain());
    let slow = begin(&policy, A); // starts before the throttle
    advance(secs(1)).await;
    throttle(&policy, A);
    advance(secs(1)).await;
    policy.on_success(&slow);
    assert_eq!(policy.cooldown_remaining(A), Some(secs(9)));
    // The history survived as well: a second throttle is the 30 s tier.
    assert_eq!(throttle(&policy, A), secs(30));
}

#[tokio::test(start_paused = true)]
async fn retry_after_lengthens_but_never_shortens_the_cooldown() {
    let policy = AdaptiveCooldown::new(chain());
    let attempt = begin(&policy, A);
    assert_eq!(
        policy.on_throttle(&attempt, Throttle::retry_after(secs(45))),
        secs(45)
    );
    policy.reset_cooldowns();
    let attempt = begin(&policy, A);
    assert_eq!(
        policy.on_throttle(&attempt, Throttle::retry_after(secs(3))),
        secs(10),
        "shorter hint ignored"
    );
    policy.reset_cooldowns();
    let attempt = begin(&policy, A);
    assert_eq!(
        policy.on_throttle(&attempt, Throttle::retry_after(secs(86_400))),
        secs(300),
        "hints are capped by max_retry_after"
    );
}

#[tokio::test(start_paused = true)]
async fn later_throttle_never_shortens_a_running_cooldown() {
    let policy = AdaptiveCooldown::builder()
        .tiers([Tier::new(1, secs(10))])
        .build(chain())
        .unwrap();
    let attempt = begin(&policy, A);
    policy.on_throttle(&attempt, Throttle::retry_after(secs(100)));
    assert_eq!(
        throttle(&policy, A),
        secs(100),
        "the longer cooldown stays in force"
    );
}

#[tokio::test(start_paused = true)]
async fn reset_clears_every_model() {
    let policy = AdaptiveCooldown::new(chain());
    throttle(&policy, 0);
    throttle(&policy, 1);
    policy.reset_cooldowns();
    assert_eq!(policy.cooldown_remaining(0), None);
    assert_eq!(policy.cooldown_remaining(1), None);
    assert_eq!(throttle(&policy, 0), secs(10));
}

#[tokio::test(start_paused = true)]
async fn custom_numbers_are_used() {
    let policy = AdaptiveCooldown::builder()
        .window(secs(5))
        .tiers([Tier::new(1, secs(3)), Tier::new(2, secs(20))])
        .skip_threshold(Duration::from_millis(500))
        .build(chain())
        .unwrap();
    assert_eq!(throttle(&policy, A), secs(3));
    assert_eq!(throttle(&policy, A), secs(20));
    advance(secs(6)).await;
    assert_eq!(
        throttle(&policy, A),
        secs(14),
        "window expired: a 3 s tier cannot cut the 14 s left"
    );
    policy.reset_cooldowns();
    assert_eq!(throttle(&policy, A), secs(3));
    advance(Duration::from_millis(2_500)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
}

#[test]
fn invalid_adaptive_config_is_rejected_when_built() {
    let build =
        |b: tower_model_fallback::policy::AdaptiveCooldownBuilder| b.build(chain()).unwrap_err();
    assert_eq!(
        build(AdaptiveCooldown::builder().window(Duration::ZERO)),
        ConfigError::ZeroWindow
    );
    assert_eq!(
        build(AdaptiveCooldown::builder().tiers([])),
        ConfigError::NoTiers
    );
    assert_eq!(
        build(AdaptiveCooldown::builder().tiers([Tier::new(0, secs(10))])),
        ConfigError::ZeroTier
    );
    assert_eq!(
        build(AdaptiveCooldown::builder().tiers([Tier::new(1, Duration::ZERO)])),
        ConfigError::ZeroTier
    );
    assert_eq!(
        build(AdaptiveCooldown::builder().tiers([Tier::new(1, secs(30)), Tier::new(2, secs(10))])),
        ConfigError::TiersNotIncreasing,
        "a tier that shrinks"
    );
    assert_eq!(
        build(AdaptiveCooldown::builder().tiers([Tier::new(2, secs(10)), Tier::new(2, secs(30))])),
        ConfigError::TiersNotIncreasing,
        "a threshold that repeats"
    );
    let err = build(AdaptiveCooldown::builder().skip_threshold(secs(10)));
    assert_eq!(
        err,
        ConfigError::SkipThresholdTooLarge {
            threshold: secs(10),
            shortest: secs(10)
        }
    );
    assert_eq!(
        err.to_string(),
        "skip threshold 10s must be shorter than the shortest cooldown 10s"
    );
}

#[test]
fn invalid_chains_are_rejected_when_built() {
    let empty: [&str; 0] = [];
    assert_eq!(ModelChain::new(empty).unwrap_err(), ConfigError::EmptyChain);
    assert_eq!(
        ModelChain::new(["A", ""]).unwrap_err(),
        ConfigError::EmptyModelId
    );
    let err = ModelChain::new(["A", "B", "A"]).unwrap_err();
    assert_eq!(err, ConfigError::DuplicateModel("A".into()));
    assert_eq!(err.to_string(), "model A appears twice in the chain");
    let many: Vec<String> = (0..65).map(|i| format!("m{i}")).collect();
    assert_eq!(
        ModelChain::new(&many).unwrap_err(),
        ConfigError::TooManyModels { count: 65, max: 64 }
    );
    assert_eq!(ModelChain::new(&many[..64]).unwrap().len(), 64);
}

#[tokio::test(start_paused = true)]
async fn fixed_cooldown_blocks_for_everyone_until_it_runs_out() {
    let policy = FixedCooldown::new(chain());
    assert_eq!(throttle(&policy, A), secs(60));
    let probe = begin(&policy, A);
    policy.on_success(&probe);
    advance(secs(59)).await;
    assert_eq!(
        policy.hint(A, None),
        Hint::Cooling { remaining: secs(1) },
        "no threshold, and a success does not end the block"
    );
    advance(secs(1)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
    assert_eq!(
        FixedCooldown::with_cooldown(chain(), Duration::ZERO).unwrap_err(),
        ConfigError::ZeroCooldown
    );
}

#[tokio::test(start_paused = true)]
async fn probing_lets_one_request_probe_a_cooling_model_and_backs_off() {
    let policy = ProbingCooldown::new(chain());
    throttle(&policy, A);
    assert!(
        !policy.hint(A, None).is_available(),
        "cooling: no probe before 1 s"
    );
    advance(secs(1)).await;
    assert_eq!(
        policy.hint(A, None),
        Hint::Available,
        "the first request after 1 s probes"
    );
    assert!(
        !policy.hint(A, None).is_available(),
        "exactly one probe per interval"
    );

    // The probe is throttled: the next probe waits twice as long.
    throttle(&policy, A);
    advance(Duration::from_millis(1_999)).await;
    assert!(!policy.hint(A, None).is_available());
    advance(Duration::from_millis(1)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);

    // This probe succeeds (it started after the latest throttle): the model reopens for everyone.
    let probe = begin(&policy, A);
    policy.on_success(&probe);
    assert_eq!(policy.cooldown_remaining(A), None);
    assert_eq!(policy.hint(A, None), Hint::Available);
    assert_eq!(policy.hint(A, None), Hint::Available);

    // A new throttle starts probing over at the first interval.
    throttle(&policy, A);
    advance(secs(1)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
}

#[test]
fn probing_rejects_invalid_intervals() {
    let err = ProbingCooldown::with_probes(AdaptiveCooldown::new(chain()), Duration::ZERO, secs(8))
        .unwrap_err();
    assert_eq!(err, ConfigError::InvalidProbeInterval);
    let err =
        ProbingCooldown::with_probes(AdaptiveCooldown::new(chain()), secs(4), secs(2)).unwrap_err();
    assert_eq!(err, ConfigError::InvalidProbeInterval);
}

/// `count` successes on `model`, one every `every`.
async fn serve(policy: &dyn CooldownPolicy, model: usize, count: usize, every: Duration) {
    for _ in 0..count {
        advance(every).await;
        let attempt = begin(policy, model);
        policy.on_success(&attempt);
    }
}

/// How many of the requests arriving every `every` for `total` the policy lets try `model`.
async fn admitted(
    policy: &dyn CooldownPolicy,
    model: usize,
    total: Duration,
    every: Duration,
) -> u32 {
    let mut admitted = 0;
    let mut elapsed = Duration::ZERO;
    while elapsed < total {
        advance(every).await;
        elapsed += every;
        admitted += u32::from(policy.hint(model, None).is_available());
    }
    admitted
}

fn near(value: f64, want: f64) -> bool {
    (value - want).abs() < want * 0.01
}

/// Two fresh throttles of an open model at once: the second paces it.
fn start_pacing(policy: &PacedCooldown, model: usize) -> Duration {
    assert_eq!(throttle(policy, model), Duration::ZERO, "a lone throttle");
    throttle(policy, model)
}

/// A policy whose model A served 32 requests, one every `every`, and was then paced.
async fn paced_after_serving(every: Duration) -> PacedCooldown {
    let policy = PacedCooldown::new(chain());
    serve(&policy, A, 32, every).await;
    start_pacing(&policy, A);
    policy
}

#[tokio::test(start_paused = true)]
async fn paced_leaves_a_lone_throttle_open_and_paces_on_the_next_one() {
    let policy = PacedCooldown::new(chain());
    serve(&policy, A, 32, Duration::from_millis(100)).await;
    // One throttle: as likely the provider's capacity as an empty bucket. Still open.
    assert_eq!(throttle(&policy, A), Duration::ZERO);
    assert_eq!(policy.pace(A), None);
    assert_eq!(policy.hint(A, None), Hint::Available);
    // A straggler that started before it is not a second one.
    let straggler = AttemptInfo::new(A, tower_model_fallback::policy::Ticket::new(0), None);
    policy.on_throttle(&straggler, Throttle::NONE);
    assert_eq!(policy.pace(A), None);

    // Another fresh throttle 31 s later is alone again; one 29 s after that paces.
    serve(&policy, A, 31, secs(1)).await;
    assert_eq!(throttle(&policy, A), Duration::ZERO);
    serve(&policy, A, 29, secs(1)).await;
    assert!(throttle(&policy, A) > Duration::ZERO);
    assert!(policy.pace(A).is_some());

    // Once open again (a quiet minute), a throttle within 2 minutes of the last paced one paces
    // at once: the model is known to run at its quota. After that, a lone one is alone again.
    advance(secs(63)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
    assert_eq!(policy.pace(A), None);
    serve(&policy, A, 10, secs(1)).await;
    assert!(throttle(&policy, A) > Duration::ZERO);
    advance(secs(63)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
    advance(secs(121)).await;
    assert_eq!(throttle(&policy, A), Duration::ZERO);
    assert_eq!(policy.pace(A), None);
}

#[tokio::test(start_paused = true)]
async fn paced_admits_at_the_rate_the_model_served_before_its_first_throttle() {
    let policy = PacedCooldown::new(chain());
    assert_eq!(policy.pace(A), None, "open until throttled");
    serve(&policy, A, 32, Duration::from_millis(100)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);

    // It served 10 per second: from now on 95% of that, starting one interval after the throttle.
    let hold = start_pacing(&policy, A);
    assert!(near(policy.pace(A).unwrap(), 9.5), "{:?}", policy.pace(A));
    assert!(near(hold.as_secs_f64(), 1.0 / 9.5), "{hold:?}");
    assert!(matches!(policy.hint(A, None), Hint::Cooling { remaining } if remaining == hold));
    assert!(
        policy.cooldown_remaining(1).is_none(),
        "other models stay open"
    );

    // Requests every 10 ms for 10 s: about 95 of the 1,000 go to A (the pace creeps up 0.1%/s).
    let count = admitted(&policy, A, secs(10), Duration::from_millis(10)).await;
    assert!((95..=97).contains(&count), "{count}");
}

#[tokio::test(start_paused = true)]
async fn paced_judges_a_model_that_was_quiet_until_a_moment_ago_by_the_busy_moment() {
    let policy = PacedCooldown::new(chain());
    // One success every 10 s for about five minutes, then ten in one second, then a throttle.
    serve(&policy, A, 32, secs(10)).await;
    serve(&policy, A, 10, Duration::from_millis(100)).await;
    start_pacing(&policy, A);
    assert!(near(policy.pace(A).unwrap(), 9.5), "{:?}", policy.pace(A));
}

#[tokio::test(start_paused = true)]
async fn paced_takes_an_early_throttle_at_the_mean_rate_served_so_far() {
    // Seven successes in the first 2.8 s, too few for a recent rate, then a throttle: the pace is
    // 95% of what was served since the start (7 in 3 s), not a guess of one per second.
    let policy = PacedCooldown::new(chain());
    serve(&policy, A, 7, Duration::from_millis(400)).await;
    advance(Duration::from_millis(200)).await;
    start_pacing(&policy, A);
    assert!(
        near(policy.pace(A).unwrap(), 0.95 * 7.0 / 3.0),
        "{:?}",
        policy.pace(A)
    );

    // A throttle before any success: one per second, the floor.
    let policy = PacedCooldown::new(chain());
    advance(secs(3)).await;
    start_pacing(&policy, A);
    assert!(near(policy.pace(A).unwrap(), 0.95), "{:?}", policy.pace(A));
}

#[tokio::test(start_paused = true)]
async fn paced_measures_the_refill_between_throttles() {
    let policy = paced_after_serving(Duration::from_millis(100)).await;

    // The quota really refills 2 per second: 20 served in each 10 s up to the next throttle. What
    // was served is a lower bound only (demand may have been lower), so each window moves the
    // pace halfway from where it had crept (1% in 10 s) down to it, then the margin.
    let mut want = 9.5;
    for _ in 0..3 {
        serve(&policy, A, 20, Duration::from_millis(500)).await;
        throttle(&policy, A);
        want = 0.95 * (2.0 + want * 1.01) / 2.0;
        assert!(near(policy.pace(A).unwrap(), want), "{:?}", policy.pace(A));
    }
    assert!(want < 2.7, "{want}");

    // A throttle 1 s later is too close to measure from: the pace is resynchronised, not changed.
    serve(&policy, A, 2, Duration::from_millis(500)).await;
    let hold = throttle(&policy, A);
    assert!(near(policy.pace(A).unwrap(), want), "{:?}", policy.pace(A));
    assert!(near(hold.as_secs_f64(), 1.0 / want), "{hold:?}");

    // An attempt that started before that throttle and is throttled too says nothing new.
    let straggler = AttemptInfo::new(A, tower_model_fallback::policy::Ticket::new(0), None);
    advance(secs(6)).await;
    policy.on_throttle(&straggler, Throttle::NONE);
    assert!(
        near(policy.pace(A).unwrap(), want * 1.007),
        "{:?}",
        policy.pace(A)
    );
    assert_eq!(policy.hint(A, None), Hint::Available, "not resynchronised");
}

#[tokio::test(start_paused = true)]
async fn paced_measures_between_what_was_served_and_the_pace_that_drained_the_bucket() {
    let policy = paced_after_serving(Duration::from_millis(100)).await;
    assert!(near(policy.pace(A).unwrap(), 9.5), "{:?}", policy.pace(A));

    // Demand above the pace for 10 s: it admits about 96 requests; 60 of them have answered when
    // the next throttle comes. The refill is at least the 6 per second served and below the pace
    // the bucket ran dry at (9.5, crept up 1%): the midpoint, then the margin.
    let mut running = Vec::new();
    for _ in 0..1_000 {
        advance(Duration::from_millis(10)).await;
        if policy.hint(A, None).is_available() {
            running.push(begin(&policy, A));
        }
    }
    assert!(running.len() > 90, "{}", running.len());
    for attempt in &running[..60] {
        policy.on_success(attempt);
    }
    throttle(&policy, A);
    let want = 0.95 * (6.0 + 9.5 * 1.01) / 2.0;
    assert!(near(policy.pace(A).unwrap(), want), "{:?}", policy.pace(A));

    // More served than the pace (the rest of those answers, then 10 per second): the served rate.
    for attempt in &running[60..] {
        policy.on_success(attempt);
    }
    serve(&policy, A, 60, Duration::from_millis(100)).await;
    throttle(&policy, A);
    let served = running.len() as f64 / 6.0;
    assert!(
        near(policy.pace(A).unwrap(), 0.95 * served),
        "{:?}",
        policy.pace(A)
    );
}

#[tokio::test(start_paused = true)]
async fn paced_opens_again_after_a_quiet_minute_unless_it_is_holding_requests_back() {
    let policy = paced_after_serving(Duration::from_millis(500)).await;
    assert!(near(policy.pace(A).unwrap(), 1.9), "{:?}", policy.pace(A));

    // Demand above the pace for 70 s: still paced, whatever the time since the throttle.
    admitted(&policy, A, secs(70), Duration::from_millis(100)).await;
    assert!(policy.pace(A).is_some());

    // Once demand stops and the pace has refilled its burst (2 s), the model opens.
    advance(secs(3)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);
    assert_eq!(policy.pace(A), None);
    assert_eq!(policy.cooldown_remaining(A), None);
}

#[tokio::test(start_paused = true)]
async fn paced_holds_a_model_for_its_retry_after_up_to_a_cap_and_reset_opens_it() {
    let policy = PacedCooldown::new(chain());
    let attempt = begin(&policy, A);
    assert_eq!(
        policy.on_throttle(&attempt, Throttle::retry_after(secs(30))),
        secs(30)
    );
    advance(secs(29)).await;
    assert!(!policy.hint(A, None).is_available());
    advance(secs(1)).await;
    assert_eq!(policy.hint(A, None), Hint::Available);

    // An odd header asking for an hour holds the model for the 300 s cap.
    let attempt = begin(&policy, A);
    assert_eq!(
        policy.on_throttle(&attempt, Throttle::retry_after(secs(3_600))),
        secs(300)
    );
    assert!(!policy.hint(A, None).is_available());
    policy.reset_cooldowns();
    assert_eq!(policy.pace(A), None);
    assert_eq!(policy.hint(A, None), Hint::Available);
}

#[test]
fn paced_rejects_invalid_numbers() {
    for margin in [0.0, -0.5, 1.01, f64::NAN] {
        let err = PacedCooldown::builder()
            .margin(margin)
            .build(chain())
            .unwrap_err();
        assert_eq!(err, ConfigError::InvalidMargin);
        assert_eq!(
            err.to_string(),
            "pacing margin must be above 0 and at most 1"
        );
    }
    let err = PacedCooldown::builder()
        .quiet(Duration::ZERO)
        .build(chain())
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroQuietPeriod);
    assert!(PacedCooldown::builder().margin(1.0).build(chain()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn paced_admission_is_exact_under_concurrent_callers() {
    use std::sync::Arc;
    let policy = Arc::new(PacedCooldown::new(chain()));
    serve(&*policy, A, 32, Duration::from_millis(100)).await;
    start_pacing(&policy, A);
    // The pace (9.5 per second) refills its whole 2 s burst; the clock then stands still.
    advance(secs(5)).await;
    let interval = 1.0 / policy.pace(A).unwrap();
    let capacity = (2.0 / interval).floor() as usize + 1;

    // Four threads ask 100 times each at the same instant: exactly the burst gets through.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let policy = policy.clone();
            tokio::task::spawn_blocking(move || {
                (0..100)
                    .filter(|_| policy.hint(A, None).is_available())
                    .count()
            })
        })
        .collect();
    let mut admitted = 0;
    for thread in threads {
        admitted += thread.await.unwrap();
    }
    assert_eq!(admitted, capacity);
}

#[tokio::test(start_paused = true)]
async fn throttles_of_one_moment_count_once() {
    let policy = AdaptiveCooldown::new(chain());
    // Four attempts in flight together, all throttled: one empty quota, seen four times.
    let attempts: Vec<_> = (0..4).map(|_| begin(&policy, A)).collect();
    for attempt in &attempts {
        assert_eq!(policy.on_throttle(attempt, Throttle::NONE), secs(10));
    }
    assert_eq!(policy.cooldown_remaining(A), Some(secs(10)));
    // A stale throttle may still lengthen the cooldown by its retry-after hint.
    let stale = policy.on_throttle(&attempts[0], Throttle::retry_after(secs(20)));
    assert_eq!(stale, secs(20));
    // An attempt that starts after the throttle and is throttled too is new evidence.
    advance(secs(9)).await;
    assert_eq!(throttle(&policy, A), secs(30));
}

/// 40,000 requests per second ask a paced model whose quota holds 60 requests and refills one per
/// second; answers take 100 µs, throttles come back at once. Returns (admitted, throttled).
async fn flood(policy: &PacedCooldown, seconds: u64) -> (u64, u64) {
    let step = Duration::from_micros(25);
    let mut tokens = 60.0_f64;
    let (mut admitted, mut throttled) = (0, 0);
    let mut answering: Vec<(AttemptInfo, u32)> = Vec::new();
    for _ in 0..seconds * 40_000 {
        advance(step).await;
        tokens = (tokens + step.as_secs_f64()).min(60.0);
        for (attempt, _) in answering.extract_if(.., |(_, left)| {
            *left -= 1;
            *left == 0
        }) {
            policy.on_success(&attempt);
        }
        if policy.hint(A, None).is_available() {
            admitted += 1;
            let attempt = begin(policy, A);
            if tokens >= 1.0 {
                tokens -= 1.0;
                answering.push((attempt, 4));
            } else {
                throttled += 1;
                policy.on_throttle(&attempt, Throttle::NONE);
            }
        }
    }
    (admitted, throttled)
}

#[tokio::test(start_paused = true)]
async fn paced_never_admits_much_more_than_the_refill_however_many_ask() {
    // The 60 requests of the full bucket are served in 1.5 ms, which looks like a rate of 40,000
    // per second; the throttles that follow must correct that within a few attempts.
    let policy = PacedCooldown::new(chain());
    let (admitted, throttled) = flood(&policy, 10).await;
    assert!(admitted <= 60 + 10 + 40, "admitted {admitted}");
    assert!(throttled <= 30, "throttled {throttled}");
    let pace = policy.pace(A).unwrap();
    assert!((0.9..1.2).contains(&pace), "paced at {pace}/s");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_lets_the_next_request_probe_at_once() {
    let policy = ProbingCooldown::new(chain());
    throttle(&policy, A);
    advance(secs(1)).await;
    assert_eq!(policy.hint(A, None), Hint::Available, "the probe");
    let probe = begin(&policy, A);
    assert!(!policy.hint(A, None).is_available(), "one probe at a time");
    // The caller dropped the probe before the model answered: it proved nothing.
    policy.on_cancelled(&probe);
    assert_eq!(
        policy.hint(A, None),
        Hint::Available,
        "the next request probes"
    );
    // A straggler that started before the throttle is not a probe: cancelling it frees nothing.
    let straggler = AttemptInfo::new(A, tower_model_fallback::policy::Ticket::new(0), None);
    policy.on_cancelled(&straggler);
    assert!(!policy.hint(A, None).is_available());
}

#[tokio::test(start_paused = true)]
async fn adaptive_applies_other_replicas_events_without_losing_newer_evidence() {
    use tower_model_fallback::cluster::{ClusterEvent, ClusterPolicy};
    let policy = AdaptiveCooldown::new(chain());
    let a = tower_model_fallback::ModelId::new("A");

    // A throttle elsewhere, sent 4 s ago with a 10 s cooldown: what is left of it, counted here.
    let throttled = ClusterEvent::Throttled {
        model: a.clone(),
        cooldown: secs(10),
    };
    let running = begin(&policy, A);
    policy.apply(&throttled, secs(4));
    assert_eq!(
        policy.cooldown_remaining(A),
        Some(secs(10)),
        "the tier's own 10 s"
    );
    // A request that started before it cannot clear it.
    policy.on_success(&running);
    assert!(policy.cooldown_remaining(A).is_some());
    // A second remote throttle in the window moves the model to the 30 s tier.
    policy.apply(&throttled, Duration::ZERO);
    assert_eq!(policy.cooldown_remaining(A), Some(secs(30)));

    // Seen here 1 s ago; a success elsewhere sent 2 s ago is older than that: the throttle stands.
    throttle(&policy, A);
    advance(secs(1)).await;
    let cleared = ClusterEvent::Cleared { model: a };
    policy.apply(&cleared, secs(2));
    assert!(policy.cooldown_remaining(A).is_some());
    // A success sent after the throttle here clears it.
    policy.apply(&cleared, Duration::from_millis(500));
    assert_eq!(policy.cooldown_remaining(A), None);

    throttle(&policy, A);
    policy.apply(&ClusterEvent::Reset, Duration::ZERO);
    assert_eq!(policy.cooldown_remaining(A), None);
}

#[tokio::test(start_paused = true)]
async fn paced_starts_pacing_on_another_replicas_throttle() {
    use tower_model_fallback::cluster::{ClusterEvent, ClusterPolicy};
    let policy = PacedCooldown::new(chain());
    let a = tower_model_fallback::ModelId::new("A");
    assert_eq!(policy.pace(A), None);
    let attempt = begin(&policy, A);
    assert!(policy.is_new_throttle(&attempt));
    policy.apply(
        &ClusterEvent::Throttled {
            model: a.clone(),
            cooldown: secs(1),
        },
        Duration::ZERO,
    );
    assert!(policy.pace(A).is_some(), "paced after a throttle elsewhere");
    // The local attempt that started before it is no longer new evidence.
    assert!(!policy.is_new_throttle(&attempt));
    // Successes elsewhere carry nothing for a paced model; a reset opens it.
    policy.apply(&ClusterEvent::Cleared { model: a }, Duration::ZERO);
    assert!(policy.pace(A).is_some());
    policy.apply(&ClusterEvent::Reset, Duration::ZERO);
    assert_eq!(policy.pace(A), None);
}

//! Model checks of the shared state under every interleaving loom can find.
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom_model" CARGO_TARGET_DIR=target/loom \
//!     cargo test --lib --release --no-default-features loom_model
//! ```
//!
//! Built that way, the crate's atomics and locks are loom's (`crate::sync`) and the policies' clock
//! stands still unless a model moves it (`policy::epoch::model_clock`).

use std::sync::Arc;
use std::time::Duration;

use loom::thread;

use crate::chain::ModelChain;
use crate::classify::{QuotaLimit, Throttle};
use crate::policy::epoch::model_clock;
use crate::policy::{
    AdaptiveCooldown, AttemptInfo, CooldownPolicy, FixedCooldown, Hint, PacedCooldown,
    ProbingCooldown,
};
use crate::stats::Stats;

const A: usize = 0;

fn chain() -> ModelChain {
    match ModelChain::new(["A", "B"]) {
        Ok(chain) => chain,
        Err(error) => panic!("{error}"),
    }
}

fn begin(policy: &dyn CooldownPolicy) -> AttemptInfo {
    AttemptInfo::new(A, policy.on_attempt(A, None), None)
}

fn at_secs(secs: f64) {
    model_clock::set(Duration::from_secs_f64(secs).as_nanos() as u64);
}

#[test]
fn adaptive_stale_success_never_clears_a_newer_throttle() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(AdaptiveCooldown::new(chain()));
        let slow = begin(&*policy);
        let throttled = begin(&*policy);
        let p = policy.clone();
        let throttle = thread::spawn(move || p.on_throttle(&throttled, Throttle::NONE));
        policy.on_success(&slow);
        let _ = throttle.join();
        // Whichever came first, the throttle is newer evidence than a success that started before it.
        assert_eq!(policy.cooldown_remaining(A), Some(Duration::from_secs(10)));
        // And a fresh success still clears it: the state stayed consistent.
        let fresh = begin(&*policy);
        policy.on_success(&fresh);
        assert_eq!(policy.cooldown_remaining(A), None);
    });
}

#[test]
fn adaptive_throttles_of_one_moment_count_once() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(AdaptiveCooldown::new(chain()));
        let first = begin(&*policy);
        let second = begin(&*policy);
        let p = policy.clone();
        let other = thread::spawn(move || p.on_throttle(&second, Throttle::NONE));
        let mine = policy.on_throttle(&first, Throttle::NONE);
        let theirs = other.join().unwrap_or_default();
        assert_eq!(
            (mine, theirs),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
    });
}

#[test]
fn adaptive_reset_is_never_lost() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(AdaptiveCooldown::new(chain()));
        let earlier = begin(&*policy);
        policy.on_throttle(&earlier, Throttle::NONE);
        let attempt = begin(&*policy);
        let p = policy.clone();
        let throttle = thread::spawn(move || p.on_throttle(&attempt, Throttle::NONE));
        policy.reset_cooldowns();
        let _ = throttle.join();
        // Either the reset came last and nothing cools, or the throttle did and counts as the first
        // throttle after the reset (10 s), never as the second of a window the reset forgot (30 s).
        let remaining = policy.cooldown_remaining(A);
        assert!(
            remaining.is_none() || remaining == Some(Duration::from_secs(10)),
            "{remaining:?}"
        );
        let fresh = begin(&*policy);
        policy.on_success(&fresh);
        assert_eq!(
            policy.cooldown_remaining(A),
            None,
            "a fresh success reopens"
        );
    });
}

#[test]
fn probing_success_racing_a_throttle_keeps_probes_on() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(ProbingCooldown::new(chain()));
        let first = begin(&*policy);
        policy.on_throttle(&first, Throttle::NONE);
        // Two attempts admitted after that throttle: one succeeds while the other is throttled.
        let succeeds = begin(&*policy);
        let throttled = begin(&*policy);
        let p = policy.clone();
        let throttle = thread::spawn(move || p.on_throttle(&throttled, Throttle::NONE));
        policy.on_success(&succeeds);
        let _ = throttle.join();
        // The throttle is in force either way (after the success, or making it stale), so its
        // probe must come: exactly one request may probe once the interval has passed.
        assert!(policy.cooldown_remaining(A).is_some());
        at_secs(5.0);
        let probes = (0..3)
            .filter(|_| policy.hint(A, None).is_available())
            .count();
        assert_eq!(probes, 1);
    });
}

#[test]
fn probing_admits_one_probe_per_expiry() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(ProbingCooldown::new(chain()));
        let attempt = begin(&*policy);
        policy.on_throttle(&attempt, Throttle::NONE);
        at_secs(1.5);
        let p = policy.clone();
        let other = thread::spawn(move || p.hint(A, None).is_available());
        let mine = policy.hint(A, None).is_available();
        let theirs = other.join().unwrap_or(false);
        assert_eq!(u8::from(mine) + u8::from(theirs), 1);
    });
}

/// Two fresh throttles of the open model A: a lone one leaves it open, the second paces it.
fn start_pacing(policy: &PacedCooldown) {
    for _ in 0..2 {
        let attempt = begin(policy);
        policy.on_throttle(&attempt, Throttle::NONE);
    }
}

#[test]
fn paced_readers_never_see_half_a_measurement() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(PacedCooldown::new(chain()));
        start_pacing(&policy);
        at_secs(10.0);
        let p = policy.clone();
        let reader = thread::spawn(move || p.pace(A));
        let later = begin(&*policy);
        policy.on_throttle(&later, Throttle::NONE);
        // The reader saw the first pace (1/s x 0.95, crept up 1 % in 10 s) or the second (nothing
        // served in 10 s: halfway down to zero, times the margin): never one measurement's rate
        // with the other's time, which would be the first rate uncrept or the second crept.
        let seen = reader.join().ok().flatten();
        let first = 0.95 * (1.0 + 0.001 * 10.0);
        let second = 0.95 * first / 2.0;
        assert!(
            seen.is_some_and(|rate| (rate - first).abs() < 1e-9 || (rate - second).abs() < 1e-9),
            "{seen:?}"
        );
    });
}

#[test]
fn paced_admits_exactly_what_it_has() {
    loom::model(|| {
        at_secs(0.0);
        let policy = Arc::new(PacedCooldown::new(chain()));
        start_pacing(&policy);
        // One interval (1 / 0.95 s) later the pace has one admission to give.
        at_secs(1.1);
        let p = policy.clone();
        let other = thread::spawn(move || p.hint(A, None) == Hint::Available);
        let mine = policy.hint(A, None) == Hint::Available;
        let theirs = other.join().unwrap_or(false);
        assert_eq!(u8::from(mine) + u8::from(theirs), 1);
    });
}

#[test]
fn request_counters_never_drift() {
    loom::model(|| {
        at_secs(0.0);
        let policy = FixedCooldown::new(chain());
        let stats = Arc::new(Stats::new(2));
        let s = stats.clone();
        // One request served by A after a throttle that said tokens ran out (its first attempt
        // counted with it), one that waited before its attempt and was cancelled mid-attempt.
        let served = thread::spawn(move || {
            s.opened(0);
            s.throttle(0, Some(QuotaLimit::Tokens));
            s.attempt(1);
            s.success(1);
        });
        let s = stats.clone();
        let cancelled = thread::spawn(move || {
            s.request();
            s.attempt(0);
            s.attempt_cancelled(0);
            s.request_cancelled();
        });
        let check = |stats: &Stats| {
            let snapshot = stats.snapshot(&policy);
            let t = &snapshot.totals;
            assert_eq!(
                t.requests,
                t.served + t.failed + t.cancelled + t.in_flight,
                "{t:?}"
            );
            for m in &snapshot.models {
                let ended = m.successes + m.throttles + m.failures + m.cancelled;
                assert!(m.attempts >= ended, "{m:?}");
                assert!(m.token_throttles <= m.throttles, "{m:?}");
            }
        };
        check(&stats);
        let _ = served.join();
        check(&stats);
        let _ = cancelled.join();
        let snapshot = stats.snapshot(&policy);
        assert_eq!(
            (
                snapshot.totals.requests,
                snapshot.totals.served,
                snapshot.totals.cancelled
            ),
            (2, 1, 1)
        );
        assert_eq!(snapshot.models[0].token_throttles, 1);
    });
}

#[test]
fn ejection_lets_exactly_one_probe_through() {
    loom::model(|| {
        at_secs(0.0);
        let policy = match crate::policy::OutlierEjection::builder()
            .consecutive_failures(1)
            .wrap(AdaptiveCooldown::new(chain()))
        {
            Ok(policy) => Arc::new(policy),
            Err(error) => panic!("{error}"),
        };
        let failed = begin(&*policy);
        policy.on_failure(&failed, crate::classify::ErrorClass::Transient);
        at_secs(10.0);
        // The ejection has run out and two requests ask at once: one probes, the other skips A.
        let p = policy.clone();
        let other = thread::spawn(move || p.hint(A, None).is_available());
        let mine = policy.hint(A, None).is_available();
        let theirs = other.join().unwrap_or(false);
        assert!(mine != theirs, "exactly one probe: {mine} {theirs}");
        let probe = begin(&*policy);
        policy.on_success(&probe);
        assert_eq!(
            policy.reopens_in(A),
            None,
            "the probe's answer brought A back"
        );
    });
}

#[test]
fn budget_counts_every_deposit_and_withdrawal() {
    use tower::retry::budget::Budget;
    loom::model(|| {
        at_secs(0.0);
        // No floor: withdrawals are exactly 50% of deposits.
        let budget = match crate::FallbackBudget::new(Duration::from_secs(10), 0, 0.5) {
            Ok(budget) => Arc::new(budget),
            Err(error) => panic!("{error}"),
        };
        let b = budget.clone();
        let other = thread::spawn(move || {
            b.deposit();
            b.deposit();
        });
        budget.deposit();
        budget.deposit();
        let _ = other.join();
        // Four deposits at 50%: exactly two withdrawals, whatever the interleaving.
        let granted = (0..3).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 2);
    });
}

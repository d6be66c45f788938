//! Replicas sharing throttle state through a real `redis-server`, which each test starts on a free
//! loopback port and stops when it ends.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_model_fallback::classify::Throttle;
use tower_model_fallback::cluster::redis::RedisCluster;
use tower_model_fallback::cluster::{ClusterStatusSnapshot, Clustered};
use tower_model_fallback::policy::{AdaptiveCooldown, AttemptInfo, CooldownPolicy, Hint, Tier};
use tower_model_fallback::testing::ScriptedModels;
use tower_model_fallback::{Fallback, FallbackLayer, ModelChain, ModelRequest};

const A: usize = 0;

/// A `redis-server` of this test's own, killed when dropped.
struct RedisServer {
    _process: Child,
    port: u16,
}

impl RedisServer {
    async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer::start_on(port).await
    }

    async fn start_on(port: u16) -> RedisServer {
        let process = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (.ci/run installs Debian's package)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        RedisServer {
            _process: process,
            port,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// One replica: its policy and its link to the others.
struct Replica {
    policy: Arc<Clustered<AdaptiveCooldown>>,
    _cluster: RedisCluster,
}

fn chain() -> ModelChain {
    ModelChain::new(["A", "B"]).unwrap()
}

impl Replica {
    fn join(url: &str, namespace: &str) -> Replica {
        Replica::join_with(url, namespace, AdaptiveCooldown::new(chain()))
    }

    fn join_with(url: &str, namespace: &str, policy: AdaptiveCooldown) -> Replica {
        let (policy, link) = Clustered::new(policy);
        let cluster = RedisCluster::spawn(link, url, namespace).unwrap();
        Replica {
            policy: Arc::new(policy),
            _cluster: cluster,
        }
    }

    fn throttle(&self) -> Duration {
        let ticket = self.policy.on_attempt(A, None);
        self.policy
            .on_throttle(&AttemptInfo::new(A, ticket, None), Throttle::NONE)
    }

    fn succeed(&self) {
        let ticket = self.policy.on_attempt(A, None);
        self.policy.on_success(&AttemptInfo::new(A, ticket, None));
    }

    fn cooling(&self) -> Option<Duration> {
        self.policy.cooldown_remaining(A)
    }

    /// Whether a new request would try A now.
    fn tries_a(&self) -> bool {
        self.policy.hint(A, None) == Hint::Available
    }

    fn status(&self) -> ClusterStatusSnapshot {
        self.policy.status()
    }
}

/// Polls `check` until it holds, for up to `within`.
async fn eventually(within: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connected(replicas: &[&Replica]) {
    eventually(Duration::from_secs(5), "every replica connected", || {
        replicas.iter().all(|r| r.status().connected)
    })
    .await;
}

#[tokio::test]
async fn a_throttle_on_one_replica_cools_the_model_on_the_others() {
    let redis = RedisServer::start().await;
    let (one, two, three) = (
        Replica::join(&redis.url(), "t1"),
        Replica::join(&redis.url(), "t1"),
        Replica::join(&redis.url(), "t1"),
    );
    connected(&[&one, &two, &three]).await;
    assert_eq!(one.throttle(), Duration::from_secs(10));
    eventually(Duration::from_secs(2), "the others cool A", || {
        two.cooling().is_some() && three.cooling().is_some()
    })
    .await;
    assert!(two.cooling().unwrap() > Duration::from_secs(9));
    assert_eq!(two.status().received, 1);
    assert_eq!(one.status().sent, 1);
    // The sender does not apply its own event a second time.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(one.status().received, 0);
}

#[tokio::test]
async fn four_throttles_on_four_replicas_are_four_throttles() {
    let redis = RedisServer::start().await;
    let replicas: Vec<Replica> = (0..4).map(|_| Replica::join(&redis.url(), "t2")).collect();
    connected(&replicas.iter().collect::<Vec<_>>()).await;
    for (i, replica) in replicas.iter().enumerate() {
        replica.throttle();
        // Each throttle reaches every replica before the next one happens.
        eventually(Duration::from_secs(2), "propagated", || {
            replicas
                .iter()
                .all(|r| r.status().received + r.status().sent > i as u64)
        })
        .await;
    }
    // Default tiers: four throttles in the window mean 60 s, on every replica.
    for replica in &replicas {
        assert!(replica.cooling().unwrap() > Duration::from_secs(55));
    }
}

#[tokio::test]
async fn a_fresh_success_anywhere_reopens_the_model_everywhere_and_a_reset_resets_all() {
    let redis = RedisServer::start().await;
    let (one, two) = (
        Replica::join(&redis.url(), "t3"),
        Replica::join(&redis.url(), "t3"),
    );
    connected(&[&one, &two]).await;
    one.throttle();
    eventually(Duration::from_secs(2), "two cools A", || {
        two.cooling().is_some()
    })
    .await;
    // A success on `two` (which only heard of the throttle) reopens A on `one` too.
    two.succeed();
    assert!(two.cooling().is_none());
    eventually(Duration::from_secs(2), "one reopens A", || {
        one.cooling().is_none()
    })
    .await;

    one.throttle();
    eventually(Duration::from_secs(2), "two cools A again", || {
        two.cooling().is_some()
    })
    .await;
    two.policy.reset_cooldowns();
    eventually(Duration::from_secs(2), "one resets", || {
        one.cooling().is_none()
    })
    .await;
}

#[tokio::test]
async fn a_success_that_started_before_another_replicas_throttle_clears_nothing() {
    let redis = RedisServer::start().await;
    let (one, two) = (
        Replica::join(&redis.url(), "t12"),
        Replica::join(&redis.url(), "t12"),
    );
    connected(&[&one, &two]).await;
    // A slow request starts on A at `one`; meanwhile `two` is throttled on A.
    let slow = one.policy.on_attempt(A, None);
    two.throttle();
    eventually(Duration::from_secs(2), "one cools A", || {
        one.cooling().is_some()
    })
    .await;
    // The slow request now succeeds: it says nothing about A after the throttle.
    one.policy.on_success(&AttemptInfo::new(A, slow, None));
    assert!(one.cooling().is_some(), "the stale success cleared A here");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        two.cooling().is_some(),
        "the stale success cleared A at two"
    );
    assert_eq!(one.status().sent, 0, "nothing was published");
}

#[tokio::test]
async fn a_replica_that_starts_late_catches_up_from_the_keys() {
    let redis = RedisServer::start().await;
    let one = Replica::join(&redis.url(), "t5");
    connected(&[&one]).await;
    one.throttle();
    eventually(Duration::from_secs(2), "published", || {
        one.status().sent == 1
    })
    .await;
    let late = Replica::join(&redis.url(), "t5");
    eventually(Duration::from_secs(5), "the late replica cools A", || {
        late.cooling().is_some()
    })
    .await;
    assert!(late.cooling().unwrap() > Duration::from_secs(8));
}

/// What this test binary logs: one global subscriber writing into a buffer.
fn captured_logs() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Writer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

#[tokio::test]
async fn without_redis_a_replica_runs_on_local_state_and_shares_its_news_when_redis_comes() {
    let logs = captured_logs();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let alone = Replica::join(&url, "t6");
    // Nothing listens: the policy still answers at once, locally.
    let started = std::time::Instant::now();
    assert_eq!(alone.throttle(), Duration::from_secs(10));
    alone.succeed();
    assert!(alone.cooling().is_none());
    alone.throttle();
    assert!(alone.cooling().is_some());
    assert!(started.elapsed() < Duration::from_millis(50));
    // Several reconnection attempts (100, 200, 400, 800 ms apart), one warning.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!alone.status().connected);
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("t6:events"))
        .count();
    assert_eq!(warnings, 1, "{text}");

    // Redis comes up and another replica cools B there: the first one reconnects, catches up with
    // B, and publishes the cooldown of A it set while alone.
    let redis = RedisServer::start_on(port).await;
    let other = Replica::join(&redis.url(), "t6");
    connected(&[&other]).await;
    let ticket = other.policy.on_attempt(1, None);
    other
        .policy
        .on_throttle(&AttemptInfo::new(1, ticket, None), Throttle::NONE);
    eventually(Duration::from_secs(8), "reconnected and caught up", || {
        alone.status().connected && alone.policy.cooldown_remaining(1).is_some()
    })
    .await;
    eventually(Duration::from_secs(1), "the other cools A", || {
        other.cooling().is_some()
    })
    .await;
    assert_eq!(alone.status().dropped, 0);
}

#[tokio::test]
async fn killing_redis_mid_load_fails_no_request_and_the_replicas_converge_when_it_returns() {
    let logs = captured_logs();
    let redis = RedisServer::start().await;
    let port = redis.port;
    let (one, two) = (
        Replica::join(&redis.url(), "t9"),
        Replica::join(&redis.url(), "t9"),
    );
    connected(&[&one, &two]).await;
    let models = ScriptedModels::new();
    let services: Vec<Fallback<ScriptedModels>> = [&one, &two]
        .iter()
        .map(|r| {
            FallbackLayer::builder_shared(r.policy.clone())
                .build()
                .unwrap()
                .layer(models.clone())
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = services
        .into_iter()
        .map(|service| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut sent, mut failed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let answer = service.clone().oneshot(ModelRequest::new(())).await;
                    sent += 1;
                    failed += u64::from(answer.is_err());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (sent, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(redis);
    eventually(Duration::from_secs(3), "both see the outage", || {
        !one.status().connected && !two.status().connected
    })
    .await;
    // While Redis is down, a throttle on one still steers its own requests at once.
    one.throttle();
    let b_before = models.calls("B");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(models.calls("B") > b_before, "one's requests skip A");
    assert!(two.cooling().is_none(), "nothing reaches two without Redis");

    let _redis = RedisServer::start_on(port).await;
    // Reconnection backs off to at most 5 s; then one publishes the cooldown it set meanwhile.
    eventually(
        Duration::from_secs(8),
        "two cools A after Redis returns",
        || one.status().connected && two.status().connected && two.cooling().is_some(),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let (sent, failed) = task.await.unwrap();
        assert!(sent > 100, "{sent} requests");
        assert_eq!(failed, 0, "no request failed because of Redis");
    }
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("t9:events"))
        .count();
    assert_eq!(warnings, 2, "one warning per replica: {text}");
}

/// A 3 s cooldown whose last second is tried again: A reopens 2 s after a throttle.
fn quick_cooldown() -> AdaptiveCooldown {
    AdaptiveCooldown::builder()
        .tiers([Tier::new(1, Duration::from_secs(3))])
        .skip_threshold(Duration::from_secs(1))
        .build(chain())
        .unwrap()
}

fn trying_a(replicas: &[Replica]) -> usize {
    replicas.iter().filter(|r| r.tries_a()).count()
}

/// `count` replicas with probe leases of `lease`.
async fn leasing(
    redis: &RedisServer,
    namespace: &str,
    count: usize,
    lease: Duration,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..count)
        .map(|_| Replica::join_with(&redis.url(), namespace, quick_cooldown()))
        .collect();
    for replica in &replicas {
        replica.policy.set_probe_lease(lease);
    }
    connected(&replicas.iter().collect::<Vec<_>>()).await;
    replicas
}

/// Throttles A on the first replica and waits until A reopens somewhere: the lease holder.
async fn reopening(replicas: &[Replica]) -> &Replica {
    replicas[0].throttle();
    eventually(Duration::from_secs(2), "every replica cools A", || {
        trying_a(replicas) == 0
    })
    .await;
    eventually(Duration::from_secs(3), "A reopens somewhere", || {
        trying_a(replicas) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probing: Vec<&Replica> = replicas.iter().filter(|r| r.tries_a()).collect();
    assert_eq!(probing.len(), 1, "one replica probes a reopening model");
    probing[0]
}

#[tokio::test]
async fn with_probe_leases_one_replica_probes_and_its_answer_reaches_the_others() {
    let redis = RedisServer::start().await;
    let replicas = leasing(&redis, "t7", 3, Duration::from_secs(5)).await;

    // The probe succeeds: the others reopen A at once, before the cooldown's end.
    let holder = reopening(&replicas).await;
    holder.succeed();
    eventually(Duration::from_millis(500), "the others reopen A", || {
        trying_a(&replicas) == 3
    })
    .await;

    // The next probe is throttled: the next cooldown runs everywhere.
    let holder = reopening(&replicas).await;
    holder.throttle();
    eventually(Duration::from_millis(500), "A cools everywhere", || {
        trying_a(&replicas) == 0
    })
    .await;
}

#[tokio::test]
async fn without_an_answer_a_probe_lease_holds_the_others_until_the_lease_or_the_cooldown_ends() {
    let redis = RedisServer::start().await;
    // A lease longer than the cooldown: the others reopen when the cooldown ends.
    let replicas = leasing(&redis, "t8", 2, Duration::from_secs(5)).await;
    reopening(&replicas).await;
    eventually(Duration::from_secs(2), "the cooldown ends", || {
        trying_a(&replicas) == 2
    })
    .await;
    assert!(replicas.iter().all(|r| r.cooling().is_none()));

    // A lease shorter than the rest of the cooldown: the others reopen when it runs out.
    let replicas = leasing(&redis, "t8b", 2, Duration::from_millis(800)).await;
    reopening(&replicas).await;
    eventually(Duration::from_millis(700), "the lease runs out", || {
        trying_a(&replicas) == 2
    })
    .await;
    assert!(
        replicas
            .iter()
            .all(|r| r.policy.inner().cooldown_remaining(A).is_some())
    );
}

#[tokio::test]
async fn without_probe_leases_every_replica_reopens_with_the_cooldown() {
    let redis = RedisServer::start().await;
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::join_with(&redis.url(), "t11", quick_cooldown()))
        .collect();
    connected(&replicas.iter().collect::<Vec<_>>()).await;
    replicas[0].throttle();
    eventually(Duration::from_secs(2), "every replica cools A", || {
        trying_a(&replicas) == 0
    })
    .await;
    eventually(Duration::from_secs(3), "A reopens everywhere", || {
        trying_a(&replicas) == 3
    })
    .await;
}

#[tokio::test]
async fn throttles_and_clears_reach_the_other_replica_within_50_ms_p99() {
    let redis = RedisServer::start().await;
    let (one, two) = (
        Replica::join(&redis.url(), "t10"),
        Replica::join(&redis.url(), "t10"),
    );
    connected(&[&one, &two]).await;
    let mut delays = Vec::new();
    for _ in 0..50 {
        one.throttle();
        let sent = Instant::now();
        eventually(Duration::from_secs(1), "two cools A", || {
            two.cooling().is_some()
        })
        .await;
        delays.push(sent.elapsed());
        // Events carry wall-clock milliseconds: let the clear be a later millisecond.
        tokio::time::sleep(Duration::from_millis(2)).await;
        two.succeed();
        let sent = Instant::now();
        eventually(Duration::from_secs(1), "one reopens A", || {
            one.cooling().is_none()
        })
        .await;
        delays.push(sent.elapsed());
    }
    delays.sort();
    let p99 = delays[delays.len() * 99 / 100 - 1];
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
}

//! Replicas sharing throttle state through a real `redis-server`, which each test starts on a free
//! loopback port and stops when it ends.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tower_model_fallback::ModelChain;
use tower_model_fallback::cluster::redis::RedisCluster;
use tower_model_fallback::cluster::{ClusterStatusSnapshot, Clustered};
use tower_model_fallback::policy::{AdaptiveCooldown, AttemptInfo, CooldownPolicy};

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
    policy: Clustered<AdaptiveCooldown>,
    _cluster: RedisCluster,
}

impl Replica {
    fn join(url: &str, namespace: &str) -> Replica {
        let chain = ModelChain::new(["A", "B"]).unwrap();
        let (policy, link) = Clustered::new(AdaptiveCooldown::new(chain));
        let cluster = RedisCluster::spawn(link, url, namespace).unwrap();
        Replica {
            policy,
            _cluster: cluster,
        }
    }

    fn throttle(&self) -> Duration {
        let ticket = self.policy.on_attempt(A, None);
        self.policy
            .on_throttle(&AttemptInfo::new(A, ticket, None), None)
    }

    fn succeed(&self) {
        let ticket = self.policy.on_attempt(A, None);
        self.policy.on_success(&AttemptInfo::new(A, ticket, None));
    }

    fn cooling(&self) -> Option<Duration> {
        self.policy.cooldown_remaining(A)
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
async fn without_redis_a_replica_runs_on_local_state_and_catches_up_when_it_returns() {
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
    assert!(started.elapsed() < Duration::from_millis(50));
    eventually(Duration::from_secs(2), "the lost event is counted", || {
        alone.status().dropped >= 1
    })
    .await;
    assert!(!alone.status().connected);
    // Several reconnection attempts (100, 200, 400, 800 ms apart), one warning.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("t6:events"))
        .count();
    assert_eq!(warnings, 1, "{text}");

    // Redis comes up and another replica throttles A there: the first one reconnects and catches up.
    let redis = RedisServer::start_on(port).await;
    let other = Replica::join(&redis.url(), "t6");
    connected(&[&other]).await;
    other.throttle();
    eventually(Duration::from_secs(8), "reconnected and caught up", || {
        alone.status().connected && alone.cooling().is_some()
    })
    .await;
}

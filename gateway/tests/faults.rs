//! The gateway under faults and hostile clients, on loopback: upstreams that hang, refuse or fail,
//! clients that idle, stall or send junk, a shutdown with a stuck client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_model_fallback::testing::{FakeBedrock, Step};
use tower_model_fallback_gateway::{ChainConfig, GatewayConfig, ModelConfig};

mod common;

use common::{RedisServer, http, send, start, stats};

const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const SECOND: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
const CONVERSE: &str = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;

/// An upstream that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    url
}

/// An address where nothing listens: connections are refused.
fn refusing() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn entry(id: &str, key: Option<&str>, endpoint_url: Option<&str>) -> ModelConfig {
    ModelConfig {
        id: id.into(),
        key: key.map(Into::into),
        endpoint_url: endpoint_url.map(Into::into),
        ..ModelConfig::default()
    }
}

/// One chain, `claude`, of `models`, with ejection off unless a test turns it on.
fn chain_of(models: Vec<ModelConfig>) -> GatewayConfig {
    let mut config = GatewayConfig {
        chains: vec![ChainConfig {
            alias: Some("claude".into()),
            models,
        }],
        ..GatewayConfig::default()
    };
    config.policy.eject_after_failures = 0;
    config
}

fn converse_url(base: &str) -> String {
    format!("{base}/model/claude/converse")
}

fn header<'a>(reply: &'a common::Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test]
async fn a_black_hole_upstream_falls_back_within_the_attempt_timeout() {
    let hole = black_hole().await;
    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&hole)),
        entry(SECOND, None, None),
    ]);
    config.attempt_timeout_s = 0.5;
    let gw = start(config).await;

    // 200 requests at once, none of them hung: each gives up on the black hole and falls back.
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let url = converse_url(&gw.url);
            tokio::spawn(async move { send("POST", &url, None, CONVERSE).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(header(&reply, "x-fallback-model"), SECOND);
        assert_eq!(header(&reply, "x-fallback-attempts"), "2");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let stats = stats(&gw.url).await;
    assert_eq!(stats["stats"]["models"][0]["failures"], 200);
    gw.stop().await;
}

#[tokio::test]
async fn with_every_model_a_black_hole_the_request_fails_within_its_timeout() {
    let hole = black_hole().await;
    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&hole)),
        entry(SECOND, None, Some(&hole)),
    ]);
    config.attempt_timeout_s = 1.0;
    config.request_timeout_s = 1.5;
    let gw = start(config).await;
    let started = Instant::now();
    let reply = send("POST", &converse_url(&gw.url), None, CONVERSE).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 408, "{}", reply.body);
    assert_eq!(header(&reply, "x-amzn-errortype"), "ModelTimeoutException");
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(3),
        "the request deadline ended it: {elapsed:?}"
    );
    gw.stop().await;
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout_while_healthz_answers() {
    let config = GatewayConfig {
        header_read_timeout_s: 1.0,
        ..GatewayConfig::default()
    };
    let gw = start(config).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    // Both ends of each connection live in this process.
    let count = 3_000.min(open_files_limit().saturating_sub(300) / 2);
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let (status, body, _) = http("GET", &format!("{}/healthz", gw.url), None, "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    // Every idle connection is closed by the gateway, soon after the header timeout.
    let started = Instant::now();
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection stayed open: {read:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _, _) = http("GET", &format!("{}/healthz", gw.url), None, "").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// Sends a request's headers and `sent` bytes of a body declared `declared` bytes long, then stalls;
/// returns the status line's code (or 0 when the connection closed without one).
async fn stalled_body(addr: &str, declared: usize, sent: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /model/claude/converse HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&vec![b' '; sent]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_slow_body_flood_is_bounded_in_memory_and_gets_408s() {
    let config = GatewayConfig {
        body_read_timeout_s: 1.0,
        max_body_bytes: 1024 * 1024,
        max_buffered_body_bytes: 8 * 1024 * 1024,
        ..GatewayConfig::default()
    };
    let gw = start(config).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    // 40 clients each declare 1 MiB and send 900 KiB: 8 fit in the 8 MiB of body memory.
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { stalled_body(&addr, 1024 * 1024, 900 * 1024).await })
        })
        .collect();
    let mut codes = Vec::new();
    for client in clients {
        codes.push(client.await.unwrap());
    }
    let timed_out = codes.iter().filter(|&&c| c == 408).count();
    let shed = codes.iter().filter(|&&c| c == 429).count();
    assert_eq!((timed_out, shed), (8, 32), "{codes:?}");
    // Memory is back: a normal request is served.
    let (status, _, _) = http("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_with_a_stuck_client_ends_within_the_grace() {
    let config = GatewayConfig {
        shutdown_grace_s: 1.0,
        ..GatewayConfig::default()
    };
    let gw = start(config).await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    // A client that sends half its body and then nothing.
    let mut stuck = TcpStream::connect(&addr).await.unwrap();
    stuck
        .write_all(
            b"POST /model/claude/converse HTTP/1.1\r\nhost: g\r\ncontent-length: 100\r\n\r\n{\"mess",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    gw.stop().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn unreachable_models_are_ejected_and_probed_back() {
    // The primary's port refuses connections until the test starts a fake Bedrock on it.
    let primary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let primary_addr = primary.local_addr().unwrap();
    drop(primary);
    let primary_url = format!("http://{primary_addr}");
    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&primary_url)),
        entry(SECOND, None, None),
    ]);
    config.policy.eject_after_failures = 3;
    config.policy.ejection_s = 1.0;
    let gw = start(config).await;
    let url = converse_url(&gw.url);
    for _ in 0..3 {
        let reply = send("POST", &url, None, CONVERSE).await;
        assert_eq!(header(&reply, "x-fallback-attempts"), "2");
    }
    // Ejected: the next requests go straight to the second model.
    let reply = send("POST", &url, None, CONVERSE).await;
    assert_eq!(header(&reply, "x-fallback-model"), SECOND);
    assert_eq!(header(&reply, "x-fallback-attempts"), "1");
    let stats = stats(&gw.url).await;
    assert_eq!(stats["stats"]["models"][0]["status"], "skipped");

    // The primary comes back; after the ejection one probe finds it and everyone returns.
    let listener = TcpListener::bind(primary_addr).await.unwrap();
    let upstream = FakeBedrock::builder().serve(listener).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = send("POST", &url, None, CONVERSE).await;
    assert_eq!(header(&reply, "x-fallback-model"), PRIMARY);
    let reply = send("POST", &url, None, CONVERSE).await;
    assert_eq!(header(&reply, "x-fallback-model"), PRIMARY);
    assert_eq!(upstream.requests(PRIMARY), 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_retry_budget_caps_attempts_when_every_model_fails() {
    let down = refusing();
    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&down)),
        entry(SECOND, None, Some(&down)),
        entry("us.amazon.nova-lite-v1:0", None, Some(&down)),
    ]);
    config.policy.retry_budget_percent = 20.0;
    config.policy.retry_budget_min_per_s = 1;
    let gw = start(config).await;
    let url = converse_url(&gw.url);
    let mut spent = 0;
    for _ in 0..1_000 {
        let reply = send("POST", &url, None, CONVERSE).await;
        assert!(reply.status >= 500, "{}", reply.status);
        if header(&reply, "x-amzn-errortype") == "ServiceUnavailableException" {
            spent += 1;
        }
    }
    let stats = stats(&gw.url).await;
    let attempts: u64 = stats["stats"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["attempts"].as_u64().unwrap())
        .sum();
    let per_request = attempts as f64 / 1_000.0;
    assert!(per_request <= 1.25, "{per_request} attempts per request");
    assert!(spent > 700, "{spent} requests told the budget is spent");
    gw.stop().await;
}

#[tokio::test]
async fn the_same_model_in_a_second_region_serves_when_the_first_throttles() {
    let west = FakeBedrock::start().await.unwrap();
    let west_url = west.endpoint_url();
    let mut east_entry = entry(PRIMARY, Some("sonnet-us-east-1"), None);
    east_entry.region = Some("us-east-1".into());
    let mut west_entry = entry(PRIMARY, Some("sonnet-us-west-2"), Some(&west_url));
    west_entry.region = Some("us-west-2".into());
    let gw = start(chain_of(vec![east_entry, west_entry])).await;
    gw.fake.script(PRIMARY, [Step::throttle()]);
    let reply = send("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(header(&reply, "x-fallback-model"), "sonnet-us-west-2");
    // The second region got the same model id on the wire.
    assert_eq!(west.requests(PRIMARY), 1);
    gw.stop().await;
}

/// Collects what every test of this binary logs, as JSON lines: one global subscriber, because a
/// scoped one can miss events of callsites that other test threads registered first.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

#[tokio::test]
async fn each_request_logs_one_access_line_without_its_prompt() {
    let captured = captured_logs();
    let gw = start(GatewayConfig::default()).await;
    gw.fake.script(PRIMARY, [Step::throttle()]);
    let prompt = r#"{"messages":[{"role":"user","content":[{"text":"my secret prompt"}]}]}"#;
    let reply = send("POST", &converse_url(&gw.url), None, prompt).await;
    assert_eq!(reply.status, 200);
    let missing = send(
        "POST",
        &format!("{}/model/nope/converse", gw.url),
        None,
        prompt,
    )
    .await;
    assert_eq!(missing.status, 404);
    gw.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("my secret prompt"), "{text}");
    let ours = [
        header(&reply, "x-amzn-requestid"),
        header(&missing, "x-amzn-requestid"),
    ];
    let access: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "access")
        .filter(|l| ours.iter().any(|id| l["request_id"] == *id))
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    let served = &access[0];
    assert_eq!(served["chain"], "claude");
    assert_eq!(served["model"], SECOND);
    assert_eq!(served["attempts"], 2);
    assert_eq!(served["status"], 200);
    assert!(served["latency_ms"].is_u64());
    assert_eq!(
        served["request_id"].as_str(),
        Some(header(&reply, "x-amzn-requestid"))
    );
    assert_eq!(access[1]["status"], 404);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_histograms_behind_the_token() {
    let config = GatewayConfig {
        metrics_token: Some("scraper".into()),
        ..GatewayConfig::default()
    };
    let gw = start(config).await;
    let (status, _, _) = http("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(status, 200);
    let metrics = format!("{}/metrics", gw.url);
    let (status, _, kind) = http("GET", &metrics, None, "").await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("AccessDeniedException"))
    );
    let (status, _, _) = http("GET", &format!("{}/model_stats", gw.url), None, "").await;
    assert_eq!(status, 403);

    let (status, text, _) = http("GET", &metrics, Some("scraper"), "").await;
    assert_eq!(status, 200);
    // The exposition grammar: comments, samples `name{labels} value`, and OpenMetrics' end marker.
    assert_eq!(text.lines().last(), Some("# EOF"));
    for line in text.lines() {
        if line.starts_with('#') {
            let kind = line.split_whitespace().nth(1).unwrap_or("");
            assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&kind), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
    }
    for expected in [
        "# TYPE gateway_request_duration_seconds histogram",
        "gateway_request_duration_seconds_bucket{le=\"0.01\",chain=\"claude\",status=\"200\"}",
        "# TYPE gateway_attempt_duration_seconds histogram",
        &format!("gateway_attempt_duration_seconds_count{{model=\"{PRIMARY}\",outcome=\"200\"}} 1"),
        "gateway_responses_total{status=\"200\"} 1",
        "gateway_in_flight_requests 0",
        "model_fallback_attempts_total{chain=\"claude\",model=\"",
        "process_open_fds",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn bad_model_ids_get_short_bedrock_errors() {
    let gw = start(GatewayConfig::default()).await;
    let (status, body, kind) = http(
        "POST",
        &format!("{}/model/%FF/converse", gw.url),
        None,
        CONVERSE,
    )
    .await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("ValidationException")),
        "{body}"
    );

    let long = "m".repeat(8 * 1024);
    let (status, body, kind) = http(
        "POST",
        &format!("{}/model/{long}/converse", gw.url),
        None,
        CONVERSE,
    )
    .await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("ValidationException"))
    );
    assert!(body.len() < 300, "the id is not echoed whole: {body}");

    let unknown = "u".repeat(1000);
    let (status, body, kind) = http(
        "POST",
        &format!("{}/model/{unknown}/converse", gw.url),
        None,
        CONVERSE,
    )
    .await;
    assert_eq!(
        (status, kind.as_deref()),
        (404, Some("ResourceNotFoundException"))
    );
    assert!(body.len() < 300, "{body}");

    let declared_too_large = send(
        "POST",
        &converse_url(&gw.url),
        None,
        &" ".repeat(2 * 1024 * 1024),
    )
    .await;
    assert_eq!(declared_too_large.status, 413);
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_validation_error_does_not_count_against_the_model() {
    let gw = start(GatewayConfig::default()).await;
    gw.fake
        .script(PRIMARY, [Step::error("ValidationException")]);
    let (status, _, kind) = http("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("ValidationException"))
    );
    let (status, _, _) = http("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(status, 200);
    let stats = stats(&gw.url).await;
    let primary = &stats["stats"]["models"][0];
    assert_eq!(primary["request_errors"], 1);
    assert_eq!(primary["failures"], 0);
    assert_eq!(primary["success_rate"], 100.0);
    gw.stop().await;
}

/// Starts `examples/fake_bedrock.rs` (built by `cargo test` with the tests) with `args`, on a free
/// loopback port; the process is killed when the handle drops.
async fn standalone_fake(args: &[&str]) -> (tokio::process::Child, String) {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("fake_bedrock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = tokio::process::Command::new(&examples)
        .arg("--listen")
        .arg(port.to_string())
        .args(args)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", examples.display()));
    for _ in 0..100 {
        if TcpStream::connect(port).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("http://{port}"))
}

#[tokio::test]
async fn two_gateways_share_the_standalone_fakes_quota_and_faults() {
    let quota = format!("--quota={PRIMARY}=4/100000");
    let fault = format!("--fault={SECOND}=error:ServiceUnavailableException");
    let (_fake, upstream) = standalone_fake(&[&quota, &fault]).await;
    let nova = "us.amazon.nova-lite-v1:0";
    let chain = || {
        chain_of(vec![
            entry(PRIMARY, None, Some(&upstream)),
            entry(SECOND, None, Some(&upstream)),
            entry(nova, None, Some(&upstream)),
        ])
    };
    let (one, two) = (start(chain()).await, start(chain()).await);
    // Four requests per minute in all: two through each gateway use the quota up.
    for gw in [&one, &two, &one, &two] {
        let reply = send("POST", &converse_url(&gw.url), None, CONVERSE).await;
        assert_eq!(header(&reply, "x-fallback-model"), PRIMARY);
    }
    // The fifth is throttled, whichever gateway sends it; the second model fails as told.
    let reply = send("POST", &converse_url(&two.url), None, CONVERSE).await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "x-fallback-model"), nova);
    assert_eq!(header(&reply, "x-fallback-attempts"), "3");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn the_standalone_fake_can_be_a_black_hole() {
    let (_fake, hole) = standalone_fake(&["--black-hole"]).await;
    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&hole)),
        entry(SECOND, None, None),
    ]);
    config.attempt_timeout_s = 0.3;
    let gw = start(config).await;
    let reply = send("POST", &converse_url(&gw.url), None, CONVERSE).await;
    assert_eq!(header(&reply, "x-fallback-model"), SECOND);
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_without_content_falls_back_within_the_attempt_timeout() {
    // An upstream that starts a stream (200 and headers) and never sends an event.
    let app = axum::Router::new().route(
        "/model/{model}/converse-stream",
        axum::routing::post(|| async {
            let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
            axum::response::Response::builder()
                .header("content-type", "application/vnd.amazon.eventstream")
                .body(axum::body::Body::from_stream(never))
                .unwrap()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = chain_of(vec![
        entry(PRIMARY, None, Some(&silent)),
        entry(SECOND, None, None),
    ]);
    config.attempt_timeout_s = 0.5;
    let gw = start(config).await;
    let url = format!("{}/model/claude/converse-stream", gw.url);
    let reply = send("POST", &url, None, CONVERSE).await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "x-fallback-model"), SECOND);
    assert_eq!(header(&reply, "x-fallback-attempts"), "2");
    gw.stop().await;
}

#[tokio::test]
async fn replicas_share_throttles_and_resets_through_redis() {
    let redis = RedisServer::start().await;
    let upstream = FakeBedrock::start().await.unwrap();
    let replica = || {
        let mut config = chain_of(vec![
            entry(PRIMARY, None, Some(&upstream.endpoint_url())),
            entry(SECOND, None, Some(&upstream.endpoint_url())),
        ]);
        config.redis_url = Some(redis.url.clone());
        config.redis_namespace = "gateway-test".into();
        config.admin_token = Some("admin".into());
        config
    };
    let (one, two) = (start(replica()).await, start(replica()).await);
    let connected =
        |stats: &Value| stats["stats"]["chains"][0]["shared_state"]["connected"] == true;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(connected(&stats(&one.url).await) && connected(&stats(&two.url).await)) {
        assert!(
            Instant::now() < deadline,
            "the replicas never connected to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The primary throttles a request through `one`; `two` skips it from then on.
    upstream.script(PRIMARY, [Step::throttle()]);
    let reply = send("POST", &converse_url(&one.url), None, CONVERSE).await;
    assert_eq!(header(&reply, "x-fallback-model"), SECOND);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = send("POST", &converse_url(&two.url), None, CONVERSE).await;
        if header(&reply, "x-fallback-attempts") == "1" {
            assert_eq!(header(&reply, "x-fallback-model"), SECOND);
            break;
        }
        assert!(Instant::now() < deadline, "two never heard of the throttle");
    }
    let shared = &stats(&two.url).await["stats"]["chains"][0]["shared_state"];
    assert!(shared["received"].as_u64().unwrap() >= 1, "{shared}");

    // A reset on `two` resets `one` too.
    let (status, _, _) = http(
        "POST",
        &format!("{}/reset_model_cooldowns", two.url),
        Some("admin"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = send("POST", &converse_url(&one.url), None, CONVERSE).await;
        if header(&reply, "x-fallback-model") == PRIMARY {
            break;
        }
        assert!(Instant::now() < deadline, "one never heard of the reset");
    }
    let (_, metrics, _) = http("GET", &format!("{}/metrics", one.url), None, "").await;
    assert!(
        metrics.contains("gateway_shared_state_connected{chain=\"claude\"} 1"),
        "{metrics}"
    );
    one.stop().await;
    two.stop().await;
}

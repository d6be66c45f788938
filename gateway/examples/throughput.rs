//! The gateway's own cost: requests per second, CPU per request and added latency, against the fake
//! Bedrock alone, at several numbers of concurrent clients, all on loopback.
//!
//! ```text
//! cargo build --release -p tower-model-fallback-gateway --examples --bins
//! target/release/examples/throughput                       # 1, 16, 64, 256 clients, 10 s each
//! target/release/examples/throughput --clients 64 --seconds 5
//! ```
//!
//! The fake Bedrock, the gateway and a bare relay (the `relay` example: two sockets and two HTTP/1.1
//! codecs per request, nothing else) run as processes of their own (the binaries built next to this
//! one), so each one's CPU time is read from `/proc` apart: the gateway's CPU per request is its own,
//! not a difference. For each client count, the load runs against the fake directly, then through
//! the gateway (which signs every call with SigV4, as against the real Bedrock), then through the
//! relay; the added latency is the difference of the percentiles. The relay's CPU per request is the
//! floor under any proxy's on the machine.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::BoxError;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"hello"}]}],"inferenceConfig":{"maxTokens":200}}"#;

/// Measures the gateway against the fake Bedrock alone.
#[derive(Parser)]
struct Args {
    /// Concurrent clients; repeatable (default 1, 16, 64 and 256).
    #[arg(long)]
    clients: Vec<usize>,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

/// A child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// User plus system CPU time so far, from `/proc/<pid>/stat`.
    fn cpu(&self) -> Result<Duration, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))?;
        // The command name may hold spaces: the fields start after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .ok_or("unreadable /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
            + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
        // Linux reports CPU time in clock ticks of 1/100 s.
        Ok(Duration::from_millis(ticks * 10))
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Process, BoxError> {
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it first, see the example's docs)",
                program.display()
            )
        })?;
    Ok(Process(child))
}

async fn wait_listening(port: u16) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What one run measured.
struct Run {
    requests: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        let index = ((self.latencies.len().saturating_sub(1)) as f64 * q) as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

/// `clients` clients sending Converse requests to `url` back to back for `seconds`.
async fn load(url: &str, clients: usize, seconds: f64) -> Result<Run, BoxError> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http::<Full<Bytes>>();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            while Instant::now() < until {
                let request = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
                let sent = Instant::now();
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed());
                failed += usize::from(!ok);
            }
            Ok::<_, BoxError>((latencies, failed))
        });
    }
    let mut run = Run {
        requests: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, failed) = done??;
        run.requests += latencies.len();
        run.failed += failed;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort_unstable();
    Ok(run)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let clients = if args.clients.is_empty() {
        vec![1, 16, 64, 256]
    } else {
        args.clients.clone()
    };
    let here: PathBuf = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .to_path_buf();
    let fake_port = free_port()?;
    let fake = spawn(
        &here.join("fake_bedrock"),
        &["--listen", &format!("127.0.0.1:{fake_port}")],
        &[],
    )?;
    wait_listening(fake_port).await?;
    let gateway_port = free_port()?;
    let fake_url = format!("http://127.0.0.1:{fake_port}");
    let gateway = spawn(
        &here.join("../tower-model-fallback-gateway"),
        &[
            "--upstream",
            "bedrock",
            "--endpoint-url",
            &fake_url,
            "--listen",
            &format!("127.0.0.1:{gateway_port}"),
            "--max-in-flight",
            "100000",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_REGION", "us-east-1"),
        ],
    )?;
    wait_listening(gateway_port).await?;
    let relay_port = free_port()?;
    let relay = spawn(
        &here.join("relay"),
        &[
            "--listen",
            &format!("127.0.0.1:{relay_port}"),
            "--upstream",
            &fake_url,
        ],
        &[],
    )?;
    wait_listening(relay_port).await?;
    let direct = format!("{fake_url}/model/{MODEL}/converse");
    let through = format!("http://127.0.0.1:{gateway_port}/model/claude/converse");
    let relayed = format!("http://127.0.0.1:{relay_port}/model/{MODEL}/converse");
    // Warm them up: connections, upstream pools, lazily built state.
    load(&through, 16, 1.0).await?;
    load(&relayed, 16, 1.0).await?;

    println!(
        "| clients | fake alone: req/s | p50 | p99 | fake CPU/req | through the gateway: req/s | p50 | p99 | gateway CPU/req | fake CPU/req | p99 added | through a bare relay: req/s | relay CPU/req | p99 added | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &clients {
        let fake_before = fake.cpu()?;
        let alone = load(&direct, n, args.seconds).await?;
        let fake_alone_cpu = fake.cpu()? - fake_before;

        let (fake_before, gateway_before) = (fake.cpu()?, gateway.cpu()?);
        let proxied = load(&through, n, args.seconds).await?;
        let fake_cpu = fake.cpu()? - fake_before;
        let gateway_cpu = gateway.cpu()? - gateway_before;

        let relay_before = relay.cpu()?;
        let bare = load(&relayed, n, args.seconds).await?;
        let relay_cpu = relay.cpu()? - relay_before;

        let per = |cpu: Duration, run: &Run| micros(cpu) / run.requests.max(1) as f64;
        println!(
            "| {n} | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.1} µs | {:.0} µs | {:.0} | {:.1} µs | {:.0} µs | {} |",
            alone.rate(),
            micros(alone.percentile(0.5)),
            micros(alone.percentile(0.99)),
            per(fake_alone_cpu, &alone),
            proxied.rate(),
            micros(proxied.percentile(0.5)),
            micros(proxied.percentile(0.99)),
            per(gateway_cpu, &proxied),
            per(fake_cpu, &proxied),
            micros(
                proxied
                    .percentile(0.99)
                    .saturating_sub(alone.percentile(0.99))
            ),
            bare.rate(),
            per(relay_cpu, &bare),
            micros(bare.percentile(0.99).saturating_sub(alone.percentile(0.99))),
            alone.failed + proxied.failed + bare.failed,
        );
    }
    Ok(())
}

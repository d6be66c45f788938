//! Hostile clients against a running gateway: idle connections, or bodies sent part-way and stalled.
//! Prints what each client got and the gateway's resident memory (from its `/metrics`) before,
//! during and after.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-gateway &
//! cargo run --release -p tower-model-fallback-gateway --example hostile -- --url http://127.0.0.1:8080 --slow-bodies 300
//! cargo run --release -p tower-model-fallback-gateway --example hostile -- --url http://127.0.0.1:8080 --idle 3000
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::BoxError;

/// Hostile clients against a running gateway.
#[derive(Parser)]
struct Args {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Clients that each declare `--declared` body bytes, send `--sent` and stall.
    #[arg(long, default_value_t = 0)]
    slow_bodies: usize,
    /// Body length each slow client declares.
    #[arg(long, default_value_t = 1_000_000)]
    declared: usize,
    /// Body bytes each slow client sends before it stalls.
    #[arg(long, default_value_t = 983_000)]
    sent: usize,
    /// Connections that send nothing at all.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Token for the gateway's `/metrics`, if it needs one.
    #[arg(long, env = "GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

/// One GET over a fresh connection; the body, or `None` when there is no answer within 5 s.
async fn get(addr: &str, path: &str, token: Option<&str>) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: gateway\r\n{auth}connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
}

/// The gateway's resident memory in MiB, from `process_resident_memory_bytes`.
async fn resident_mib(addr: &str, token: Option<&str>) -> Option<f64> {
    let text = get(addr, "/metrics", token).await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))?;
    let bytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(bytes / (1024.0 * 1024.0))
}

/// Declares `declared` bytes, sends `sent`, stalls; returns the answer's status (0: none).
async fn slow_body(addr: String, declared: usize, sent: usize) -> u16 {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return 0;
    };
    let head = format!(
        "POST /model/claude/converse HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let _ = stream.write_all(&vec![b' '; sent]).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), read).await;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let addr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let token = args.metrics_token.as_deref();
    let mib = |m: Option<f64>| m.map_or("?".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "gateway resident memory before: {}",
        mib(resident_mib(&addr, token).await)
    );
    let started = Instant::now();

    if args.idle > 0 {
        let mut idle = Vec::with_capacity(args.idle);
        for _ in 0..args.idle {
            idle.push(TcpStream::connect(&addr).await?);
        }
        let healthz = get(&addr, "/healthz", None).await;
        println!(
            "{} idle connections open; /healthz {}",
            idle.len(),
            if healthz.is_some_and(|a| a.ends_with("ok")) {
                "answers"
            } else {
                "does not answer"
            }
        );
        let mut closed = 0;
        for stream in &mut idle {
            let mut byte = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte)).await
            {
                closed += 1;
            }
        }
        println!(
            "{closed} of {} closed by the gateway within {:.1?}",
            idle.len(),
            started.elapsed()
        );
    }

    if args.slow_bodies > 0 {
        let clients: Vec<_> = (0..args.slow_bodies)
            .map(|_| tokio::spawn(slow_body(addr.clone(), args.declared, args.sent)))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "{} slow-body clients stalled; gateway resident memory: {}",
            args.slow_bodies,
            mib(resident_mib(&addr, token).await)
        );
        let mut statuses = BTreeMap::<u16, usize>::new();
        for client in clients {
            *statuses.entry(client.await?).or_default() += 1;
        }
        println!(
            "answers after {:.1?} (status: clients): {statuses:?}",
            started.elapsed()
        );
    }
    println!(
        "gateway resident memory after: {}",
        mib(resident_mib(&addr, token).await)
    );
    Ok(())
}

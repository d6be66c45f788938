//! What the gateway tests share: a gateway on loopback and a plain HTTP client.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_model_fallback::testing::FakeBedrock;
use tower_model_fallback_gateway::{Gateway, GatewayConfig};

pub struct Running {
    pub url: String,
    pub fake: FakeBedrock,
    pub stop: Option<oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.await.unwrap().unwrap();
    }
}

pub async fn start(config: GatewayConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gateway = Gateway::new(config).await.unwrap();
    let fake = gateway.fake().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        url,
        fake,
        stop: Some(stop),
        served,
    }
}

/// A response as a plain client sees it.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends one request; `token` goes in a bearer `Authorization` header.
pub async fn send(method: &str, url: &str, token: Option<&str>, body: &str) -> Reply {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Status, body and `x-amzn-errortype` of one request.
pub async fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, Option<String>) {
    let reply = send(method, url, token, body).await;
    let kind = reply
        .headers
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string());
    (reply.status, reply.body, kind)
}

pub async fn stats(url: &str) -> Value {
    let (status, body, _) = http("GET", &format!("{url}/model_stats"), None, "").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// A `redis-server` of the test's own on a free loopback port, killed when dropped.
pub struct RedisServer {
    _process: tokio::process::Child,
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (.ci/run installs Debian's package)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        RedisServer {
            _process: process,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

//! The hyper example, served on loopback and called by a real HTTP client.

#[allow(dead_code)]
#[path = "../examples/hyper_server.rs"]
mod hyper_server;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_model_fallback::testing::{FakeBedrock, Step};

#[tokio::test]
async fn hyper_server_falls_back_when_the_primary_throttles() {
    let fake = FakeBedrock::builder()
        .script("primary-model", [Step::throttle()])
        .start()
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/generate", listener.local_addr().unwrap());
    tokio::spawn(hyper_server::serve(
        listener,
        hyper_server::models(&fake).unwrap(),
    ));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut served_by = Vec::new();
    for _ in 0..2 {
        let request = hyper::Request::post(&url)
            .body(Full::new(Bytes::from("hello")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let model = response.headers()["x-fallback-model"]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("Hello from {model}\n"));
        served_by.push(model);
    }
    // The first call was throttled on the primary and answered by the fallback; the primary is now
    // cooling, so the second call starts at the fallback.
    assert_eq!(served_by, ["fallback-model", "fallback-model"]);
    assert_eq!(fake.requests("primary-model"), 1);
}

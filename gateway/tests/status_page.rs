//! The status page at `/`, rendered by a real headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`): it shows each chain's models, a cooldown after a throttle, and the cooldown ending.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_model_fallback::testing::Step;
use tower_model_fallback_gateway::{Gateway, GatewayConfig};

const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// The page's DOM after its scripts ran, as Chromium serialises it.
fn rendered(url: &str) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium is installed (.ci/run installs Debian's chromium)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `data-status` of `model`'s row.
fn status_of(dom: &str, model: &str) -> Option<String> {
    let row = dom.find(&format!("data-model=\"{model}\""))?;
    let rest = &dom[row..];
    let start = rest.find("data-status=\"")? + "data-status=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_cooldown_and_its_end() {
    // A short cooldown so that the page can be seen both cooling and recovered.
    let config =
        GatewayConfig::from_toml("[policy]\ntiers = [[1, 3.0]]\nskip_threshold_s = 1.0\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gateway = Gateway::new(config).await.unwrap();
    let fake = gateway.fake().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));

    let page = url.clone();
    let dom = tokio::task::spawn_blocking(move || rendered(&page))
        .await
        .unwrap();
    assert!(dom.contains("Chain claude"), "{dom}");
    assert!(
        dom.contains("Claude Sonnet 4") && dom.contains("Amazon Nova Lite"),
        "{dom}"
    );
    assert_eq!(status_of(&dom, PRIMARY).as_deref(), Some("available"));

    // One throttle on the primary: the request is served by the next model and the primary cools.
    fake.script(PRIMARY, [Step::throttle()]);
    let client = reqwest_like::post(&format!("{url}/model/claude/converse")).await;
    assert_eq!(client, 200);
    let page = url.clone();
    let dom = tokio::task::spawn_blocking(move || rendered(&page))
        .await
        .unwrap();
    assert_eq!(
        status_of(&dom, PRIMARY).as_deref(),
        Some("skipped"),
        "{dom}"
    );
    assert!(dom.contains(" s</td>"), "a countdown is shown: {dom}");

    // The cooldown ends (3 s) and the page says so.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = url.clone();
        let dom = tokio::task::spawn_blocking(move || rendered(&page))
            .await
            .unwrap();
        if status_of(&dom, PRIMARY).as_deref() == Some("available") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cooldown never ended on the page: {dom}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// A bare HTTP/1 POST of a one-turn Converse body; returns the status.
mod reqwest_like {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub(super) async fn post(url: &str) -> u16 {
        let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        client.request(request).await.unwrap().status().as_u16()
    }
}

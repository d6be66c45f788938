//! The gateway in-process on loopback, driven by the real `aws-sdk-bedrockruntime` client.

use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents, Token};
use aws_sdk_bedrockruntime::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ConverseStreamOutput, Message};
use aws_smithy_runtime_api::client::auth::AuthSchemeId;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde_json::Value;
use tower_model_fallback::bedrock::{converse_text, endpoint_config, user_message};
use tower_model_fallback::classify::QuotaLimit;
use tower_model_fallback::testing::{Gate, Step, throttled};
use tower_model_fallback_gateway::{Gateway, GatewayConfig};

mod common;

use common::{Running, http, start, stats};

const PRIMARY: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const SECOND: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

fn config() -> GatewayConfig {
    GatewayConfig {
        admin_token: Some("admin-secret".into()),
        ..GatewayConfig::default()
    }
}

/// Records the gateway's `x-fallback-*` headers of the last response.
#[derive(Clone, Debug, Default)]
struct FallbackHeaders(Arc<Mutex<Option<(String, String)>>>);

impl Intercept for FallbackHeaders {
    fn name(&self) -> &'static str {
        "FallbackHeaders"
    }
    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.response().headers();
        let get = |name| headers.get(name).unwrap_or_default().to_string();
        *self.0.lock().unwrap() = Some((get("x-fallback-model"), get("x-fallback-attempts")));
        Ok(())
    }
}

impl FallbackHeaders {
    fn last(&self) -> (String, String) {
        self.0.lock().unwrap().clone().unwrap_or_default()
    }
}

fn sdk(url: &str, headers: &FallbackHeaders, api_key: Option<&str>) -> Client {
    let mut config = endpoint_config(url).interceptor(headers.clone());
    if let Some(key) = api_key {
        config = config
            .bearer_token(Token::new(key, None))
            .auth_scheme_preference([AuthSchemeId::new("httpBearerAuth")]);
    }
    Client::from_conf(config.build())
}

fn message(text: &str) -> Message {
    user_message(text).unwrap()
}

/// One Converse call through the gateway, naming `chain`.
async fn converse(
    client: &Client,
    chain: &str,
    text: &str,
) -> Result<ConverseOutput, SdkError<ConverseError, HttpResponse>> {
    client
        .converse()
        .model_id(chain)
        .messages(message(text))
        .send()
        .await
}

/// Converse through the gateway; the answer's text.
async fn ask(client: &Client, chain: &str) -> String {
    converse_text(&converse(client, chain, "hi").await.unwrap())
}

#[tokio::test]
async fn converse_and_converse_stream_are_answered_with_fallback_headers() {
    let gw = start(config()).await;
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);

    let text = ask(&client, "claude").await;
    assert_eq!(text, format!("Hello from {PRIMARY}"));
    assert_eq!(headers.last(), (PRIMARY.to_string(), "1".to_string()));

    // The chain can also be named by its primary model id.
    let out = client
        .converse_stream()
        .model_id(PRIMARY)
        .messages(message("hi"))
        .send()
        .await
        .unwrap();
    let mut stream = out.stream;
    let mut streamed = String::new();
    while let Some(event) = stream.recv().await.unwrap() {
        if let ConverseStreamOutput::ContentBlockDelta(delta) = event
            && let Some(ContentBlockDelta::Text(t)) = delta.delta()
        {
            streamed.push_str(t);
        }
    }
    assert_eq!(streamed, format!("Hello from {PRIMARY}"));
    gw.stop().await;
}

#[tokio::test]
async fn a_throttled_primary_is_served_by_the_next_model_and_stats_show_it() {
    let gw = start(config()).await;
    gw.fake.script(PRIMARY, [Step::throttle()]);
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);

    let text = ask(&client, "claude").await;
    assert_eq!(text, format!("Hello from {SECOND}"));
    assert_eq!(headers.last(), (SECOND.to_string(), "2".to_string()));

    // A throttle inside a stream, before content, falls back too.
    gw.fake.script(SECOND, [Step::throttle_in_stream()]);
    let out = client
        .converse_stream()
        .model_id("claude")
        .messages(message("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        headers.last().0,
        "us.amazon.nova-lite-v1:0",
        "primary cooling, second throttled in stream"
    );
    drop(out);

    let s = stats(&gw.url).await;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["stats"]["total_models"], 3);
    let primary = &s["stats"]["models"][0];
    assert_eq!(primary["id"], PRIMARY);
    assert_eq!(primary["name"], "Claude Sonnet 4");
    assert_eq!(primary["status"], "skipped");
    assert_eq!(primary["throttles"], 1);
    assert_eq!(primary["success_rate"], 0.0);
    assert!(primary["cooldown_remaining_s"].as_f64().unwrap() > 9.0);
    assert!(primary["reopens_in_s"].as_f64().unwrap() > 7.0);
    assert_eq!(s["stats"]["served_by_fallback"], 2);
    assert_eq!(s["stats"]["primary_usage_percent"], 0.0);

    // Resetting needs the admin token.
    let reset = format!("{}/reset_model_cooldowns", gw.url);
    let (status, _, kind) = http("POST", &reset, None, "").await;
    assert_eq!(
        (status, kind.as_deref()),
        (403, Some("AccessDeniedException"))
    );
    let (status, _, _) = http("POST", &reset, Some("wrong"), "").await;
    assert_eq!(status, 403);
    assert_eq!(
        stats(&gw.url).await["stats"]["models"][0]["status"],
        "skipped"
    );
    let (status, _, _) = http("POST", &reset, Some("admin-secret"), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats(&gw.url).await["stats"]["models"][0]["status"],
        "available"
    );

    ask(&client, "claude").await;
    assert_eq!(
        headers.last().0,
        PRIMARY,
        "back on the primary after the reset"
    );

    let (status, metrics, _) = http("GET", &format!("{}/metrics", gw.url), None, "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "model_fallback_throttles_total{{chain=\"claude\",model=\"{PRIMARY}\"}} 1"
        )),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_stats_say_which_quota_a_throttle_ran_out_of() {
    let gw = start(config()).await;
    gw.fake
        .script(PRIMARY, [Step::fail(throttled(QuotaLimit::Tokens))]);
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);
    assert_eq!(ask(&client, "claude").await, format!("Hello from {SECOND}"));
    let primary = &stats(&gw.url).await["stats"]["models"][0];
    assert_eq!(
        (&primary["throttles"], &primary["token_throttles"]),
        (&1.into(), &1.into())
    );
    let (_, metrics, _) = http("GET", &format!("{}/metrics", gw.url), None, "").await;
    assert!(
        metrics.contains(&format!(
            "model_fallback_token_throttles_total{{chain=\"claude\",model=\"{PRIMARY}\"}} 1"
        )),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_second_pass_answers_when_every_model_throttled_once() {
    let mut config = config();
    config.policy.passes = 2;
    config.policy.pass_backoff_s = 0.05;
    let gw = start(config).await;
    let chain = [PRIMARY, SECOND, "us.amazon.nova-lite-v1:0"];
    for model in chain {
        gw.fake.script(model, [Step::throttle()]);
    }
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);
    // Every model cooling, the second pass starts with the one throttled first.
    let text = ask(&client, "claude").await;
    assert_eq!(text, format!("Hello from {PRIMARY}"));
    assert_eq!(headers.last(), (PRIMARY.to_string(), "4".to_string()));
    let calls: Vec<u64> = chain.iter().map(|m| gw.fake.requests(m)).collect();
    assert_eq!(calls, [2, 1, 1]);
    assert_eq!(stats(&gw.url).await["stats"]["later_passes"], 1);
    let (_, metrics, _) = http("GET", &format!("{}/metrics", gw.url), None, "").await;
    assert!(
        metrics.contains("model_fallback_later_passes_total{chain=\"claude\"} 1"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_gets_bedrock_errors_the_sdk_understands_and_the_gateway_keeps_serving() {
    let gw = start(GatewayConfig {
        api_key: Some("user-key".into()),
        max_body_bytes: 4096,
        ..config()
    })
    .await;
    let headers = FallbackHeaders::default();

    // No key (SigV4 only) and a wrong key: AccessDeniedException.
    let err = converse(&sdk(&gw.url, &headers, None), "claude", "hi")
        .await
        .unwrap_err();
    assert!(
        err.as_service_error().unwrap().is_access_denied_exception(),
        "{err:?}"
    );
    let err = converse(&sdk(&gw.url, &headers, Some("nope")), "claude", "hi")
        .await
        .unwrap_err();
    assert!(err.as_service_error().unwrap().is_access_denied_exception());

    let client = sdk(&gw.url, &headers, Some("user-key"));
    // Unknown model: ResourceNotFoundException.
    let err = converse(&client, "no-such-model", "hi").await.unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
    // Oversized body: ValidationException.
    let err = converse(&client, "claude", &"x".repeat(10_000))
        .await
        .unwrap_err();
    let service = err.as_service_error().unwrap();
    assert!(service.is_validation_exception());
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 413);
    assert!(service.message().unwrap().contains("4096"));
    // Malformed JSON (no SDK sends it; a raw client does): ValidationException.
    let (status, body, kind) = http(
        "POST",
        &format!("{}/model/claude/converse", gw.url),
        Some("user-key"),
        "{not json",
    )
    .await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("ValidationException"))
    );
    assert!(body.contains("Malformed input request"));

    // Still serving.
    ask(&client, "claude").await;
    assert_eq!(headers.last().0, PRIMARY);
    assert_eq!(
        gw.fake.requests(PRIMARY),
        1,
        "no bad request reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let gw = start(config()).await;
    let gate = Gate::new();
    gw.fake.script(PRIMARY, [Step::ok().held_by(&gate)]);
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);
    let in_flight = tokio::spawn(async move { converse(&client, "claude", "hi").await });
    gate.arrived().await;

    let Running {
        stop, served, url, ..
    } = gw;
    stop.unwrap().send(()).unwrap();
    tokio::task::yield_now().await;
    assert!(
        !served.is_finished(),
        "the server waits for the request in flight"
    );
    gate.open();
    let out = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert!(out.output().is_some());
    served.await.unwrap().unwrap();

    // New connections are refused once it stopped.
    let refused = converse(&sdk(&url, &headers, None), "claude", "hi").await;
    assert!(refused.is_err());
}

#[test]
fn the_example_config_file_is_the_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let config = GatewayConfig::from_file(&path).unwrap();
    assert!(config == GatewayConfig::default());
}

#[tokio::test]
async fn invalid_configs_are_rejected_before_start() {
    let shrinking = GatewayConfig::from_toml("[policy]\ntiers = [[1, 30.0], [2, 10.0]]").unwrap();
    let err = Gateway::new(shrinking).await.unwrap_err().to_string();
    assert!(err.contains("non-shrinking cooldowns"), "{err}");
    let err = GatewayConfig::from_toml("lisen = \"127.0.0.1:1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
    let duplicate =
        GatewayConfig::from_toml("[[chains]]\nmodels = [{ id = \"a\" }, { id = \"a\" }]").unwrap();
    let err = Gateway::new(duplicate).await.unwrap_err().to_string();
    assert!(err.contains("model a appears twice"), "{err}");
    let mode = GatewayConfig::from_toml("[policy]\nwhen_all_cooling = \"sometimes\"").unwrap();
    assert!(
        Gateway::new(mode)
            .await
            .unwrap_err()
            .to_string()
            .contains("when_all_cooling")
    );
    let kind = GatewayConfig::from_toml("[policy]\nkind = \"magic\"").unwrap();
    let err = Gateway::new(kind).await.unwrap_err().to_string();
    assert!(
        err.contains("policy kind must be fixed, adaptive, probing or paced"),
        "{err}"
    );
    let margin = GatewayConfig::from_toml("[policy]\nkind = \"paced\"\npace_margin = 1.5").unwrap();
    let err = Gateway::new(margin).await.unwrap_err().to_string();
    assert!(err.contains("pacing margin"), "{err}");
    let paced = GatewayConfig::from_toml("[policy]\nkind = \"paced\"").unwrap();
    assert!(Gateway::new(paced).await.is_ok());
    // Regions become host names and endpoints URLs: both are checked.
    for (toml, expected) in [
        (
            "region = \"us-east-1.evil.example\"",
            "not an AWS region name",
        ),
        ("region = \"US-EAST-1\"", "not an AWS region name"),
        (
            "endpoint_url = \"ftp://proxy\"",
            "must be an http:// or https:// URL",
        ),
        (
            "[[chains]]\nmodels = [{ id = \"a\", region = \"mars\" }]",
            "not an AWS region name",
        ),
        (
            "attempt_timeout_s = 0",
            "attempt_timeout_s must be above zero",
        ),
        ("max_in_flight = 0", "must be above zero"),
        (
            "[policy]\nretry_budget_percent = -5",
            "retry_budget_percent",
        ),
        ("[policy]\nejection_s = 0", "outlier ejection"),
        ("[policy]\npasses = 0", "passes must be at least 1"),
        ("[policy]\npass_backoff_s = -1", "pass_backoff_s"),
        ("[policy]\npass_backoff_s = 7200", "at most an hour"),
        ("redis_url = \"not a url\"", "redis_url"),
        (
            "redis_url = \"redis://127.0.0.1:1\"\n[policy]\nkind = \"probing\"",
            "policy kind probing cannot be shared",
        ),
        (
            "[[chains]]\nmodels = [{ id = \"a\", endpoint_url = \"http://one\" }]\n\
             [[chains]]\nmodels = [{ id = \"b\" }, { id = \"a\", endpoint_url = \"http://two\" }]",
            "names two different targets",
        ),
    ] {
        let config = GatewayConfig::from_toml(toml).unwrap();
        let err = Gateway::new(config).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{toml}: {err}");
    }
}

#[tokio::test]
async fn invoke_model_and_its_stream_pass_through_with_fallback() {
    use aws_sdk_bedrockruntime::primitives::Blob;
    use aws_sdk_bedrockruntime::types::ResponseStream;

    let gw = start(config()).await;
    gw.fake.script(
        PRIMARY,
        [
            Step::error("ServiceUnavailableException"),
            Step::throttle_in_stream(),
        ],
    );
    let headers = FallbackHeaders::default();
    let client = sdk(&gw.url, &headers, None);

    let out = client
        .invoke_model()
        .model_id("claude")
        .content_type("application/json")
        .body(Blob::new(r#"{"prompt":"hi"}"#))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(out.body().as_ref()).unwrap();
    assert_eq!(body["outputText"], format!("Hello from {SECOND}"));
    assert_eq!(out.content_type(), "application/json");
    assert_eq!(headers.last(), (SECOND.to_string(), "2".to_string()));

    // The primary is not cooling (a 503 is no throttle): its stream throttles before any chunk.
    let out = client
        .invoke_model_with_response_stream()
        .model_id("claude")
        .body(Blob::new("{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(headers.last().0, SECOND);
    let mut stream = out.body;
    let mut chunks = Vec::new();
    while let Some(event) = stream.recv().await.unwrap() {
        if let ResponseStream::Chunk(part) = event {
            let json: Value = serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
            chunks.push(json["outputText"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(chunks, [format!("Hello from {SECOND}")]);
    gw.stop().await;
}

// The status page at `/`, rendered by a real headless Chromium (Debian's `chromium`, installed by
// `.ci/run`): it shows each chain's models, a cooldown after a throttle, and the cooldown ending.

/// The page's DOM after its scripts ran, as Chromium serialises it.
fn rendered(url: &str) -> String {
    let output = std::process::Command::new("chromium")
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
    let gw = start(config).await;
    let url = gw.url.clone();

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
    assert!(
        dom.contains("Primary share over the last 10 minutes: no traffic"),
        "{dom}"
    );

    // One throttle on the primary, out of tokens: the request is served by the next model and the
    // primary cools.
    gw.fake
        .script(PRIMARY, [Step::fail(throttled(QuotaLimit::Tokens))]);
    let converse = format!("{url}/model/claude/converse");
    let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let (status, _, _) = http("POST", &converse, None, body).await;
    assert_eq!(status, 200);
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
    assert!(dom.contains(">1 (1 on tokens)</td>"), "{dom}");
    // The server's history, not the page's: the one request was served by a fallback.
    assert!(
        dom.contains("Primary share over the last 10 minutes: 0 %"),
        "{dom}"
    );

    // The cooldown ends (3 s) and the page says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let page = url.clone();
        let dom = tokio::task::spawn_blocking(move || rendered(&page))
            .await
            .unwrap();
        if status_of(&dom, PRIMARY).as_deref() == Some("available") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cooldown never ended on the page: {dom}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    gw.stop().await;
}

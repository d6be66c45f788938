//! The real `aws-sdk-bedrockruntime` client against the loopback fake Bedrock: nothing mocked between
//! the SDK and the bytes.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::operation::converse::builders::ConverseInputBuilder;
use aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamInputBuilder;
use aws_sdk_bedrockruntime::operation::invoke_model::builders::InvokeModelInputBuilder;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::builders::InvokeModelWithResponseStreamInputBuilder;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ConverseStreamOutput, Message, ResponseStream,
};
use aws_sdk_bedrockruntime::{Client, error::SdkError};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_model_fallback::bedrock::{
    ConverseService, ConverseStreamService, EventStream, InvokeModelService,
    InvokeModelStreamService, converse_text, endpoint_config, user_message,
};
use tower_model_fallback::classify::{
    Classify, DefaultClassifier, ErrorClass, QuotaLimit, Throttle,
};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{FakeBedrock, Quota, Step};
use tower_model_fallback::wire::Operation;
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest, Served};

fn message(text: &str) -> Message {
    user_message(text).unwrap()
}

fn converse_input(text: &str) -> Arc<ConverseInputBuilder> {
    Arc::new(ConverseInputBuilder::default().messages(message(text)))
}

/// One Converse call through `layer` over the real SDK client pointed at `fake`.
async fn converse_through(layer: &FallbackLayer, fake: &FakeBedrock) -> Served<ConverseOutput> {
    let svc = layer.layer(ConverseService::new(fake.client()));
    svc.oneshot(ModelRequest::new(converse_input("hi")))
        .await
        .unwrap()
}

fn layer() -> FallbackLayer {
    FallbackLayer::new(AdaptiveCooldown::new(
        ModelChain::new(["A", "B", "C"]).unwrap(),
    ))
}

fn classify(err: BoxError) -> ErrorClass {
    DefaultClassifier::new().classify(&*err)
}

const CODES: &[(&str, ErrorClass)] = &[
    // The fake says which quota ran out, as Bedrock does; the SDK hands the message on.
    (
        "ThrottlingException",
        ErrorClass::Throttled(Throttle::NONE.with_limit(QuotaLimit::Requests)),
    ),
    ("ModelNotReadyException", ErrorClass::THROTTLED),
    ("ServiceQuotaExceededException", ErrorClass::THROTTLED),
    ("ServiceUnavailableException", ErrorClass::Transient),
    ("InternalServerException", ErrorClass::Transient),
    ("ModelTimeoutException", ErrorClass::Transient),
    ("ModelErrorException", ErrorClass::ModelRejected),
    ("AccessDeniedException", ErrorClass::ModelRejected),
    ("ResourceNotFoundException", ErrorClass::ModelRejected),
    ("ValidationException", ErrorClass::Fatal),
];

#[tokio::test]
async fn every_bedrock_error_code_is_classified_through_the_real_sdk_parser() {
    let mut fake = FakeBedrock::builder();
    for (code, _) in CODES {
        fake = fake.script(code, [Step::error(code), Step::error(code)]);
    }
    let fake = fake.start().await.unwrap();
    let client = fake.client();
    for &(code, class) in CODES {
        let converse = client
            .converse()
            .model_id(code)
            .messages(message("hi"))
            .send()
            .await;
        let err = converse.unwrap_err();
        assert_eq!(
            aws_sdk_bedrockruntime::error::ProvideErrorMetadata::code(&err),
            Some(code)
        );
        if code == "ServiceQuotaExceededException" {
            assert!(
                err.as_service_error()
                    .is_some_and(|e| e.meta().code() == Some(code))
            );
        }
        assert_eq!(classify(err.into()), class, "Converse {code}");

        let invoke = client
            .invoke_model()
            .model_id(code)
            .body(Blob::new("{}"))
            .send()
            .await;
        assert_eq!(
            classify(invoke.unwrap_err().into()),
            class,
            "InvokeModel {code}"
        );
    }
}

#[tokio::test]
async fn a_throttled_primary_is_answered_by_the_next_model_in_one_call() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle()])
        .start()
        .await
        .unwrap();
    let layer = layer();
    let served = converse_through(&layer, &fake).await;
    assert_eq!(served.model(), "B");
    assert_eq!(converse_text(served.response()), "Hello from B");
    assert!(served.failed_attempts()[0].class().is_throttled());
    assert_eq!(
        served.failed_attempts()[0].cooldown(),
        Some(Duration::from_secs(10))
    );
    assert!(
        layer
            .policy()
            .cooldown_remaining(0)
            .is_some_and(|d| d > Duration::from_secs(9))
    );
    assert_eq!(
        fake.requests("A"),
        1,
        "with SDK retries off, one request reached A"
    );
    assert_eq!(fake.requests("B"), 1);
    assert_eq!(fake.requests("C"), 0);
}

#[tokio::test]
async fn sdk_default_retries_triple_the_load_on_a_throttled_model() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle(), Step::throttle(), Step::throttle()])
        .start()
        .await
        .unwrap();
    // The SDK's standard retry mode (3 attempts), with its backoff shortened so the test is quick.
    let config = endpoint_config(fake.endpoint_url())
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1)))
        .build();
    let svc = layer().layer(ConverseService::new(Client::from_conf(config)));
    let served = svc
        .oneshot(ModelRequest::new(converse_input("hi")))
        .await
        .unwrap();
    assert_eq!(served.model(), "B");
    assert_eq!(
        fake.requests("A"),
        3,
        "the SDK retried the throttle twice before the layer saw it"
    );
}

#[tokio::test]
async fn invoke_model_falls_back_too() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::error("ServiceUnavailableException")])
        .start()
        .await
        .unwrap();
    let svc = layer().layer(InvokeModelService::new(fake.client()));
    let input = InvokeModelInputBuilder::default().body(Blob::new(r#"{"prompt":"hi"}"#));
    let served = svc
        .oneshot(ModelRequest::new(Arc::new(input)))
        .await
        .unwrap();
    assert_eq!(served.model(), "B");
    let body: serde_json::Value =
        serde_json::from_slice(served.response().body().as_ref()).unwrap();
    assert_eq!(body["outputText"], "Hello from B");
}

async fn collect_converse(
    mut stream: EventStream<ConverseStreamOutput, ConverseStreamOutputError>,
) -> (
    String,
    Option<SdkError<ConverseStreamOutputError, aws_smithy_types::event_stream::RawMessage>>,
) {
    let mut text = String::new();
    loop {
        match stream.recv().await {
            Ok(Some(ConverseStreamOutput::ContentBlockDelta(delta))) => {
                if let Some(ContentBlockDelta::Text(t)) = delta.delta() {
                    text.push_str(t);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return (text, None),
            Err(err) => return (text, Some(err)),
        }
    }
}

async fn converse_stream(
    fake: &FakeBedrock,
) -> Result<
    tower_model_fallback::Served<EventStream<ConverseStreamOutput, ConverseStreamOutputError>>,
    BoxError,
> {
    let svc = layer().layer(ConverseStreamService::new(fake.client()));
    let input = ConverseStreamInputBuilder::default().messages(message("hi"));
    svc.oneshot(ModelRequest::new(Arc::new(input))).await
}

#[tokio::test]
async fn converse_stream_falls_back_on_a_throttle_before_content() {
    // As the HTTP error.
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle()])
        .start()
        .await
        .unwrap();
    let served = converse_stream(&fake).await.unwrap();
    assert_eq!(served.model(), "B");
    let (text, err) = collect_converse(served.into_inner()).await;
    assert_eq!((text.as_str(), err.is_none()), ("Hello from B", true));

    // As the first event of a 200 stream.
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle_in_stream()])
        .start()
        .await
        .unwrap();
    let served = converse_stream(&fake).await.unwrap();
    assert_eq!(served.model(), "B");
    assert!(served.failed_attempts()[0].class().is_throttled());
    let (text, err) = collect_converse(served.into_inner()).await;
    assert_eq!((text.as_str(), err.is_none()), ("Hello from B", true));
    assert_eq!(fake.requests_for("A", Operation::ConverseStream), 1);
}

#[tokio::test]
async fn converse_stream_surfaces_an_error_after_content_and_never_switches_models() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::fail_after_content("ThrottlingException")])
        .start()
        .await
        .unwrap();
    let served = converse_stream(&fake).await.unwrap();
    assert_eq!(served.model(), "A", "content had started on A");
    let (text, err) = collect_converse(served.into_inner()).await;
    assert_eq!(text, "Hello from A");
    let err = err.expect("the mid-stream throttle reaches the caller");
    assert!(err.as_service_error().unwrap().is_throttling_exception());
    assert_eq!(fake.requests("B"), 0);
}

async fn invoke_stream_text(
    mut stream: EventStream<ResponseStream, ResponseStreamError>,
) -> (String, Option<BoxError>) {
    let mut text = String::new();
    loop {
        match stream.recv().await {
            Ok(Some(ResponseStream::Chunk(part))) => {
                let json: serde_json::Value =
                    serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
                text.push_str(json["outputText"].as_str().unwrap());
            }
            Ok(Some(_)) => {}
            Ok(None) => return (text, None),
            Err(err) => return (text, Some(err.into())),
        }
    }
}

#[tokio::test]
async fn invoke_model_stream_falls_back_before_content_and_surfaces_errors_after() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle(), Step::throttle_in_stream()])
        .script(
            "B",
            [
                Step::ok(),
                Step::ok(),
                Step::fail_after_content("ModelStreamErrorException"),
            ],
        )
        .start()
        .await
        .unwrap();
    let svc = layer().layer(InvokeModelStreamService::new(fake.client()));
    let request = || {
        ModelRequest::new(Arc::new(
            InvokeModelWithResponseStreamInputBuilder::default().body(Blob::new("{}")),
        ))
    };
    for _ in 0..2 {
        let served = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(served.model(), "B");
        let (text, err) = invoke_stream_text(served.into_inner()).await;
        assert_eq!(text, "Hello from B");
        assert!(err.is_none());
        svc.reset_cooldowns();
    }
    let served = svc
        .clone()
        .oneshot(request().with_order(["B"]))
        .await
        .unwrap();
    let (text, err) = invoke_stream_text(served.into_inner()).await;
    assert_eq!(text, "Hello from B");
    assert_eq!(
        classify(err.unwrap()),
        ErrorClass::Transient,
        "a ModelStreamErrorException event"
    );
}

#[tokio::test]
async fn a_retry_after_header_lengthens_the_cooldown() {
    let fake = FakeBedrock::builder()
        .script("A", [Step::throttle_retry_after(Duration::from_secs(45))])
        .start()
        .await
        .unwrap();
    let layer = layer();
    let served = converse_through(&layer, &fake).await;
    assert_eq!(
        served.failed_attempts()[0].class(),
        ErrorClass::Throttled(
            Throttle::retry_after(Duration::from_secs(45)).with_limit(QuotaLimit::Requests)
        )
    );
    let remaining = layer.policy().cooldown_remaining(0).unwrap();
    assert!(
        remaining > Duration::from_secs(40),
        "45 s hint beat the 10 s tier: {remaining:?}"
    );
}

#[tokio::test]
async fn a_throttle_says_whether_requests_or_tokens_ran_out() {
    // A holds one token a minute: its first request leaves the bucket in debt. B holds one request.
    let fake = FakeBedrock::builder()
        .quota("A", Quota::new(1_000, 1))
        .quota("B", Quota::new(1, 1_000_000))
        .start()
        .await
        .unwrap();
    let layer = layer();
    assert_eq!(converse_through(&layer, &fake).await.model(), "A");
    layer.reset_cooldowns();
    let served = converse_through(&layer, &fake).await;
    assert_eq!(served.model(), "B");
    let limits = |served: &Served<ConverseOutput>| -> Vec<_> {
        let attempts = served.failed_attempts().iter();
        attempts
            .map(|a| a.class().throttle().and_then(|t| t.limit))
            .collect()
    };
    assert_eq!(limits(&served), [Some(QuotaLimit::Tokens)]);
    layer.reset_cooldowns();
    let served = converse_through(&layer, &fake).await;
    assert_eq!(served.model(), "C");
    assert_eq!(
        limits(&served),
        [Some(QuotaLimit::Tokens), Some(QuotaLimit::Requests)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_small_quota_users_fall_back_and_none_fails() {
    const USERS: usize = 40;
    let fake = FakeBedrock::builder()
        .quota("A", Quota::new(10, 1_000_000))
        .quota("B", Quota::new(1_000, 10_000_000))
        .start()
        .await
        .unwrap();
    let layer = FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()));
    let svc = tower::ServiceBuilder::new()
        .concurrency_limit(USERS)
        .layer(layer.clone())
        .service(ConverseService::new(fake.client()));
    let mut users = tokio::task::JoinSet::new();
    for user in 0..USERS {
        let mut svc = svc.clone();
        users.spawn(async move {
            let request = ModelRequest::new(converse_input(&format!("user {user}")));
            svc.ready().await?.call(request).await
        });
    }
    let mut served_by = std::collections::HashMap::<String, usize>::new();
    while let Some(result) = users.join_next().await {
        let served = result.unwrap().expect("no user fails while B has capacity");
        *served_by.entry(served.model().to_string()).or_default() += 1;
    }
    assert_eq!(served_by.values().sum::<usize>(), USERS);
    let on_a = served_by.get("A").copied().unwrap_or(0);
    assert!(
        (1..=10).contains(&on_a),
        "A served at most its quota: {served_by:?}"
    );
    assert!(served_by["B"] >= USERS - 10, "{served_by:?}");
    let stats = layer.stats();
    assert_eq!(stats.totals.failed, 0);
    assert!(fake.quota_throttles("A") >= 1);
    assert_eq!(fake.requests("A"), stats.models[0].attempts);
}

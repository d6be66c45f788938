//! The fallback layer over the real Bedrock client, with a three-model chain.
//!
//! ```text
//! # Real Bedrock, with the standard AWS credential chain (env, profile, SSO, IMDS...):
//! AWS_REGION=us-east-1 cargo run --example bedrock --features testing -- "Why is the sky blue?"
//!
//! # No AWS account: start the embedded fake Bedrock, whose primary throttles the first call:
//! cargo run --example bedrock --features testing -- --fake "Why is the sky blue?"
//!
//! # Any Bedrock-compatible endpoint (a fake of your own, a gateway):
//! BEDROCK_ENDPOINT_URL=http://127.0.0.1:8080 cargo run --example bedrock --features testing -- "hi"
//! ```
//!
//! Set `BEDROCK_MODELS=primary,fallback,...` to choose the chain.

use std::sync::Arc;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::operation::converse::builders::ConverseInputBuilder;
use aws_sdk_bedrockruntime::types::InferenceConfiguration;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_model_fallback::bedrock::{
    ConverseService, converse_text, endpoint_config, recommended_config, user_message,
};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{FakeBedrock, Step};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest};

const DEFAULT_MODELS: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0,\
us.anthropic.claude-3-5-haiku-20241022-v1:0,us.amazon.nova-lite-v1:0";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fake = args.first().is_some_and(|a| a == "--fake");
    if fake {
        args.remove(0);
    }
    let prompt = args.join(" ");
    let prompt = if prompt.is_empty() {
        "Say hello in five words.".to_string()
    } else {
        prompt
    };
    let models = std::env::var("BEDROCK_MODELS").unwrap_or_else(|_| DEFAULT_MODELS.to_string());
    let chain = ModelChain::new(models.split(',').map(str::trim))?;

    // Keep the fake alive for as long as the client uses it.
    let mut _fake_server = None;
    let client = if fake {
        let server = FakeBedrock::builder()
            .script(chain.primary().as_str(), [Step::throttle()])
            .start()
            .await?;
        println!(
            "fake Bedrock on {} (the primary throttles the first call)",
            server.endpoint_url()
        );
        let client = server.client();
        _fake_server = Some(server);
        client
    } else if let Ok(url) = std::env::var("BEDROCK_ENDPOINT_URL") {
        Client::from_conf(endpoint_config(url).build())
    } else {
        // SDK retries off: the layer is the only retry loop (see the `bedrock` module docs).
        let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Client::from_conf(recommended_config(&sdk_config).build())
    };

    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
    let mut service = ServiceBuilder::new()
        .concurrency_limit(16)
        .layer(layer.clone())
        .service(ConverseService::new(client));

    let input = ConverseInputBuilder::default()
        .messages(user_message(prompt)?)
        .inference_config(InferenceConfiguration::builder().max_tokens(256).build());
    let request = ModelRequest::new(Arc::new(input));
    let served = service.ready().await?.call(request).await?;

    for failed in served.failed_attempts() {
        println!("attempt failed: {failed}");
    }
    println!("answered by {}:", served.model());
    println!("{}", converse_text(served.response()));
    Ok(())
}

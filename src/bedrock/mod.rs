//! Tower services over `aws_sdk_bedrockruntime::Client` (feature `bedrock`).
//!
//! Each service sends a [`ModelRequest`](crate::ModelRequest) to the model of the current attempt. The
//! payload is the SDK's own input builder behind an `Arc`, so the layer's per-attempt clone is a
//! reference-count increment and every SDK field is available:
//!
//! | service | payload | response | error |
//! |---|---|---|---|
//! | [`ConverseService`] | `Arc<ConverseInputBuilder>` | `ConverseOutput` | `SdkError<ConverseError, HttpResponse>` |
//! | [`InvokeModelService`] | `Arc<InvokeModelInputBuilder>` | `InvokeModelOutput` | `SdkError<InvokeModelError, HttpResponse>` |
//! | [`ConverseStreamService`] | `Arc<ConverseStreamInputBuilder>` | [`EventStream`] of `ConverseStreamOutput` | [`BoxError`](crate::BoxError) |
//! | [`InvokeModelStreamService`] | `Arc<InvokeModelWithResponseStreamInputBuilder>` | [`EventStream`] of `ResponseStream` | [`BoxError`](crate::BoxError) |
//!
//! # Streams fall back until content flows
//!
//! The streaming services read the stream up to its first content event before they answer. A throttle
//! (or any error that falls back) that arrives as the HTTP error *or* as an event before any content is
//! therefore the attempt's error, and the layer moves on to the next model transparently. Once content
//! has reached the caller, a later error comes out of [`EventStream::recv`] as an error: the layer never
//! switches models silently in the middle of an answer.
//!
//! # Turn the SDK's own retries off
//!
//! The SDK retries throttles itself: with its default standard retry mode a throttled call is sent
//! 3 times, with backoff (about 2.2 s against a server that always throttles), before the layer even
//! sees the error. Under a fallback layer that triples the load on a model that is already over its
//! quota and delays the switch to a model that could answer now. Build the client with
//! [`recommended_config`] so that the layer is the only retry loop:
//!
//! ```no_run
//! # async fn example() {
//! use tower_model_fallback::bedrock::{ConverseService, recommended_config};
//!
//! let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let client = aws_sdk_bedrockruntime::Client::from_conf(recommended_config(&sdk_config).build());
//! let service = ConverseService::new(client);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{self, BehaviorVersion, Credentials, Region};

mod operation;
mod stream;
mod text;

pub use operation::{
    BedrockService, Converse, ConverseService, ConverseStream, ConverseStreamService, InvokeModel,
    InvokeModelService, InvokeModelStream, InvokeModelStreamService, Operation,
};
pub use stream::EventStream;
pub use text::{converse_text, user_message};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A client config builder from a shared AWS config, with the SDK's retries turned off so that the
/// fallback layer is the only retry loop.
pub fn recommended_config(sdk_config: &aws_types::SdkConfig) -> config::Builder {
    config::Builder::from(sdk_config).retry_config(RetryConfig::disabled())
}

/// A client config builder for a Bedrock-compatible endpoint such as a local fake or a gateway:
/// fixed test credentials, region `us-east-1`, SDK retries off.
pub fn endpoint_config(endpoint_url: impl Into<String>) -> config::Builder {
    config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint_url)
        .credentials_provider(Credentials::new(
            "AKIDLOCAL",
            "local-secret",
            None,
            None,
            "local",
        ))
        .retry_config(RetryConfig::disabled())
}

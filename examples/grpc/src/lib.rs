//! A tonic gRPC service whose handlers call `Fallback` services: unary `Generate` and server-streaming
//! `GenerateStream` (which falls back only until content has started flowing).
//!
//! ```text
//! cargo run -p tower-model-fallback-grpc-example
//! ```
//!
//! The proto (`proto/generate.proto`) is compiled at build time in pure Rust (no system `protoc`).
//! The binary runs on the embedded fake Bedrock, whose primary throttles every third call.

use std::pin::Pin;
use std::sync::Arc;

use aws_sdk_bedrockruntime::operation::converse::builders::ConverseInputBuilder;
use aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamInputBuilder;
use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ConverseStreamOutput, InferenceConfiguration, Message,
};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use tower::{BoxError, Layer, ServiceExt};
use tower_model_fallback::bedrock::{
    ConverseService, ConverseStreamService, converse_text, user_message,
};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::{Fallback, FallbackLayer, ModelChain, ModelRequest};

/// The generated protobuf types, client and server.
pub mod pb {
    tonic::include_proto!("generate.v1");
}

use pb::generator_server::{Generator, GeneratorServer};
use pb::{GenerateChunk, GenerateReply, GenerateRequest};

/// The gRPC service: one fallback layer (one shared policy) over both operations.
#[derive(Clone)]
pub struct Service {
    converse: Fallback<ConverseService>,
    stream: Fallback<ConverseStreamService>,
}

impl Service {
    /// A chain of two models on `client`.
    pub fn new(client: aws_sdk_bedrockruntime::Client) -> Result<Self, BoxError> {
        let chain = ModelChain::new(["primary-model", "fallback-model"])?;
        let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
        Ok(Service {
            converse: layer.layer(ConverseService::new(client.clone())),
            stream: layer.layer(ConverseStreamService::new(client)),
        })
    }
}

fn message(request: &GenerateRequest) -> Result<(Message, InferenceConfiguration), Status> {
    let message = user_message(request.prompt.clone())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let max_tokens = i32::try_from(request.max_tokens.max(1)).unwrap_or(i32::MAX);
    Ok((
        message,
        InferenceConfiguration::builder()
            .max_tokens(max_tokens)
            .build(),
    ))
}

fn unavailable(error: BoxError) -> Status {
    Status::unavailable(format!("no model answered: {error}"))
}

#[tonic::async_trait]
impl Generator for Service {
    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateReply>, Status> {
        let (message, config) = message(request.get_ref())?;
        let input = ConverseInputBuilder::default()
            .messages(message)
            .inference_config(config);
        let served = self
            .converse
            .clone()
            .oneshot(ModelRequest::new(Arc::new(input)))
            .await
            .map_err(unavailable)?;
        let text = converse_text(served.response());
        Ok(Response::new(GenerateReply {
            text,
            model: served.model().to_string(),
            attempts: u32::try_from(served.attempts()).unwrap_or(u32::MAX),
        }))
    }

    type GenerateStreamStream = Pin<Box<dyn Stream<Item = Result<GenerateChunk, Status>> + Send>>;

    async fn generate_stream(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let (message, config) = message(request.get_ref())?;
        let input = ConverseStreamInputBuilder::default()
            .messages(message)
            .inference_config(config);
        // Fallback happens here, before the first content event reaches the caller.
        let served = self
            .stream
            .clone()
            .oneshot(ModelRequest::new(Arc::new(input)))
            .await
            .map_err(unavailable)?;
        let model = served.model().to_string();
        let mut events = served.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let chunk = match events.recv().await {
                    Ok(Some(ConverseStreamOutput::ContentBlockDelta(delta))) => match delta.delta()
                    {
                        Some(ContentBlockDelta::Text(text)) => Ok(GenerateChunk {
                            text: text.clone(),
                            model: model.clone(),
                        }),
                        _ => continue,
                    },
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    // After content has flowed the caller hears about the error; no silent switch.
                    Err(error) => Err(Status::unavailable(format!(
                        "{model} failed mid-stream: {error}"
                    ))),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the gRPC service on `listener`.
pub async fn serve(listener: TcpListener, service: Service) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(GeneratorServer::new(service))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
}

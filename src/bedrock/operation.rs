use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::operation::converse::{
    ConverseError, ConverseOutput, builders::ConverseInputBuilder,
};
use aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamInputBuilder;
use aws_sdk_bedrockruntime::operation::invoke_model::{
    InvokeModelError, InvokeModelOutput, builders::InvokeModelInputBuilder,
};
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::builders::InvokeModelWithResponseStreamInputBuilder;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{ConverseStreamOutput, ResponseStream};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tower::BoxError;
use tower_service::Service;

use super::BoxFuture;
use super::stream::EventStream;
use crate::error::UnknownModel;
use crate::request::{ModelId, ModelRequest};

/// One Bedrock runtime operation: how to send its input to a given model.
pub trait Operation: Send + Sync + 'static {
    /// The SDK's input builder.
    type Input: Clone + Send + Sync + 'static;
    /// What the service answers.
    type Output: Send + 'static;
    /// What the service fails with.
    type Error: Into<BoxError> + Send + 'static;

    /// Sends `input` to `model`.
    fn send(
        client: Client,
        input: Self::Input,
        model: ModelId,
    ) -> BoxFuture<Result<Self::Output, Self::Error>>;

    /// The error for a request that names no model.
    fn no_model() -> Self::Error;
}

/// A tower service that runs the Bedrock operation `Op` on the model of each request.
///
/// Cheap to clone (the SDK client is reference-counted) and always ready: the SDK has no readiness
/// of its own; put a `ConcurrencyLimit` in front to bound concurrent calls.
pub struct BedrockService<Op> {
    client: Client,
    _operation: PhantomData<fn() -> Op>,
}

impl<Op> BedrockService<Op> {
    /// A service over `client`. Build the client with [`recommended_config`](super::recommended_config)
    /// when it runs under a fallback layer.
    pub fn new(client: Client) -> Self {
        BedrockService {
            client,
            _operation: PhantomData,
        }
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl<Op> Clone for BedrockService<Op> {
    fn clone(&self) -> Self {
        BedrockService::new(self.client.clone())
    }
}

impl<Op> fmt::Debug for BedrockService<Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockService")
            .field("operation", &std::any::type_name::<Op>())
            .finish_non_exhaustive()
    }
}

impl<Op: Operation> Service<ModelRequest<Arc<Op::Input>>> for BedrockService<Op> {
    type Response = Op::Output;
    type Error = Op::Error;
    type Future = BoxFuture<Result<Op::Output, Op::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<Arc<Op::Input>>) -> Self::Future {
        let Some(model) = request.model().cloned() else {
            return Box::pin(async { Err(Op::no_model()) });
        };
        let input = Arc::unwrap_or_clone(request.into_body());
        Op::send(self.client.clone(), input, model)
    }
}

fn missing_model<E, R>() -> SdkError<E, R> {
    SdkError::construction_failure("the request names no model id")
}

/// The Converse operation.
#[derive(Debug)]
pub enum Converse {}

impl Operation for Converse {
    type Input = ConverseInputBuilder;
    type Output = ConverseOutput;
    type Error = SdkError<ConverseError, HttpResponse>;

    fn send(
        client: Client,
        input: Self::Input,
        model: ModelId,
    ) -> BoxFuture<Result<Self::Output, Self::Error>> {
        Box::pin(async move { input.model_id(model.as_str()).send_with(&client).await })
    }

    fn no_model() -> Self::Error {
        missing_model()
    }
}

/// The InvokeModel operation.
#[derive(Debug)]
pub enum InvokeModel {}

impl Operation for InvokeModel {
    type Input = InvokeModelInputBuilder;
    type Output = InvokeModelOutput;
    type Error = SdkError<InvokeModelError, HttpResponse>;

    fn send(
        client: Client,
        input: Self::Input,
        model: ModelId,
    ) -> BoxFuture<Result<Self::Output, Self::Error>> {
        Box::pin(async move { input.model_id(model.as_str()).send_with(&client).await })
    }

    fn no_model() -> Self::Error {
        missing_model()
    }
}

/// The ConverseStream operation; answers once the first content event arrived.
#[derive(Debug)]
pub enum ConverseStream {}

impl Operation for ConverseStream {
    type Input = ConverseStreamInputBuilder;
    type Output = EventStream<ConverseStreamOutput, ConverseStreamOutputError>;
    type Error = BoxError;

    fn send(
        client: Client,
        input: Self::Input,
        model: ModelId,
    ) -> BoxFuture<Result<Self::Output, Self::Error>> {
        Box::pin(async move {
            let output = input.model_id(model.as_str()).send_with(&client).await?;
            let is_content = |event: &ConverseStreamOutput| {
                matches!(
                    event,
                    ConverseStreamOutput::ContentBlockStart(_)
                        | ConverseStreamOutput::ContentBlockDelta(_)
                )
            };
            Ok(EventStream::until_content(output.stream, is_content).await?)
        })
    }

    fn no_model() -> Self::Error {
        UnknownModel::new(None).into()
    }
}

/// The InvokeModelWithResponseStream operation; answers once the first chunk arrived.
#[derive(Debug)]
pub enum InvokeModelStream {}

impl Operation for InvokeModelStream {
    type Input = InvokeModelWithResponseStreamInputBuilder;
    type Output = EventStream<ResponseStream, ResponseStreamError>;
    type Error = BoxError;

    fn send(
        client: Client,
        input: Self::Input,
        model: ModelId,
    ) -> BoxFuture<Result<Self::Output, Self::Error>> {
        Box::pin(async move {
            let output = input.model_id(model.as_str()).send_with(&client).await?;
            let is_content = |event: &ResponseStream| matches!(event, ResponseStream::Chunk(_));
            Ok(EventStream::until_content(output.body, is_content).await?)
        })
    }

    fn no_model() -> Self::Error {
        UnknownModel::new(None).into()
    }
}

/// Converse on the model of each request.
pub type ConverseService = BedrockService<Converse>;
/// InvokeModel on the model of each request.
pub type InvokeModelService = BedrockService<InvokeModel>;
/// ConverseStream on the model of each request, falling back until content flows.
pub type ConverseStreamService = BedrockService<ConverseStream>;
/// InvokeModelWithResponseStream on the model of each request, falling back until content flows.
pub type InvokeModelStreamService = BedrockService<InvokeModelStream>;

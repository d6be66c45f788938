//! Classification of `aws-sdk-bedrockruntime` errors.
//!
//! Service errors are classified by their error code (what `ProvideErrorMetadata::code()` returns,
//! which also covers `Unhandled` errors such as `ServiceQuotaExceededException` on Converse) and then by
//! the raw HTTP status. Errors read from a response stream carry no code and are matched by variant.

use std::error::Error;

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::event_stream::RawMessage;

use super::{DefaultClassifier, ErrorClass, parse_retry_after};

type HttpError<E> = SdkError<E, HttpResponse>;
type StreamError<E> = SdkError<E, RawMessage>;

pub(super) fn classify(c: &DefaultClassifier, error: &(dyn Error + 'static)) -> Option<ErrorClass> {
    if let Some(e) = error.downcast_ref::<HttpError<ConverseError>>() {
        return Some(classify_http(c, e));
    }
    if let Some(e) = error.downcast_ref::<HttpError<ConverseStreamError>>() {
        return Some(classify_http(c, e));
    }
    if let Some(e) = error.downcast_ref::<HttpError<InvokeModelError>>() {
        return Some(classify_http(c, e));
    }
    if let Some(e) = error.downcast_ref::<HttpError<InvokeModelWithResponseStreamError>>() {
        return Some(classify_http(c, e));
    }
    if let Some(e) = error.downcast_ref::<StreamError<ConverseStreamOutputError>>() {
        return Some(classify_stream(c, e, converse_stream_event));
    }
    if let Some(e) = error.downcast_ref::<StreamError<ResponseStreamError>>() {
        return Some(classify_stream(c, e, invoke_stream_event));
    }
    if let Some(e) = error.downcast_ref::<ConverseStreamOutputError>() {
        return Some(converse_stream_event(c, e));
    }
    if let Some(e) = error.downcast_ref::<ResponseStreamError>() {
        return Some(invoke_stream_event(c, e));
    }
    None
}

/// The class of an SDK error from an operation's HTTP response (or failure to get one).
fn classify_http<E: ProvideErrorMetadata>(c: &DefaultClassifier, err: &HttpError<E>) -> ErrorClass {
    match err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let headers = raw.headers();
            let retry_after =
                parse_retry_after(headers.get("retry-after"), headers.get("x-amz-retry-after"));
            c.classify_response(
                err.code(),
                Some(raw.status().as_u16()),
                err.message(),
                retry_after,
            )
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorClass::Transient,
        SdkError::DispatchFailure(failure) if failure.is_user() => ErrorClass::Fatal,
        SdkError::DispatchFailure(_) => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    }
}

/// The class of an SDK error read from an event stream.
fn classify_stream<E>(
    c: &DefaultClassifier,
    err: &StreamError<E>,
    by_variant: impl Fn(&DefaultClassifier, &E) -> ErrorClass,
) -> ErrorClass {
    match err {
        SdkError::ServiceError(service) => by_variant(c, service.err()),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) | SdkError::DispatchFailure(_) => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Fatal,
    }
}

fn converse_stream_event(c: &DefaultClassifier, e: &ConverseStreamOutputError) -> ErrorClass {
    let code = match e {
        ConverseStreamOutputError::ThrottlingException(_) => "ThrottlingException",
        ConverseStreamOutputError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ConverseStreamOutputError::InternalServerException(_) => "InternalServerException",
        ConverseStreamOutputError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ConverseStreamOutputError::ValidationException(_) => "ValidationException",
        other => return c.classify_response(other.code(), None, other.message(), None),
    };
    c.classify_response(Some(code), None, e.message(), None)
}

fn invoke_stream_event(c: &DefaultClassifier, e: &ResponseStreamError) -> ErrorClass {
    let code = match e {
        ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
        ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ResponseStreamError::InternalServerException(_) => "InternalServerException",
        ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ResponseStreamError::ValidationException(_) => "ValidationException",
        other => return c.classify_response(other.code(), None, other.message(), None),
    };
    c.classify_response(Some(code), None, e.message(), None)
}

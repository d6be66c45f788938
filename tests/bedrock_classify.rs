//! The default classifier on real `aws-sdk-bedrockruntime` error values.

use std::time::Duration;

use aws_sdk_bedrockruntime::error::{ConnectorError, ErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
use aws_sdk_bedrockruntime::types::error::{
    ConverseStreamOutputError, ModelStreamErrorException, ResponseStreamError, ThrottlingException,
    ValidationException,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::event_stream::RawMessage;
use tower::BoxError;
use tower_model_fallback::classify::{
    Classify, DefaultClassifier, ErrorClass, QuotaLimit, Throttle,
};
use tower_model_fallback::testing::{out_of_daily_tokens, throttled};

fn raw(status: u16, headers: &[(&'static str, &'static str)]) -> HttpResponse {
    let mut raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from("{}"));
    for (name, value) in headers {
        raw.headers_mut().insert(*name, *value);
    }
    raw
}

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("from a test")
        .build()
}

/// Builds the error the SDK's parser builds for `code`: the modeled variant when the operation has
/// one, `Unhandled` (with the code in its metadata) otherwise.
fn converse_error(code: &str) -> ConverseError {
    use aws_sdk_bedrockruntime::types::error::*;
    let m = meta(code);
    match code {
        "ThrottlingException" => {
            ConverseError::ThrottlingException(ThrottlingException::builder().meta(m).build())
        }
        "ModelNotReadyException" => {
            ConverseError::ModelNotReadyException(ModelNotReadyException::builder().meta(m).build())
        }
        "ServiceUnavailableException" => ConverseError::ServiceUnavailableException(
            ServiceUnavailableException::builder().meta(m).build(),
        ),
        "InternalServerException" => ConverseError::InternalServerException(
            InternalServerException::builder().meta(m).build(),
        ),
        "ModelTimeoutException" => {
            ConverseError::ModelTimeoutException(ModelTimeoutException::builder().meta(m).build())
        }
        "ModelErrorException" => {
            ConverseError::ModelErrorException(ModelErrorException::builder().meta(m).build())
        }
        "AccessDeniedException" => {
            ConverseError::AccessDeniedException(AccessDeniedException::builder().meta(m).build())
        }
        "ResourceNotFoundException" => ConverseError::ResourceNotFoundException(
            ResourceNotFoundException::builder().meta(m).build(),
        ),
        "ValidationException" => {
            ConverseError::ValidationException(ValidationException::builder().meta(m).build())
        }
        _ => ConverseError::generic(m),
    }
}

const TABLE: &[(&str, u16, ErrorClass)] = &[
    ("ThrottlingException", 429, ErrorClass::THROTTLED),
    ("ModelNotReadyException", 429, ErrorClass::THROTTLED),
    ("ServiceQuotaExceededException", 400, ErrorClass::THROTTLED),
    ("ServiceUnavailableException", 503, ErrorClass::Transient),
    ("InternalServerException", 500, ErrorClass::Transient),
    ("ModelTimeoutException", 408, ErrorClass::Transient),
    ("ModelErrorException", 424, ErrorClass::ModelRejected),
    ("AccessDeniedException", 403, ErrorClass::ModelRejected),
    ("ResourceNotFoundException", 404, ErrorClass::ModelRejected),
    ("ValidationException", 400, ErrorClass::Fatal),
];

fn classify(err: impl std::error::Error + Send + Sync + 'static) -> ErrorClass {
    // The layer boxes inner errors before classifying; do the same.
    let boxed: BoxError = Box::new(err);
    DefaultClassifier::new().classify(&*boxed)
}

#[test]
fn converse_errors_follow_the_design_table() {
    for &(code, status, class) in TABLE {
        let err = SdkError::service_error(converse_error(code), raw(status, &[]));
        assert_eq!(classify(err), class, "{code}");
    }
}

#[test]
fn service_quota_exceeded_arrives_on_converse_as_unhandled_and_still_throttles() {
    let err = ConverseError::generic(meta("ServiceQuotaExceededException"));
    assert!(!err.is_throttling_exception());
    let err = SdkError::service_error(err, raw(400, &[]));
    assert_eq!(classify(err), ErrorClass::THROTTLED);
}

#[test]
fn other_operations_are_classified_by_code() {
    for &(code, status, class) in TABLE {
        let invoke =
            SdkError::service_error(InvokeModelError::generic(meta(code)), raw(status, &[]));
        assert_eq!(classify(invoke), class, "InvokeModel {code}");
        let stream =
            SdkError::service_error(ConverseStreamError::generic(meta(code)), raw(status, &[]));
        assert_eq!(classify(stream), class, "ConverseStream {code}");
        let invoke_stream = SdkError::service_error(
            InvokeModelWithResponseStreamError::generic(meta(code)),
            raw(status, &[]),
        );
        assert_eq!(
            classify(invoke_stream),
            class,
            "InvokeModelWithResponseStream {code}"
        );
    }
}

#[test]
fn a_bare_status_is_enough_when_there_is_no_code() {
    // A variant built without metadata has no code, as the SDK notes warn; the raw status decides.
    let err =
        ConverseError::ThrottlingException(ThrottlingException::builder().message("slow").build());
    assert_eq!(
        classify(SdkError::service_error(err, raw(429, &[]))),
        ErrorClass::THROTTLED
    );
    let err = ConverseError::generic(ErrorMetadata::builder().build());
    assert_eq!(
        classify(SdkError::service_error(err, raw(502, &[]))),
        ErrorClass::Transient
    );
    let err = ConverseError::generic(ErrorMetadata::builder().build());
    assert_eq!(
        classify(SdkError::service_error(err, raw(418, &[]))),
        ErrorClass::Fatal
    );
}

#[test]
fn retry_after_headers_ride_on_the_throttle() {
    let err = SdkError::service_error(
        converse_error("ThrottlingException"),
        raw(429, &[("retry-after", "12")]),
    );
    assert_eq!(
        classify(err),
        ErrorClass::Throttled(Throttle::retry_after(Duration::from_secs(12)))
    );
    let err = SdkError::service_error(
        converse_error("ThrottlingException"),
        raw(429, &[("x-amz-retry-after", "1500")]),
    );
    assert_eq!(
        classify(err),
        ErrorClass::Throttled(Throttle::retry_after(Duration::from_millis(1500)))
    );
    let err = SdkError::service_error(
        converse_error("ThrottlingException"),
        raw(429, &[("retry-after", "soon")]),
    );
    assert_eq!(
        classify(err),
        ErrorClass::THROTTLED,
        "an unparsable hint is ignored"
    );
}

#[test]
fn transport_failures_fall_back_and_construction_failures_do_not() {
    let timeout: SdkError<ConverseError, HttpResponse> = SdkError::timeout_error("attempt timeout");
    assert_eq!(classify(timeout), ErrorClass::Transient);
    let io: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
    assert_eq!(classify(io), ErrorClass::Transient);
    let read: SdkError<ConverseError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::timeout("read timeout".into()));
    assert_eq!(classify(read), ErrorClass::Transient);
    let response: SdkError<ConverseError, HttpResponse> =
        SdkError::response_error("truncated body", raw(200, &[]));
    assert_eq!(classify(response), ErrorClass::Transient);
    let construction: SdkError<ConverseError, HttpResponse> =
        SdkError::construction_failure("missing model id");
    assert_eq!(classify(construction), ErrorClass::Fatal);
}

#[test]
fn stream_events_are_classified_by_variant() {
    let raw = || RawMessage::invalid(None);
    let throttled =
        ConverseStreamOutputError::ThrottlingException(ThrottlingException::builder().build());
    assert_eq!(
        classify(SdkError::service_error(throttled, raw())),
        ErrorClass::THROTTLED
    );
    let broken = ConverseStreamOutputError::ModelStreamErrorException(
        ModelStreamErrorException::builder().build(),
    );
    assert_eq!(
        classify(SdkError::service_error(broken, raw())),
        ErrorClass::Transient
    );
    let invalid = ResponseStreamError::ValidationException(ValidationException::builder().build());
    assert_eq!(
        classify(SdkError::service_error(invalid, raw())),
        ErrorClass::Fatal
    );
    let throttled =
        ResponseStreamError::ThrottlingException(ThrottlingException::builder().build());
    assert_eq!(
        classify(SdkError::service_error(throttled, raw())),
        ErrorClass::THROTTLED
    );
}

#[test]
fn overrides_win_over_the_table() {
    let classifier = DefaultClassifier::new()
        .with_code("ModelErrorException", ErrorClass::Fatal)
        .with_status(418, ErrorClass::Transient);
    let err: BoxError = Box::new(SdkError::service_error(
        converse_error("ModelErrorException"),
        raw(424, &[]),
    ));
    assert_eq!(classifier.classify(&*err), ErrorClass::Fatal);
    let err: BoxError = Box::new(SdkError::service_error(
        ConverseError::generic(ErrorMetadata::builder().build()),
        raw(418, &[]),
    ));
    assert_eq!(classifier.classify(&*err), ErrorClass::Transient);
}

#[test]
fn wrapped_errors_are_found_through_their_source() {
    #[derive(Debug)]
    struct Wrapper(SdkError<ConverseError, HttpResponse>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let inner = SdkError::service_error(converse_error("ThrottlingException"), raw(429, &[]));
    assert_eq!(classify(Wrapper(inner)), ErrorClass::THROTTLED);
}

#[test]
fn a_throttle_names_the_quota_its_message_names() {
    let throttle = |message: &str| {
        let meta = ErrorMetadata::builder()
            .code("ThrottlingException")
            .message(message)
            .build();
        let err = ThrottlingException::builder().meta(meta).build();
        classify(SdkError::service_error(
            ConverseError::ThrottlingException(err),
            raw(429, &[]),
        ))
    };
    let limit = |class: ErrorClass| class.throttle().and_then(|t| t.limit);
    let tokens = throttle("Too many tokens, please wait before trying again.");
    assert_eq!(limit(tokens), Some(QuotaLimit::Tokens));
    let requests = throttle("Too many requests, please wait before trying again.");
    assert_eq!(limit(requests), Some(QuotaLimit::Requests));
    // A daily quota is not a rate; other messages name nothing.
    assert_eq!(
        limit(throttle(
            "Too many tokens per day, please wait before trying again."
        )),
        None
    );
    assert_eq!(limit(throttle("from a test")), None);
    // The fakes answer with the messages the classifier knows.
    let fake = DefaultClassifier::new().classify(&throttled(QuotaLimit::Tokens));
    assert_eq!(limit(fake), Some(QuotaLimit::Tokens));
    let fake = DefaultClassifier::new().classify(&out_of_daily_tokens());
    assert_eq!(fake, ErrorClass::THROTTLED);
}

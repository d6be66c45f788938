//! Deciding what an error means for routing, kept apart from the policy that acts on it.
//!
//! A [`Classify`] looks at an inner service's error and answers with an [`ErrorClass`]. The
//! [`DefaultClassifier`] knows Bedrock's error codes and HTTP statuses, tower and tokio timeouts,
//! I/O failures and this crate's [`StatusError`]; its table can be overridden per code or status.
//!
//! Retry-after hints are read from `retry-after` (seconds) and `x-amz-retry-after` (milliseconds);
//! the longer wins, capped by the policy's `max_retry_after` (300 s). A throttle's message tells
//! which quota ran out ([`QuotaLimit`]): Bedrock says "Too many requests" or "Too many tokens".
//! Override entries with [`DefaultClassifier::with_code`] /
//! [`with_status`](DefaultClassifier::with_status), or pass any
//! `Fn(&(dyn Error + 'static)) -> ErrorClass`. Your own services can return a [`StatusError`]
//! (status, code, message, retry-after) to be classified like Bedrock.
//!
//! Services that report failures as responses (an HTTP client's 429 is an `Ok(Response)`) add a
//! [`ClassifyResponse`] with
//! [`classify_responses`](crate::FallbackLayerBuilder::classify_responses), such as [`HttpStatus`]:
//! it turns such responses into the errors they stand for before the error classifier sees them.
//!
//! | class | Bedrock codes / errors | what the layer does |
//! |---|---|---|
//! | [`Throttled`](ErrorClass::Throttled) | `ThrottlingException`, `ServiceQuotaExceededException`, `ModelNotReadyException`, any HTTP 429 | records a cooldown (telling the policy the retry-after hint and the quota the message names), tries the next model |
//! | [`Transient`](ErrorClass::Transient) | `ServiceUnavailableException` (503), `InternalServerException` (500), `ModelTimeoutException` (408), SDK timeouts, dispatch and response failures, tower timeouts | tries the next model |
//! | [`ModelRejected`](ErrorClass::ModelRejected) | `AccessDeniedException`, `ResourceNotFoundException`, `ModelErrorException` (424) | tries the next model |
//! | [`Fatal`](ErrorClass::Fatal) | `ValidationException`, construction failures, anything unknown | returns the error at once |

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "bedrock")]
mod bedrock;
mod response;
mod status;
mod throttle;

#[cfg(feature = "wire")]
pub(crate) use response::status_error;
pub use response::{ClassifyResponse, HttpStatus, OkIsSuccess};
pub use status::StatusError;
pub use throttle::{QuotaLimit, Throttle};

/// What an error means for routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The model is over its quota: record a cooldown and try the next model at once. Holds what
    /// the service said (a retry-after hint, the quota that ran out), which the policy receives.
    Throttled(Throttle),
    /// The call failed for a reason that may not recur on another model: try the next one.
    Transient,
    /// This model cannot serve the request (no access, not found, model error): try the next one.
    ModelRejected,
    /// The request itself is bad, so another model would fail too: return the error now.
    Fatal,
}

impl ErrorClass {
    /// A throttle without a retry-after hint.
    pub const THROTTLED: ErrorClass = ErrorClass::Throttled(Throttle::NONE);

    /// Whether the layer moves on to the next model after this error.
    pub fn falls_back(&self) -> bool {
        !matches!(self, ErrorClass::Fatal)
    }

    /// Whether this is a throttle.
    pub fn is_throttled(&self) -> bool {
        matches!(self, ErrorClass::Throttled(_))
    }

    /// What a throttle told the caller; `None` for any other class.
    pub fn throttle(&self) -> Option<Throttle> {
        match *self {
            ErrorClass::Throttled(throttle) => Some(throttle),
            _ => None,
        }
    }

    /// A short lowercase name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Throttled(_) => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::ModelRejected => "model_rejected",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps an inner service's error to an [`ErrorClass`].
///
/// The layer converts every inner error into a [`tower::BoxError`] and hands it over as a trait
/// object, so one classifier serves every service and error type; downcast to what you know.
///
/// Closures work too:
///
/// ```
/// use tower_model_fallback::classify::{Classify, ErrorClass};
///
/// let by_message = |err: &(dyn std::error::Error + 'static)| {
///     if err.to_string().contains("slow down") { ErrorClass::THROTTLED } else { ErrorClass::Fatal }
/// };
/// let err = std::io::Error::other("slow down please");
/// assert_eq!(by_message.classify(&err), ErrorClass::THROTTLED);
/// ```
pub trait Classify: Send + Sync + 'static {
    /// The class of `error`.
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass;
}

impl<F> Classify for F
where
    F: Fn(&(dyn Error + 'static)) -> ErrorClass + Send + Sync + 'static,
{
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        self(error)
    }
}

/// Bedrock's error codes and their classes.
const BEDROCK_CODES: &[(&str, ErrorClass)] = &[
    ("ThrottlingException", ErrorClass::THROTTLED),
    ("ServiceQuotaExceededException", ErrorClass::THROTTLED),
    ("ModelNotReadyException", ErrorClass::THROTTLED),
    ("ServiceUnavailableException", ErrorClass::Transient),
    ("InternalServerException", ErrorClass::Transient),
    ("ModelTimeoutException", ErrorClass::Transient),
    ("ModelStreamErrorException", ErrorClass::Transient),
    ("AccessDeniedException", ErrorClass::ModelRejected),
    ("ResourceNotFoundException", ErrorClass::ModelRejected),
    ("ModelErrorException", ErrorClass::ModelRejected),
    ("ValidationException", ErrorClass::Fatal),
];

/// The classifier layers use unless told otherwise: Bedrock's table, then HTTP statuses, then
/// timeouts and I/O errors; anything it does not recognise is [`Fatal`](ErrorClass::Fatal).
///
/// It walks the error's [`source`](Error::source) chain, so errors wrapped by `Buffer` or by your own
/// types are still recognised. Override single entries when your deployment needs it:
///
/// ```
/// use tower_model_fallback::classify::{Classify, DefaultClassifier, ErrorClass, StatusError};
///
/// // Treat ModelNotReady as an ordinary transient failure instead of a throttle.
/// let classifier = DefaultClassifier::new().with_code("ModelNotReadyException", ErrorClass::Transient);
/// let err = StatusError::new(429).with_code("ModelNotReadyException");
/// assert_eq!(classifier.classify(&err), ErrorClass::Transient);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DefaultClassifier {
    overrides: Arc<Overrides>,
}

#[derive(Clone, Debug, Default)]
struct Overrides {
    codes: HashMap<String, ErrorClass>,
    statuses: HashMap<u16, ErrorClass>,
}

impl DefaultClassifier {
    /// The default table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies errors with this Bedrock (or other service's) error code as `class`.
    pub fn with_code(mut self, code: impl Into<String>, class: ErrorClass) -> Self {
        Arc::make_mut(&mut self.overrides)
            .codes
            .insert(code.into(), class);
        self
    }

    /// Classifies errors with this HTTP status and no overridden code as `class`.
    pub fn with_status(mut self, status: u16, class: ErrorClass) -> Self {
        Arc::make_mut(&mut self.overrides)
            .statuses
            .insert(status, class);
        self
    }

    /// The class of a service error known by its code, HTTP status and message. A `retry_after` hint
    /// and the quota the message names are attached to throttles.
    pub fn classify_response(
        &self,
        code: Option<&str>,
        status: Option<u16>,
        message: Option<&str>,
        retry_after: Option<Duration>,
    ) -> ErrorClass {
        let by_code = code.and_then(|code| {
            self.overrides.codes.get(code).copied().or_else(|| {
                BEDROCK_CODES
                    .iter()
                    .find(|(known, _)| *known == code)
                    .map(|(_, class)| *class)
            })
        });
        let class = by_code
            .or_else(|| status.and_then(|s| self.overrides.statuses.get(&s).copied()))
            .or_else(|| status.map(class_of_status))
            .unwrap_or(ErrorClass::Fatal);
        match class {
            ErrorClass::Throttled(Throttle::NONE) => ErrorClass::Throttled(Throttle {
                retry_after,
                limit: message.and_then(limit_of_message),
            }),
            other => other,
        }
    }

    fn classify_one(&self, error: &(dyn Error + 'static)) -> Option<ErrorClass> {
        if let Some(err) = error.downcast_ref::<StatusError>() {
            return Some(self.classify_response(
                err.code(),
                Some(err.status()),
                err.message(),
                err.retry_after(),
            ));
        }
        #[cfg(feature = "bedrock")]
        if let Some(class) = bedrock::classify(self, error) {
            return Some(class);
        }
        if error.is::<tower::timeout::error::Elapsed>() || error.is::<tokio::time::error::Elapsed>()
        {
            return Some(ErrorClass::Transient);
        }
        if let Some(err) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match err.kind() {
                TimedOut | ConnectionRefused | ConnectionReset | ConnectionAborted
                | NotConnected | BrokenPipe | UnexpectedEof | Interrupted => {
                    Some(ErrorClass::Transient)
                }
                _ => None,
            };
        }
        None
    }
}

impl Classify for DefaultClassifier {
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        let mut next = Some(error);
        while let Some(err) = next {
            if let Some(class) = self.classify_one(err) {
                return class;
            }
            next = err.source();
        }
        ErrorClass::Fatal
    }
}

/// Bedrock's throttle messages and the quota each names. A daily token quota ("Too many tokens per
/// day") is not a rate: it names none.
const BEDROCK_THROTTLE_MESSAGES: &[(&str, Option<QuotaLimit>)] = &[
    ("Too many tokens per day", None),
    ("Too many tokens", Some(QuotaLimit::Tokens)),
    ("Too many requests", Some(QuotaLimit::Requests)),
];

/// The quota a throttle's message says ran out.
fn limit_of_message(message: &str) -> Option<QuotaLimit> {
    BEDROCK_THROTTLE_MESSAGES
        .iter()
        .find(|(start, _)| message.starts_with(start))
        .and_then(|(_, limit)| *limit)
}

/// The class of a bare HTTP status.
fn class_of_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::THROTTLED,
        408 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
        403 | 404 | 424 => ErrorClass::ModelRejected,
        _ => ErrorClass::Fatal,
    }
}

/// Parses `retry-after` (seconds) and `x-amz-retry-after` (milliseconds); the longer one wins.
pub(crate) fn parse_retry_after(
    retry_after: Option<&str>,
    amz_retry_after: Option<&str>,
) -> Option<Duration> {
    let secs = retry_after
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let millis = amz_retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    secs.max(millis)
}

use tower::BoxError;

use super::{StatusError, parse_retry_after};

/// Decides whether a response the inner service returned as `Ok` is really a failed attempt: the
/// counterpart of [`Classify`](super::Classify) for services that report failures as responses,
/// such as an HTTP client whose 429 arrives as `Ok(Response)`.
///
/// A failure is handed back as the error the attempt failed with; the layer's error classifier then
/// classifies it like any other error (a [`StatusError`] with status 429 is a throttle, with its
/// retry-after hint), so one classifier decides every class. Set it with
/// [`FallbackLayerBuilder::classify_responses`](crate::FallbackLayerBuilder::classify_responses).
///
/// Closures work too:
///
/// ```
/// use tower::BoxError;
/// use tower_model_fallback::classify::{ClassifyResponse, StatusError};
///
/// // A service that answers `(status, body)` pairs.
/// let by_status = |(status, body): (u16, String)| -> Result<(u16, String), BoxError> {
///     if status < 300 { Ok((status, body)) } else { Err(StatusError::new(status).into()) }
/// };
/// assert!(by_status.classify_response((200, "hi".into())).is_ok());
/// assert!(by_status.classify_response((429, "slow down".into())).is_err());
/// ```
pub trait ClassifyResponse<R>: Send + Sync + 'static {
    /// `Ok(response)` to serve it, or `Err(error)` for an attempt that failed with `error`.
    fn classify_response(&self, response: R) -> Result<R, BoxError>;
}

impl<F, R> ClassifyResponse<R> for F
where
    F: Fn(R) -> Result<R, BoxError> + Send + Sync + 'static,
{
    fn classify_response(&self, response: R) -> Result<R, BoxError> {
        self(response)
    }
}

/// Every `Ok` response is a success: what a layer does unless told otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct OkIsSuccess;

impl<R> ClassifyResponse<R> for OkIsSuccess {
    #[inline]
    fn classify_response(&self, response: R) -> Result<R, BoxError> {
        Ok(response)
    }
}

/// Non-2xx `http::Response`s are failed attempts: each becomes a [`StatusError`] with the status,
/// Bedrock's error code from `x-amzn-errortype` and the retry-after hint of `retry-after` or
/// `x-amz-retry-after`, so a 429 is a throttle and a 503 a transient failure.
///
/// The response itself is dropped: the body of a failed attempt is not read.
///
/// ```
/// use tower_model_fallback::classify::{ClassifyResponse, HttpStatus, StatusError};
///
/// let throttled = http::Response::builder()
///     .status(429)
///     .header("x-amzn-errortype", "ThrottlingException:http://internal.amazon.com/")
///     .header("retry-after", "3")
///     .body(())
///     .unwrap();
/// let error = HttpStatus.classify_response(throttled).unwrap_err();
/// let status = error.downcast_ref::<StatusError>().unwrap();
/// assert_eq!(status.code(), Some("ThrottlingException"));
/// assert_eq!(status.retry_after(), Some(std::time::Duration::from_secs(3)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpStatus;

impl<B> ClassifyResponse<http::Response<B>> for HttpStatus {
    fn classify_response(
        &self,
        response: http::Response<B>,
    ) -> Result<http::Response<B>, BoxError> {
        if response.status().is_success() {
            return Ok(response);
        }
        Err(status_error(response.status(), response.headers()).into())
    }
}

/// The [`StatusError`] a non-2xx answer with these headers stands for (no message: that is in the
/// body).
pub(crate) fn status_error(status: http::StatusCode, headers: &http::HeaderMap) -> StatusError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut error = StatusError::new(status.as_u16());
    // Bedrock's `x-amzn-errortype` may carry a `:`-separated suffix that is not part of the code.
    let code = header("x-amzn-errortype").and_then(|v| v.split(':').next());
    if let Some(code) = code.filter(|c| !c.is_empty()) {
        error = error.with_code(code);
    }
    if let Some(retry_after) = parse_retry_after(header("retry-after"), header("x-amz-retry-after"))
    {
        error = error.with_retry_after(retry_after);
    }
    error
}

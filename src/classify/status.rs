use std::fmt;
use std::time::Duration;

/// An error that carries an HTTP status and, optionally, a service error code and a retry-after hint.
///
/// Return it (or wrap it as a [`source`](std::error::Error::source)) from your own model services and
/// the [`DefaultClassifier`](super::DefaultClassifier) classifies it like a Bedrock error with the
/// same code and status: `StatusError::new(429)` is a throttle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusError {
    status: u16,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<Duration>,
}

impl StatusError {
    /// An error with this HTTP status.
    pub fn new(status: u16) -> Self {
        StatusError {
            status,
            code: None,
            message: None,
            retry_after: None,
        }
    }

    /// Adds a service error code, such as `ThrottlingException`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Adds a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds a retry-after hint.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The service error code.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The message.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The retry-after hint.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StatusError {}

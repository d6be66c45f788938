use std::time::Duration;

use super::Gate;
use super::quota::throttled;
use crate::classify::{QuotaLimit, StatusError};
use crate::wire::bedrock_status;

/// What one scripted call does: used by [`ScriptedModels`](super::ScriptedModels) and by the fake
/// Bedrock server.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
    pub(crate) gate: Option<Gate>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Answer(Option<String>),
    Fail(StatusError),
    /// A stream that starts with this error event (on a non-streaming call: the error itself).
    FailFirstEvent(StatusError),
    /// A stream that sends some content, then this error event (on a non-streaming call: an answer).
    FailAfterContent(StatusError),
    Hang,
}

fn bedrock_error(code: &str) -> StatusError {
    if code == "ThrottlingException" {
        return throttled(QuotaLimit::Requests);
    }
    StatusError::new(bedrock_status(code))
        .with_code(code)
        .with_message(format!("{code} (scripted)"))
}

impl Step {
    /// Answers with the default text, `"<model> ok"`.
    pub fn ok() -> Self {
        Step::from(Outcome::Answer(None))
    }

    /// Answers with `text`.
    pub fn answer(text: impl Into<String>) -> Self {
        Step::from(Outcome::Answer(Some(text.into())))
    }

    /// Fails like Bedrock's `ThrottlingException` (HTTP 429).
    pub fn throttle() -> Self {
        Step::error("ThrottlingException")
    }

    /// Throttles with a retry-after hint.
    pub fn throttle_retry_after(retry_after: Duration) -> Self {
        Step::fail(bedrock_error("ThrottlingException").with_retry_after(retry_after))
    }

    /// Fails with a Bedrock error code and the HTTP status Bedrock sends with it.
    pub fn error(code: &str) -> Self {
        Step::fail(bedrock_error(code))
    }

    /// Fails with this error.
    pub fn fail(error: StatusError) -> Self {
        Step::from(Outcome::Fail(error))
    }

    /// A stream whose first event is a throttle (HTTP 200, then a `throttlingException` event). On a
    /// non-streaming call, a plain throttle.
    pub fn throttle_in_stream() -> Self {
        Step::error_in_stream("ThrottlingException")
    }

    /// A stream whose first event is the error `code`. On a non-streaming call, the plain error.
    pub fn error_in_stream(code: &str) -> Self {
        Step::from(Outcome::FailFirstEvent(bedrock_error(code)))
    }

    /// A stream that sends some content, then fails with `code`. On a non-streaming call, an answer.
    pub fn fail_after_content(code: &str) -> Self {
        Step::from(Outcome::FailAfterContent(bedrock_error(code)))
    }

    /// Never answers: for cancellation and deadline tests.
    pub fn hang() -> Self {
        Step::from(Outcome::Hang)
    }

    /// Waits at `gate` (after any latency) until the test opens it.
    pub fn held_by(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// Takes `latency` before the outcome.
    pub fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

impl From<Outcome> for Step {
    fn from(outcome: Outcome) -> Self {
        Step {
            outcome,
            latency: Duration::ZERO,
            gate: None,
        }
    }
}

impl Step {
    /// Plays the step's latency and gate.
    pub(crate) async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
    }
}

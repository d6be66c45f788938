use crate::error::FailedAttempt;
use crate::request::ModelId;
use crate::trail::Trail;

/// A model's response, with the model that produced it and the attempts that failed before.
#[derive(Debug)]
pub struct Served<R> {
    response: R,
    model: ModelId,
    failed: Trail,
}

impl<R> Served<R> {
    pub(crate) fn new(response: R, model: ModelId, failed: Trail) -> Self {
        Served {
            response,
            model,
            failed,
        }
    }

    /// The model that answered.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The attempts that failed before the answer, in order; empty when the first model answered.
    pub fn failed_attempts(&self) -> &[FailedAttempt] {
        self.failed.as_slice()
    }

    /// How many models were called, counting the one that answered.
    pub fn attempts(&self) -> usize {
        self.failed.as_slice().len() + 1
    }

    /// Whether a model other than the request's first choice answered.
    pub fn fell_back(&self) -> bool {
        !self.failed.as_slice().is_empty()
    }

    /// The response.
    pub fn response(&self) -> &R {
        &self.response
    }

    /// The response, mutably.
    pub fn response_mut(&mut self) -> &mut R {
        &mut self.response
    }

    /// Takes the response, dropping the trail.
    pub fn into_inner(self) -> R {
        self.response
    }

    /// Takes every part.
    pub fn into_parts(self) -> (R, ModelId, Vec<FailedAttempt>) {
        (self.response, self.model, self.failed.into_vec())
    }
}

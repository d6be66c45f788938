use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tower_service::Service;

use super::step::{Outcome, Step};
use crate::classify::StatusError;
use crate::request::{ModelId, ModelRequest};

/// The answer of a scripted model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedReply {
    /// The model that answered.
    pub model: ModelId,
    /// The scripted text.
    pub text: String,
}

#[derive(Debug, Default)]
struct State {
    scripts: HashMap<ModelId, VecDeque<Step>>,
    otherwise: HashMap<ModelId, Step>,
    calls: HashMap<ModelId, u64>,
    log: Vec<ModelId>,
}

/// A model service that plays per-model scripts; clones share scripts and counters.
///
/// A model whose script is used up repeats its [`otherwise`](Self::otherwise) step, by default
/// [`Step::ok`]. The service is always ready and accepts any payload type.
#[derive(Clone, Default)]
pub struct ScriptedModels {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for ScriptedModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedModels")
            .field("calls", &self.lock().calls)
            .finish()
    }
}

impl ScriptedModels {
    /// Models that all answer `ok`.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `steps` to `model`'s script.
    pub fn script(self, model: impl Into<ModelId>, steps: impl IntoIterator<Item = Step>) -> Self {
        self.push(model, steps);
        self
    }

    /// Appends `steps` to `model`'s script, through a shared handle.
    pub fn push(&self, model: impl Into<ModelId>, steps: impl IntoIterator<Item = Step>) {
        self.lock()
            .scripts
            .entry(model.into())
            .or_default()
            .extend(steps);
    }

    /// What `model` does once its script is used up.
    pub fn otherwise(self, model: impl Into<ModelId>, step: Step) -> Self {
        self.set_otherwise(model, step);
        self
    }

    /// What `model` does once its script is used up, through a shared handle.
    pub fn set_otherwise(&self, model: impl Into<ModelId>, step: Step) {
        self.lock().otherwise.insert(model.into(), step);
    }

    /// Calls `model` received.
    pub fn calls(&self, model: &str) -> u64 {
        self.lock().calls.get(model).copied().unwrap_or(0)
    }

    /// Calls of every model.
    pub fn total_calls(&self) -> u64 {
        self.lock().calls.values().sum()
    }

    /// The models called, in call order.
    pub fn log(&self) -> Vec<ModelId> {
        self.lock().log.clone()
    }

    /// Forgets the call log and counters (scripts stay).
    pub fn clear_log(&self) {
        let mut state = self.lock();
        state.log.clear();
        state.calls.clear();
    }
}

impl<B> Service<ModelRequest<B>> for ScriptedModels {
    type Response = ScriptedReply;
    type Error = StatusError;
    type Future = Pin<Box<dyn Future<Output = Result<ScriptedReply, StatusError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<B>) -> Self::Future {
        let Some(model) = request.model().cloned() else {
            let error = StatusError::new(400)
                .with_code("ValidationException")
                .with_message("request names no model");
            return Box::pin(async move { Err(error) });
        };
        let step = {
            let mut state = self.lock();
            *state.calls.entry(model.clone()).or_default() += 1;
            state.log.push(model.clone());
            let next = state.scripts.get_mut(&model).and_then(VecDeque::pop_front);
            next.or_else(|| state.otherwise.get(&model).cloned())
                .unwrap_or_else(Step::ok)
        };
        Box::pin(async move {
            step.delay().await;
            match step.outcome {
                Outcome::Answer(text) => Ok(ScriptedReply {
                    text: text.unwrap_or_else(|| format!("{model} ok")),
                    model,
                }),
                Outcome::Fail(error) | Outcome::FailFirstEvent(error) => Err(error),
                Outcome::FailAfterContent(_) => Ok(ScriptedReply {
                    text: format!("{model} ok"),
                    model,
                }),
                Outcome::Hang => std::future::pending().await,
            }
        })
    }
}

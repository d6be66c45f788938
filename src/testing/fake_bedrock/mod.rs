//! A Bedrock runtime on loopback that speaks the real wire protocol, for tests with the real SDK.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::Response;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::step::{Outcome, Step};
use crate::classify::StatusError;

use super::quota::Quota;
use super::quota::{QuotaState, throttled};
use crate::wire::{self, Frames, Operation, Usage};

#[derive(Debug, Default)]
struct ModelState {
    script: VecDeque<Step>,
    /// What unscripted calls within the quota get (a plain answer when unset).
    otherwise: Option<Step>,
    quota: Option<QuotaState>,
    received: HashMap<Operation, u64>,
    throttled: u64,
}

#[derive(Debug, Default)]
struct Models {
    models: Mutex<HashMap<String, ModelState>>,
}

impl Models {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ModelState>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fake Bedrock runtime on `127.0.0.1`, driven by the real `aws-sdk-bedrockruntime` client.
///
/// It serves Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream in Bedrock's
/// restJson1 wire format, event-stream frames included, and ignores SigV4 signatures. Every model id
/// answers; per model you can script the next calls with [`Step`]s (answers, throttles, every Bedrock
/// error code with its real status and `x-amzn-errortype` header, errors inside streams, latency) and
/// set a [`Quota`] that throttles like Bedrock when a model's requests or tokens per minute run out.
/// Scripted steps come first; then the quota decides; without one, the model answers.
///
/// ```
/// use tower_model_fallback::bedrock::{ConverseService, user_message};
/// use tower_model_fallback::testing::{FakeBedrock, Quota, Step};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let fake = FakeBedrock::builder()
///     .script("sonnet", [Step::throttle(), Step::ok()])
///     .quota("haiku", Quota::new(100, 50_000))
///     .start()
///     .await?;
/// let client = fake.client(); // SDK client pointed at the fake, SDK retries off
/// let answer = client
///     .converse()
///     .model_id("haiku")
///     .messages(user_message("hi")?)
///     .send()
///     .await?;
/// assert_eq!(fake.requests("haiku"), 1);
/// # let _ = (answer, ConverseService::new(client));
/// # Ok(())
/// # }
/// ```
///
/// Clones are handles to the same server; it stops when the last one is dropped.
#[derive(Clone)]
pub struct FakeBedrock {
    addr: SocketAddr,
    models: Arc<Models>,
    server: Arc<Server>,
}

/// Stops the server when the last handle goes.
#[derive(Debug)]
struct Server {
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    fn stop(&self) -> Option<JoinHandle<()>> {
        if let Some(shutdown) = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = shutdown.send(());
        }
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for FakeBedrock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBedrock")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Configures a [`FakeBedrock`] before it starts.
#[derive(Debug, Default)]
pub struct FakeBedrockBuilder {
    models: HashMap<String, ModelState>,
}

impl FakeBedrockBuilder {
    /// Appends `steps` to `model`'s script.
    pub fn script(mut self, model: &str, steps: impl IntoIterator<Item = Step>) -> Self {
        self.models
            .entry(model.to_owned())
            .or_default()
            .script
            .extend(steps);
        self
    }

    /// What `model` does with unscripted calls within its quota (instead of answering at once): a
    /// latency with [`Step::after`], a persistent fault.
    pub fn otherwise(mut self, model: &str, step: Step) -> Self {
        self.models.entry(model.to_owned()).or_default().otherwise = Some(step);
        self
    }

    /// Gives `model` a quota (unscripted calls beyond it are throttled).
    pub fn quota(mut self, model: &str, quota: Quota) -> Self {
        self.models.entry(model.to_owned()).or_default().quota = Some(QuotaState::new(quota));
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving.
    pub async fn start(self) -> io::Result<FakeBedrock> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        self.serve(listener)
    }

    /// Serves on a listener the caller bound.
    pub fn serve(self, listener: TcpListener) -> io::Result<FakeBedrock> {
        let addr = listener.local_addr()?;
        let models = Arc::new(Models {
            models: Mutex::new(self.models),
        });
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = router(models.clone());
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "fake Bedrock server stopped");
            }
        });
        Ok(FakeBedrock {
            addr,
            models,
            server: Arc::new(Server {
                shutdown: Mutex::new(Some(shutdown)),
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

impl FakeBedrock {
    /// Configures a fake.
    pub fn builder() -> FakeBedrockBuilder {
        FakeBedrockBuilder::default()
    }

    /// Starts a fake on which every model answers.
    pub async fn start() -> io::Result<FakeBedrock> {
        FakeBedrock::builder().start().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An SDK client pointed at the fake, with the configuration the fallback layer recommends
    /// (SDK retries off). See [`endpoint_config`](crate::bedrock::endpoint_config).
    #[cfg(feature = "bedrock")]
    pub fn client(&self) -> aws_sdk_bedrockruntime::Client {
        let config = crate::bedrock::endpoint_config(self.endpoint_url()).build();
        aws_sdk_bedrockruntime::Client::from_conf(config)
    }

    /// Appends `steps` to `model`'s script while the fake runs.
    pub fn script(&self, model: &str, steps: impl IntoIterator<Item = Step>) {
        self.models
            .lock()
            .entry(model.to_owned())
            .or_default()
            .script
            .extend(steps);
    }

    /// Sets or replaces what `model` does with unscripted calls within its quota, while the fake runs.
    pub fn set_otherwise(&self, model: &str, step: Step) {
        self.models
            .lock()
            .entry(model.to_owned())
            .or_default()
            .otherwise = Some(step);
    }

    /// Sets or replaces `model`'s quota while the fake runs (its buckets start full).
    pub fn set_quota(&self, model: &str, quota: Quota) {
        self.models
            .lock()
            .entry(model.to_owned())
            .or_default()
            .quota = Some(QuotaState::new(quota));
    }

    /// Requests `model` received, over every operation.
    pub fn requests(&self, model: &str) -> u64 {
        Operation::ALL
            .iter()
            .map(|op| self.requests_for(model, *op))
            .sum()
    }

    /// Requests `model` received for one operation.
    pub fn requests_for(&self, model: &str, operation: Operation) -> u64 {
        self.models
            .lock()
            .get(model)
            .and_then(|m| m.received.get(&operation).copied())
            .unwrap_or(0)
    }

    /// Requests the quota of `model` throttled.
    pub fn quota_throttles(&self, model: &str) -> u64 {
        self.models.lock().get(model).map_or(0, |m| m.throttled)
    }

    /// Stops accepting connections (for every handle) and waits for open ones to finish.
    pub async fn shutdown(self) {
        if let Some(task) = self.server.stop() {
            let _ = task.await;
        }
    }
}

fn router(models: Arc<Models>) -> Router {
    let route = |op: Operation| {
        post(
            move |State(models): State<Arc<Models>>, Path(model): Path<String>, body: Bytes| async move {
                handle(models, model, op, body).await
            },
        )
    };
    Operation::ALL
        .into_iter()
        .fold(Router::new(), |router, op| {
            router.route(&format!("/model/{{model_id}}/{}", op.path()), route(op))
        })
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(models)
}

async fn handle(models: Arc<Models>, model: String, op: Operation, body: Bytes) -> Response<Body> {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let error = StatusError::new(400)
            .with_code("ValidationException")
            .with_message("Malformed input request, please reformat your input and try again.");
        return wire::error_response(&error);
    };
    let cost = wire::estimate_cost(Some(&request), body.len());
    let usage = Usage {
        input: cost.input,
        output: 0,
    };
    let step = {
        let mut models = models.lock();
        let state = models.entry(model.clone()).or_default();
        *state.received.entry(op).or_default() += 1;
        match state.script.pop_front() {
            Some(step) => step,
            None => {
                let tokens = u32::try_from(cost.total()).unwrap_or(u32::MAX);
                match state.quota.as_mut().map(|q| q.try_take(tokens)) {
                    Some(Err(limit)) => {
                        state.throttled += 1;
                        Step::fail(throttled(limit))
                    }
                    _ => state.otherwise.clone().unwrap_or_else(Step::ok),
                }
            }
        }
    };
    step.delay().await;
    let answer = |text: Option<String>| text.unwrap_or_else(|| format!("Hello from {model}"));
    match step.outcome {
        Outcome::Hang => std::future::pending().await,
        Outcome::Fail(error) => wire::error_response(&error),
        Outcome::FailFirstEvent(error) if op.is_stream() => {
            Frames::default().exception(&error).response()
        }
        Outcome::FailFirstEvent(error) => wire::error_response(&error),
        Outcome::FailAfterContent(error) if op.is_stream() => {
            let mut frames = Frames::default();
            match op {
                Operation::ConverseStream => frames.converse_content(&answer(None)),
                _ => frames.chunk(&json!({ "outputText": answer(None) })),
            };
            frames.exception(&error).response()
        }
        Outcome::FailAfterContent(_) => ok_response(op, &answer(None), usage),
        Outcome::Answer(text) => ok_response(op, &answer(text), usage),
    }
}

fn ok_response(op: Operation, text: &str, usage: Usage) -> Response<Body> {
    let usage = Usage {
        output: (text.len() as u32).div_ceil(4).max(1),
        ..usage
    };
    match op {
        Operation::Converse => wire::json_response(200, &wire::converse_body(text, usage)),
        Operation::Invoke => wire::json_response(200, &json!({ "outputText": text })),
        Operation::ConverseStream => Frames::default()
            .converse_content(text)
            .converse_end(usage)
            .response(),
        Operation::InvokeStream => Frames::default()
            .chunk(&json!({ "outputText": text }))
            .response(),
    }
}

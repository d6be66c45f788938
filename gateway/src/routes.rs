//! The gateway's HTTP endpoints.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, header};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower::{BoxError, ServiceExt};

use super::AppState;
use super::in_flight::{InFlight, InFlightGuard};
use super::share_history::Sample;
use super::upstream::UpstreamRequest;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use tokio::time::Instant;
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::error::{
    CoolingDown, DeadlineExceeded, FailedAttempt, FallbackError, RetryBudgetExhausted, UnknownModel,
};
use tower_model_fallback::wire::{Operation, error_response, estimate_cost, json_response};
use tower_model_fallback::{ModelRequest, RequestId};

pub(super) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/model/{model_id}/{operation}", post(model_call))
        .route("/", get(status_page))
        .route("/model_stats", get(model_stats))
        .route("/reset_model_cooldowns", post(reset_cooldowns))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(prometheus))
        .fallback(|| async {
            bedrock_error(404, "UnknownOperationException", "Unknown operation.")
        })
        .with_state(state)
}

/// The live status page: plain HTML, CSS and JS that refresh from `/model_stats`, no build step.
async fn status_page() -> Response<Body> {
    let mut response = Response::new(Body::from(include_str!("status.html")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn bedrock_error(status: u16, code: &str, message: impl Into<String>) -> Response<Body> {
    error_response(
        &StatusError::new(status)
            .with_code(code)
            .with_message(message),
    )
}

/// Compares without stopping at the first differing byte, so timing does not reveal the key.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn bearer_is(headers: &HeaderMap, secret: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| same_secret(token.trim(), secret))
}

/// Longest model id accepted in a path (Bedrock's own limit for model ids and ARNs).
const MAX_MODEL_ID_CHARS: usize = 2048;
/// How much of a bad or unknown model id an error message quotes.
const QUOTED_ID_CHARS: usize = 64;

/// At most the first [`QUOTED_ID_CHARS`] characters of `id`, marked when cut.
fn quoted(id: &str) -> String {
    match id.char_indices().nth(QUOTED_ID_CHARS) {
        Some((cut, _)) => format!("{}...", &id[..cut]),
        None => id.to_string(),
    }
}

/// What the access log and the metrics say about one model request.
struct Outcome {
    chain: String,
    model: Option<String>,
    attempts: usize,
}

async fn model_call(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = RequestId::next();
    let mut outcome = Outcome {
        chain: String::new(),
        model: None,
        attempts: 0,
    };
    let mut response =
        serve_model_call(&state, path, &headers, body, request_id, &mut outcome).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    state.metrics.request(&outcome.chain, status, elapsed);
    // The access line: never the prompt, the keys or upstream error text.
    tracing::info!(
        target: "access",
        request_id = %request_id,
        chain = %outcome.chain,
        model = outcome.model.as_deref().unwrap_or("-"),
        attempts = outcome.attempts,
        status,
        latency_ms = elapsed.as_millis() as u64,
    );
    response
}

async fn serve_model_call(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
    request_id: RequestId,
    outcome: &mut Outcome,
) -> Response<Body> {
    if let Some(key) = &state.api_key
        && !bearer_is(headers, key)
    {
        return bedrock_error(403, "AccessDeniedException", "Missing or invalid API key.");
    }
    let Ok(Path((model_id, operation))) = path else {
        return bedrock_error(
            400,
            "ValidationException",
            "The model id in the path is not valid UTF-8.",
        );
    };
    if model_id.chars().count() > MAX_MODEL_ID_CHARS {
        return bedrock_error(
            400,
            "ValidationException",
            format!(
                "The model id {} is longer than {MAX_MODEL_ID_CHARS} characters.",
                quoted(&model_id)
            ),
        );
    }
    let Some(operation) = Operation::from_path(&operation) else {
        return bedrock_error(404, "UnknownOperationException", "Unknown operation.");
    };
    let Some(chain) = state.chain(&model_id) else {
        return bedrock_error(
            404,
            "ResourceNotFoundException",
            format!(
                "Model {} is not configured on this gateway.",
                quoted(&model_id)
            ),
        );
    };
    outcome.chain = chain.name();
    // Shed at once beyond the limits, in the form Bedrock clients already back off from. The body
    // is read first (bounded in time and in memory), so slow clients never hold model capacity.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > state.max_body_bytes) {
        return too_large(state.max_body_bytes);
    }
    let reserve = declared.unwrap_or(state.max_body_bytes).max(1);
    let Ok(mut buffered) = u32::try_from(reserve)
        .ok()
        .and_then(|n| state.body_memory.clone().try_acquire_many_owned(n).ok())
        .ok_or(())
    else {
        state.metrics.shed("body_memory");
        return busy("The gateway is buffering as many request bodies as it may; please retry.");
    };
    let read = tokio::time::timeout(
        state.timeouts.body_read,
        axum::body::to_bytes(body, state.max_body_bytes),
    );
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            let too_long = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if too_long {
                return too_large(state.max_body_bytes);
            }
            // The client went away mid-body: nobody is left to answer.
            tracing::debug!(request_id = %request_id, "client gone while sending its body");
            return bedrock_error(400, "ValidationException", "The request body was cut off.");
        }
        Err(_) => {
            return bedrock_error(
                408,
                "RequestTimeoutException",
                "The request body did not arrive within the body read timeout.",
            );
        }
    };
    // The body stays in memory until the request ends: keep its size reserved, give back the rest.
    let _unused = buffered.split(buffered.num_permits().saturating_sub(body.len().max(1)));
    // Converse bodies are Bedrock's own JSON; InvokeModel bodies belong to the model.
    let json = serde_json::from_slice::<Value>(&body).ok();
    if operation.is_converse() && !json.as_ref().is_some_and(Value::is_object) {
        return bedrock_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    }
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.shed("in_flight");
        return busy("The gateway is serving as many requests as it may; please retry.");
    };
    let in_flight = InFlightGuard::new(permit, state.metrics.in_flight().clone());
    let cost = estimate_cost(json.as_ref(), body.len());
    let request = ModelRequest::new(UpstreamRequest {
        operation,
        body,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        accept: headers.get(header::ACCEPT).cloned(),
    })
    .with_id(request_id)
    .with_cost(cost)
    .with_deadline(Instant::now() + state.timeouts.request);
    let answer = chain.service.clone().oneshot(request).await;
    drop(buffered);
    match answer {
        Ok(served) => {
            let attempts = served.attempts();
            let model = served.model().clone();
            outcome.model = Some(model.to_string());
            outcome.attempts = attempts;
            let upstream = served.into_inner();
            // The request stays in flight until its answer has been streamed out.
            let body = Body::new(InFlight::new(upstream.body, in_flight));
            let mut response = Response::new(body);
            *response.headers_mut() = upstream.headers;
            if let Ok(value) = HeaderValue::from_str(model.as_str()) {
                response.headers_mut().insert("x-fallback-model", value);
            }
            response
                .headers_mut()
                .insert("x-fallback-attempts", HeaderValue::from(attempts));
            response
        }
        Err(error) => {
            drop(in_flight);
            let attempts = attempts_of(&error);
            outcome.attempts = attempts.len();
            outcome.model = attempts.last().map(|a| a.model().to_string());
            failure_response(error)
        }
    }
}

/// A 429 `ThrottlingException` with a one-second retry hint: the gateway's own limits speak as
/// Bedrock's quotas do, so clients back off the way they already know.
fn busy(message: &str) -> Response<Body> {
    let status = StatusError::new(429)
        .with_code("ThrottlingException")
        .with_message(message)
        .with_retry_after(Duration::from_secs(1));
    error_response(&status)
}

fn too_large(limit: usize) -> Response<Body> {
    bedrock_error(
        413,
        "ValidationException",
        format!("Request body is larger than {limit} bytes."),
    )
}

/// The attempts a failed request made, whichever way it failed.
fn attempts_of(error: &BoxError) -> &[FailedAttempt] {
    if let Some(e) = error.downcast_ref::<FallbackError>() {
        e.attempts()
    } else if let Some(e) = error.downcast_ref::<CoolingDown>() {
        e.attempts()
    } else if let Some(e) = error.downcast_ref::<DeadlineExceeded>() {
        e.attempts()
    } else if let Some(e) = error.downcast_ref::<RetryBudgetExhausted>() {
        e.attempts()
    } else {
        &[]
    }
}

/// The Bedrock-style answer for a request no model served.
fn failure_response(error: BoxError) -> Response<Body> {
    if let Some(cooling) = error.downcast_ref::<CoolingDown>() {
        let status = StatusError::new(429)
            .with_code("ThrottlingException")
            .with_message("Every model of this chain is cooling down; please retry later.")
            .with_retry_after(cooling.retry_after());
        return error_response(&status);
    }
    if error.is::<DeadlineExceeded>() {
        return bedrock_error(408, "ModelTimeoutException", "The request deadline passed.");
    }
    if error.is::<UnknownModel>() {
        return bedrock_error(404, "ResourceNotFoundException", error.to_string());
    }
    if error.is::<RetryBudgetExhausted>() {
        let status = StatusError::new(503)
            .with_code("ServiceUnavailableException")
            .with_message(
                "The chain's models are failing and its retry budget is spent; please retry later.",
            )
            .with_retry_after(Duration::from_secs(1));
        return error_response(&status);
    }
    let attempts = attempts_of(&error).len();
    let last = error
        .downcast_ref::<FallbackError>()
        .and_then(FallbackError::last_error)
        .and_then(|e| e.downcast_ref::<StatusError>());
    let mut response = match last {
        Some(status) => error_response(status),
        None => bedrock_error(
            500,
            "InternalServerException",
            "The gateway could not reach any model.",
        ),
    };
    response
        .headers_mut()
        .insert("x-fallback-attempts", HeaderValue::from(attempts));
    response
}

async fn model_stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = stats_refused(&state, &headers) {
        return refused;
    }
    let mut models = Vec::new();
    let mut chains = Vec::new();
    let (mut requests, mut served, mut primary, mut failed) = (0, 0, 0, 0);
    let (mut cancelled, mut in_flight, mut later_passes) = (0, 0, 0);
    for chain in &state.chains {
        let stats = chain.layer.stats();
        let t = &stats.totals;
        requests += t.requests;
        cancelled += t.cancelled;
        in_flight += t.in_flight;
        served += t.served;
        primary += t.served_by_primary;
        failed += t.failed;
        later_passes += t.later_passes;
        let chain_name = chain.name();
        let shared = chain.shared.as_ref().map(|s| {
            let status = s.status();
            json!({
                "connected": status.connected,
                "lag_ms": status.lag_ms,
                "sent": status.sent,
                "received": status.received,
                "dropped": status.dropped,
            })
        });
        chains.push(json!({
            "name": chain_name,
            "shared_state": shared,
            "primary_share_history": chain.share_history.report(Sample::now(t)),
        }));
        for m in stats.models {
            models.push(json!({
                "name": m.name,
                "id": m.id,
                "chain": chain_name,
                "status": m.status,
                "success_rate": m.success_rate.map_or(100.0, |r| round2(r * 100.0)),
                "cooldown_remaining_s": round2(m.cooldown_remaining_s),
                "reopens_in_s": round2(m.reopens_in_s),
                "attempts": m.attempts,
                "successes": m.successes,
                "throttles": m.throttles,
                "token_throttles": m.token_throttles,
                "failures": m.failures,
                "request_errors": m.request_errors,
                "cancelled": m.cancelled,
                "in_flight": m.in_flight,
            }));
        }
    }
    let finished = served + failed;
    let usage = (finished > 0).then(|| round2(primary as f64 * 100.0 / finished as f64));
    json_response(
        200,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "stats": {
                "total_models": models.len(),
                "chains": chains,
                "models": models,
                "requests": requests,
                "served": served,
                "served_by_primary": primary,
                "served_by_fallback": served - primary,
                "failed": failed,
                "cancelled": cancelled,
                "in_flight": in_flight,
                "later_passes": later_passes,
                "primary_usage_percent": usage,
            }
        }),
    )
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn reset_cooldowns(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    let Some(token) = &state.admin_token else {
        return bedrock_error(
            403,
            "AccessDeniedException",
            "Admin endpoints are disabled: no admin token is configured.",
        );
    };
    if !bearer_is(&headers, token) {
        return bedrock_error(
            403,
            "AccessDeniedException",
            "Missing or invalid admin token.",
        );
    }
    for chain in &state.chains {
        chain.layer.reset_cooldowns();
    }
    tracing::info!("cooldowns reset");
    json_response(200, &json!({ "reset": true }))
}

/// `None` when the caller may read the stats; else the 403 to answer.
fn stats_refused(state: &AppState, headers: &HeaderMap) -> Option<Response<Body>> {
    let token = state.metrics_token.as_ref()?;
    (!bearer_is(headers, token)).then(|| {
        bedrock_error(
            403,
            "AccessDeniedException",
            "Missing or invalid metrics token.",
        )
    })
}

async fn prometheus(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = stats_refused(&state, &headers) {
        return refused;
    }
    match state.metrics.render() {
        Ok(text) => {
            let mut response = Response::new(Body::from(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(_) => bedrock_error(500, "InternalServerException", "Could not render metrics."),
    }
}

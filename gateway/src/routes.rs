//! The gateway's HTTP endpoints.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, header};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower::{BoxError, ServiceExt};

use super::share_history::Sample;
use super::upstream::UpstreamRequest;
use super::{AppState, metrics};
use tower_model_fallback::ModelRequest;
use tower_model_fallback::classify::StatusError;
use tower_model_fallback::error::{CoolingDown, DeadlineExceeded, FallbackError, UnknownModel};
use tower_model_fallback::wire::{Operation, error_response, estimate_cost, json_response};

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

async fn model_call(
    State(state): State<Arc<AppState>>,
    Path((model_id, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    if let Some(key) = &state.api_key
        && !bearer_is(&headers, key)
    {
        return bedrock_error(403, "AccessDeniedException", "Missing or invalid API key.");
    }
    let Some(operation) = Operation::from_path(&operation) else {
        return bedrock_error(404, "UnknownOperationException", "Unknown operation.");
    };
    let Some(chain) = state.chain(&model_id) else {
        return bedrock_error(
            404,
            "ResourceNotFoundException",
            format!("Model {model_id} is not configured on this gateway."),
        );
    };
    let Ok(body) = axum::body::to_bytes(body, state.max_body_bytes).await else {
        return bedrock_error(
            413,
            "ValidationException",
            format!(
                "Request body is larger than {} bytes.",
                state.max_body_bytes
            ),
        );
    };
    // Converse bodies are Bedrock's own JSON; InvokeModel bodies belong to the model.
    let json = serde_json::from_slice::<Value>(&body).ok();
    if operation.is_converse() && !json.as_ref().is_some_and(Value::is_object) {
        return bedrock_error(
            400,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    }
    let cost = estimate_cost(json.as_ref(), body.len());
    let request = ModelRequest::new(UpstreamRequest {
        operation,
        body,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        accept: headers.get(header::ACCEPT).cloned(),
    })
    .with_cost(cost);
    match chain.service.clone().oneshot(request).await {
        Ok(served) => {
            let attempts = served.attempts();
            let model = served.model().clone();
            let upstream = served.into_inner();
            let mut response = Response::new(upstream.body);
            *response.headers_mut() = upstream.headers;
            if let Ok(value) = HeaderValue::from_str(model.as_str()) {
                response.headers_mut().insert("x-fallback-model", value);
            }
            response
                .headers_mut()
                .insert("x-fallback-attempts", HeaderValue::from(attempts));
            tracing::info!(chain = %model_id, model = %model, attempts, "served");
            response
        }
        Err(error) => {
            // Error messages can quote the request; log only what kind of failure it was.
            let (attempts, class) =
                error
                    .downcast_ref::<FallbackError>()
                    .map_or((0, "none"), |e| {
                        (
                            e.attempts().len(),
                            e.last().map_or("none", |a| a.class().as_str()),
                        )
                    });
            tracing::info!(chain = %model_id, attempts, last_class = class, "failed");
            failure_response(error)
        }
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
    let attempts = error
        .downcast_ref::<FallbackError>()
        .map_or(0, |e| e.attempts().len());
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

async fn model_stats(State(state): State<Arc<AppState>>) -> Response<Body> {
    let mut models = Vec::new();
    let mut chains = Vec::new();
    let (mut requests, mut served, mut primary, mut failed) = (0, 0, 0, 0);
    let (mut cancelled, mut in_flight) = (0, 0);
    for chain in &state.chains {
        let stats = chain.layer.stats();
        let t = &stats.totals;
        requests += t.requests;
        cancelled += t.cancelled;
        in_flight += t.in_flight;
        served += t.served;
        primary += t.served_by_primary;
        failed += t.failed;
        let chain_name = chain.name();
        chains.push(json!({
            "name": chain_name,
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
                "failures": m.failures,
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

async fn prometheus(State(state): State<Arc<AppState>>) -> Response<Body> {
    let chains = state.chains.iter().map(|c| (c.name(), c.layer.stats()));
    match metrics::render(chains) {
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

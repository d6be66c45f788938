//! Bedrock's restJson1 wire format: JSON answers, error responses and event-stream frames.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::classify::StatusError;
use crate::request::TokenCost;

/// The `{"message": ...}` error response Bedrock sends, with `x-amzn-errortype` and any retry-after.
pub(crate) fn error_response(error: &StatusError) -> Response<Body> {
    let code = error.code().unwrap_or("InternalServerException");
    let body = json!({ "message": error.message().unwrap_or(code) });
    let mut response = json_response(error.status(), &body);
    if let Ok(value) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    if let Some(retry_after) = error.retry_after() {
        let secs = retry_after.as_secs_f64().ceil() as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    bytes_response(status, "application/json", Bytes::from(body.to_string()))
}

pub(crate) fn bytes_response(
    status: u16,
    content_type: &'static str,
    body: Bytes,
) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A Converse answer the SDK parses.
pub(crate) fn converse_body(text: &str, usage: Usage) -> Value {
    json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": text }] } },
        "stopReason": "end_turn",
        "usage": usage.json(),
        "metrics": { "latencyMs": 1 }
    })
}

/// Token counts reported back to the caller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub(crate) input: u32,
    pub(crate) output: u32,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "inputTokens": self.input,
            "outputTokens": self.output,
            "totalTokens": self.input + self.output
        })
    }
}

/// Event-stream frames, appended one after another into one body.
#[derive(Default)]
pub(crate) struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    fn push(&mut self, headers: [(&'static str, String); 2], payload: &Value) {
        let mut message = Message::new(Bytes::from(payload.to_string())).add_header(Header::new(
            ":content-type",
            FrameValue::String("application/json".into()),
        ));
        for (name, value) in headers {
            message = message.add_header(Header::new(name, FrameValue::String(value.into())));
        }
        // Writing to a Vec cannot run out of space; a malformed frame would be a bug in this file.
        let _ = write_message_to(&message, &mut self.buffer);
    }

    /// An `event` frame of type `event_type`.
    pub(crate) fn event(&mut self, event_type: &str, payload: Value) -> &mut Self {
        self.push(
            [
                (":message-type", "event".into()),
                (":event-type", event_type.into()),
            ],
            &payload,
        );
        self
    }

    /// An `exception` frame for `error`; its type is the code with a lowercase first letter.
    pub(crate) fn exception(&mut self, error: &StatusError) -> &mut Self {
        let code = error.code().unwrap_or("InternalServerException");
        let mut exception_type = code.to_string();
        if let Some(first) = exception_type.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        self.push(
            [
                (":message-type", "exception".into()),
                (":exception-type", exception_type),
            ],
            &json!({ "message": error.message().unwrap_or(code) }),
        );
        self
    }

    /// The ConverseStream events that open an answer and carry `text`.
    pub(crate) fn converse_content(&mut self, text: &str) -> &mut Self {
        self.event("messageStart", json!({ "role": "assistant" }))
            .event(
                "contentBlockDelta",
                json!({ "contentBlockIndex": 0, "delta": { "text": text } }),
            )
    }

    /// The ConverseStream events that close an answer.
    pub(crate) fn converse_end(&mut self, usage: Usage) -> &mut Self {
        self.event("contentBlockStop", json!({ "contentBlockIndex": 0 }))
            .event("messageStop", json!({ "stopReason": "end_turn" }))
            .event(
                "metadata",
                json!({ "usage": usage.json(), "metrics": { "latencyMs": 1 } }),
            )
    }

    /// An InvokeModelWithResponseStream chunk carrying `payload`.
    pub(crate) fn chunk(&mut self, payload: &Value) -> &mut Self {
        let bytes = aws_smithy_types::base64::encode(payload.to_string());
        self.event("chunk", json!({ "bytes": bytes }))
    }

    /// The frames as a 200 event-stream response.
    pub(crate) fn response(&mut self) -> Response<Body> {
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        bytes_response(200, "application/vnd.amazon.eventstream", body)
    }
}

/// The tokens a request will use: its text at about four characters a token (a body that is not a
/// JSON object counts whole), plus the output budget it asks for (`maxTokens` or `max_tokens`; 512 when
/// it names none).
pub(crate) fn estimate_cost(request: Option<&Value>, body_len: usize) -> TokenCost {
    fn text_len(value: &Value) -> usize {
        match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(text_len).sum(),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "inferenceConfig" | "role"))
                .map(|(_, v)| text_len(v))
                .sum(),
            _ => 0,
        }
    }
    let chars = match request {
        Some(json) if json.is_object() => text_len(json),
        _ => body_len,
    };
    let output = request
        .and_then(|json| {
            json.pointer("/inferenceConfig/maxTokens")
                .or_else(|| json.get("max_tokens"))
                .or_else(|| json.get("maxTokens"))
        })
        .and_then(Value::as_u64)
        .unwrap_or(512);
    TokenCost::new(
        u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX).max(1),
        u32::try_from(output).unwrap_or(u32::MAX),
    )
}

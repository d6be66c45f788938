//! Bedrock's restJson1 wire format (feature `wire`): the runtime operations, JSON answers, error
//! responses and how to read them, event-stream frames, and a request's token estimate. The one home
//! of this knowledge for the fake Bedrock and the gateway.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::classify::{StatusError, status_error};
use crate::request::TokenCost;

/// The four Bedrock runtime operations, as they appear at the end of a request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `converse`
    Converse,
    /// `converse-stream`
    ConverseStream,
    /// `invoke`
    Invoke,
    /// `invoke-with-response-stream`
    InvokeStream,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 4] = [
        Operation::Converse,
        Operation::ConverseStream,
        Operation::Invoke,
        Operation::InvokeStream,
    ];

    /// The operation named by the last path segment.
    pub fn from_path(segment: &str) -> Option<Self> {
        Operation::ALL.into_iter().find(|op| op.path() == segment)
    }

    /// The last path segment.
    pub fn path(self) -> &'static str {
        match self {
            Operation::Converse => "converse",
            Operation::ConverseStream => "converse-stream",
            Operation::Invoke => "invoke",
            Operation::InvokeStream => "invoke-with-response-stream",
        }
    }

    /// Whether the answer is an event stream.
    pub fn is_stream(self) -> bool {
        matches!(self, Operation::ConverseStream | Operation::InvokeStream)
    }

    /// Whether the body is Converse JSON (rather than a model-specific InvokeModel body).
    pub fn is_converse(self) -> bool {
        matches!(self, Operation::Converse | Operation::ConverseStream)
    }
}

/// The HTTP status Bedrock sends with an error code (400 for codes it does not list).
pub fn bedrock_status(code: &str) -> u16 {
    match code {
        "ThrottlingException" | "ModelNotReadyException" => 429,
        "ServiceUnavailableException" => 503,
        "InternalServerException" => 500,
        "ModelTimeoutException" => 408,
        "ModelErrorException" | "ModelStreamErrorException" => 424,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        _ => 400,
    }
}

/// The [`StatusError`] a non-2xx Bedrock answer stands for, as the SDK reads it: the code from
/// `x-amzn-errortype` (text after `:` dropped), else the body's `code`, else its `__type` (text
/// before `#` dropped); the message from `message`, `Message` or `errorMessage`; the retry-after
/// hint from `retry-after` or `x-amz-retry-after`.
pub fn error_from_parts(
    status: axum::http::StatusCode,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> StatusError {
    let mut error = status_error(status, headers);
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    if error.code().is_none() {
        let code = json
            .get("code")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                let kind = json.get("__type")?.as_str()?;
                Some(kind.rsplit('#').next().unwrap_or(kind).to_string())
            });
        if let Some(code) = code {
            error = error.with_code(code);
        }
    }
    let message = ["message", "Message", "errorMessage"]
        .iter()
        .find_map(|key| json.get(*key).and_then(Value::as_str));
    if let Some(message) = message {
        error = error.with_message(message);
    }
    error
}

/// The `{"message": ...}` error response Bedrock sends, with `x-amzn-errortype` and any retry-after.
pub fn error_response(error: &StatusError) -> Response<Body> {
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
pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    bytes_response(status, "application/json", Bytes::from(body.to_string()))
}

/// A response with `status`, `content_type` and `body`.
pub fn bytes_response(status: u16, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A Converse answer the SDK parses.
pub fn converse_body(text: &str, usage: Usage) -> Value {
    json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": text }] } },
        "stopReason": "end_turn",
        "usage": usage.json(),
        "metrics": { "latencyMs": 1 }
    })
}

/// Token counts reported back to the caller.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Input tokens.
    pub input: u32,
    /// Output tokens.
    pub output: u32,
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
#[derive(Debug, Default)]
pub struct Frames {
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
    pub fn event(&mut self, event_type: &str, payload: Value) -> &mut Self {
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
    pub fn exception(&mut self, error: &StatusError) -> &mut Self {
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
    pub fn converse_content(&mut self, text: &str) -> &mut Self {
        self.event("messageStart", json!({ "role": "assistant" }))
            .event(
                "contentBlockDelta",
                json!({ "contentBlockIndex": 0, "delta": { "text": text } }),
            )
    }

    /// The ConverseStream events that close an answer.
    pub fn converse_end(&mut self, usage: Usage) -> &mut Self {
        self.event("contentBlockStop", json!({ "contentBlockIndex": 0 }))
            .event("messageStop", json!({ "stopReason": "end_turn" }))
            .event(
                "metadata",
                json!({ "usage": usage.json(), "metrics": { "latencyMs": 1 } }),
            )
    }

    /// An InvokeModelWithResponseStream chunk carrying `payload`.
    pub fn chunk(&mut self, payload: &Value) -> &mut Self {
        let bytes = aws_smithy_types::base64::encode(payload.to_string());
        self.event("chunk", json!({ "bytes": bytes }))
    }

    /// The frames as a 200 event-stream response.
    pub fn response(&mut self) -> Response<Body> {
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        bytes_response(200, "application/vnd.amazon.eventstream", body)
    }
}

/// The tokens a request will use: its text at about four characters a token (a body that is not a
/// JSON object counts whole), plus the output budget it asks for (`maxTokens` or `max_tokens`; 512 when
/// it names none).
pub fn estimate_cost(request: Option<&Value>, body_len: usize) -> TokenCost {
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

/// What one event-stream frame means for fallback.
#[derive(Debug)]
pub enum FrameKind {
    /// Content of the answer (`contentBlockStart`, `contentBlockDelta`, `chunk`): from here on, the
    /// answer belongs to this model.
    Content,
    /// Any other event (`messageStart`, `metadata`, ...).
    Other,
    /// An exception event, as the error it stands for (`throttlingException` is a
    /// `ThrottlingException` with status 429).
    Exception(StatusError),
}

/// What `message`, one frame of a Bedrock event stream, means for fallback: the one place that knows
/// which events are content, so that an error before them can still fall back.
pub fn frame_kind(message: &Message) -> FrameKind {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| match h.value() {
                FrameValue::String(s) => Some(s.as_str().to_string()),
                _ => None,
            })
    };
    match header(":message-type").as_deref() {
        Some("exception") | Some("error") => {
            let kind = header(":exception-type")
                .or_else(|| header(":error-code"))
                .unwrap_or_default();
            let mut code = kind.clone();
            if let Some(first) = code.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let json: Value = serde_json::from_slice(message.payload()).unwrap_or_default();
            let mut error = StatusError::new(bedrock_status(&code)).with_code(code);
            if let Some(m) = json.get("message").and_then(|m| m.as_str()) {
                error = error.with_message(m);
            }
            FrameKind::Exception(error)
        }
        _ => match header(":event-type").as_deref() {
            Some("contentBlockStart" | "contentBlockDelta" | "chunk") => FrameKind::Content,
            _ => FrameKind::Other,
        },
    }
}

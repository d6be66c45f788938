//! The gateway's model service: forwards Bedrock wire requests to the model of each attempt.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::BoxError;
use tower_service::Service;

use super::metrics::AttemptLatency;
use tower_model_fallback::ModelRequest;
use tower_model_fallback::classify::{ClassifyResponse, StatusError};
use tower_model_fallback::wire::{FrameKind, Operation, error_from_parts, frame_kind};

/// A request as the gateway received it: cheap to clone for every attempt.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamRequest {
    /// The operation.
    pub operation: Operation,
    /// The raw body.
    pub body: Bytes,
    /// `Content-Type` to forward (InvokeModel).
    pub content_type: Option<HeaderValue>,
    /// `Accept` to forward (InvokeModel).
    pub accept: Option<HeaderValue>,
}

/// An upstream answer. A successful one is ready to stream back to the caller; any other is turned
/// into the error it stands for by [`UpstreamErrors`], the gateway layer's response classifier.
#[derive(Debug)]
pub(crate) struct UpstreamResponse {
    /// The upstream's status.
    pub status: StatusCode,
    /// The headers worth passing on (content type and Bedrock's own `x-amzn-bedrock-*`; for an
    /// error, its type and retry-after hints too).
    pub headers: HeaderMap,
    /// The body; for streams, the events read ahead followed by the rest. Empty for an error.
    pub body: Body,
    /// The first 64 KiB of an error's body, where Bedrock puts its code and message.
    error_body: Bytes,
}

/// Turns a non-2xx [`UpstreamResponse`] into the [`StatusError`] it stands for (Bedrock's code from
/// `x-amzn-errortype` or the body, its message, the retry-after hint), so that the layer classifies
/// and acts on it like the SDK's errors: a 429 cools the model and the request moves on.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UpstreamErrors;

impl ClassifyResponse<UpstreamResponse> for UpstreamErrors {
    fn classify_response(&self, response: UpstreamResponse) -> Result<UpstreamResponse, BoxError> {
        if response.status.is_success() {
            return Ok(response);
        }
        Err(error_from_parts(response.status, &response.headers, &response.error_body).into())
    }
}

#[derive(Clone)]
struct Signer {
    region: String,
    credentials: SharedCredentialsProvider,
}

/// Where the calls of one chain entry go: an endpoint, the model id on the wire, and how to sign.
#[derive(Clone)]
pub(crate) struct Target {
    base: String,
    model_id: String,
    signer: Option<Signer>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("base", &self.base)
            .field("model_id", &self.model_id)
            .field("signing_region", &self.signer.as_ref().map(|s| &s.region))
            .finish()
    }
}

impl Target {
    /// `model_id` at `base` (`http://127.0.0.1:PORT`), unsigned: a fake or a local server.
    pub(crate) fn unsigned(base: &str, model_id: &str) -> Self {
        Target {
            base: base.trim_end_matches('/').to_string(),
            model_id: model_id.to_string(),
            signer: None,
        }
    }

    /// `model_id` at a Bedrock-compatible `base` that wants SigV4 signatures for `region`.
    pub(crate) fn signed(
        base: &str,
        model_id: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
    ) -> Self {
        Target {
            signer: Some(Signer {
                region: region.to_string(),
                credentials,
            }),
            ..Target::unsigned(base, model_id)
        }
    }
}

/// Sends each attempt to its chain entry's [`Target`]: `{base}/model/{model id}/{operation}`.
///
/// Non-2xx answers are responses with the start of their body read, for [`UpstreamErrors`] to
/// classify. Streams are read up to their first content event, so that a throttle event before
/// any content is an error the layer can fall back on. An attempt that has not got that far within
/// the attempt timeout fails with a 408 `ModelTimeoutException`, and the request falls back.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Chain entry keys to their targets.
    targets: Arc<HashMap<String, Target>>,
    attempt_timeout: Duration,
    latency: AttemptLatency,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("targets", &self.targets)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

/// How much of an upstream error body is read for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How much of a stream is held back while waiting for its first content event.
const STREAM_PREFIX_LIMIT: usize = 1024 * 1024;

impl Upstream {
    /// An upstream for `targets` (chain entry keys to targets). TLS trusts the system's CA
    /// certificates only when some target is `https`, so an all-`http` gateway (a fake, a sidecar)
    /// also works on a machine without a CA bundle.
    pub(crate) fn new(
        targets: HashMap<String, Target>,
        connect_timeout: Duration,
        attempt_timeout: Duration,
        latency: AttemptLatency,
    ) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let builder = HttpsConnectorBuilder::new();
        let builder = if targets.values().any(|t| t.base.starts_with("https:")) {
            builder.with_native_roots()?
        } else {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(config)
        };
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Upstream {
            client: Client::builder(TokioExecutor::new()).build(https),
            targets: Arc::new(targets),
            attempt_timeout,
            latency,
        })
    }

    async fn send(
        self,
        target: &Target,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, BoxError> {
        let uri = format!(
            "{}/model/{}/{}",
            target.base,
            encode_segment(&target.model_id),
            request.operation.path()
        );
        let mut http = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(
                header::ACCEPT,
                request
                    .accept
                    .unwrap_or(HeaderValue::from_static("application/json")),
            )
            .header(
                header::CONTENT_TYPE,
                request
                    .content_type
                    .unwrap_or(HeaderValue::from_static("application/json")),
            )
            .body(Full::new(request.body.clone()))?;
        if let Some(signer) = &target.signer {
            signer.sign(&mut http, &request.body).await?;
        }
        let response = self.client.request(http).await.map_err(|e| {
            StatusError::new(502).with_message(format!("upstream unreachable: {e}"))
        })?;
        let (parts, body) = response.into_parts();
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if name == header::CONTENT_TYPE || name.as_str().starts_with("x-amzn-bedrock-") {
                headers.insert(name.clone(), value.clone());
            }
        }
        if !parts.status.is_success() {
            for name in ["x-amzn-errortype", "retry-after", "x-amz-retry-after"] {
                if let Some(value) = parts.headers.get(name) {
                    headers.insert(name, value.clone());
                }
            }
            let error_body = Limited::new(body, ERROR_BODY_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Ok(UpstreamResponse {
                status: parts.status,
                headers,
                body: Body::empty(),
                error_body,
            });
        }
        let body = if request.operation.is_stream() {
            until_content(body).await?
        } else {
            Body::new(body)
        };
        Ok(UpstreamResponse {
            status: parts.status,
            headers,
            body,
            error_body: Bytes::new(),
        })
    }
}

impl Signer {
    async fn sign(&self, request: &mut Request<Full<Bytes>>, body: &[u8]) -> Result<(), BoxError> {
        let credentials = self.credentials.provide_credentials().await?;
        let identity: Identity = credentials.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let uri = request.uri().to_string();
        let signable = SignableRequest::new("POST", uri, headers, SignableBody::Bytes(body))?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

impl Service<ModelRequest<UpstreamRequest>> for Upstream {
    type Response = UpstreamResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pooled client takes any number of requests; bound them with a ConcurrencyLimit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest<UpstreamRequest>) -> Self::Future {
        let this = self.clone();
        let key = request.model().cloned();
        let target = key
            .as_ref()
            .and_then(|model| self.targets.get(model.as_str()))
            .cloned();
        let body = request.into_body();
        let limit = self.attempt_timeout;
        Box::pin(async move {
            let (Some(key), Some(target)) = (key, target) else {
                return Err("request names no configured model".into());
            };
            let started = Instant::now();
            let latency = this.latency.clone();
            let answer = match tokio::time::timeout(limit, this.send(&target, body)).await {
                Ok(answer) => answer,
                Err(_) => Err(StatusError::new(408)
                    .with_code("ModelTimeoutException")
                    .with_message("The model did not answer within the attempt timeout.")
                    .into()),
            };
            let outcome = match &answer {
                Ok(response) => response.status.as_u16().to_string(),
                Err(error) => match error.downcast_ref::<StatusError>() {
                    Some(e) if e.status() == 408 => "timeout".to_string(),
                    Some(e) if e.status() == 502 => "unreachable".to_string(),
                    Some(e) => e.status().to_string(),
                    None => "error".to_string(),
                },
            };
            latency.observe(key.as_str(), &outcome, started.elapsed());
            answer
        })
    }
}

/// Percent-encodes a model id for one path segment (`:` becomes `%3A`), as Bedrock expects.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() + 8);
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Reads an event stream up to its first content event. An exception before it is the attempt's
/// error; the frames read are replayed in front of the rest of the stream.
async fn until_content(mut body: Incoming) -> Result<Body, BoxError> {
    let mut buffer = BytesMut::new();
    let mut parsed = 0;
    loop {
        // Every complete frame in the buffer: the prelude's first 4 bytes are the frame length.
        while buffer.len() - parsed >= 4 {
            let rest = &buffer[parsed..];
            let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if length < 16 {
                return Err(StatusError::new(502)
                    .with_message("malformed event stream from upstream")
                    .into());
            }
            if rest.len() < length {
                break;
            }
            let message = read_message_from(&rest[..length])?;
            parsed += length;
            match frame_kind(&message) {
                FrameKind::Exception(error) => return Err(error.into()),
                FrameKind::Content => {
                    let head = buffer.freeze();
                    let rest = body.into_data_stream();
                    let stream =
                        futures_util::stream::once(async move { Ok::<_, hyper::Error>(head) })
                            .chain(rest);
                    return Ok(Body::from_stream(stream));
                }
                FrameKind::Other => {}
            }
        }
        if buffer.len() > STREAM_PREFIX_LIMIT {
            let error = StatusError::new(502)
                .with_message("upstream stream sent no content in its first MiB");
            return Err(error.into());
        }
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            // The stream ended before any content: pass on what there was.
            None => return Ok(Body::from(buffer.freeze())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_to_a_signed_upstream_carry_a_sigv4_signature() {
        use std::sync::Mutex;

        use aws_credential_types::Credentials;
        use tokio::net::TcpListener;
        use tower::ServiceExt;

        // A stand-in for Bedrock that records what it was sent.
        let seen = Arc::new(Mutex::new(Vec::<(String, HeaderMap)>::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/model/{model}/converse",
            axum::routing::post(move |uri: axum::http::Uri, headers: HeaderMap| async move {
                record.lock().unwrap().push((uri.path().to_string(), headers));
                axum::Json(serde_json::json!({"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}}))
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let credentials = SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ));
        let model = "anthropic.claude-v2:1";
        let target = Target::signed(&base, model, "eu-west-1", credentials);
        let targets = HashMap::from([(model.to_string(), target)]);
        let second = Duration::from_secs(1);
        let upstream = Upstream::new(targets, second, second, AttemptLatency::default()).unwrap();
        let request = ModelRequest::new(UpstreamRequest {
            operation: Operation::Converse,
            body: Bytes::from_static(b"{\"messages\":[]}"),
            content_type: None,
            accept: None,
        })
        .with_model(model);
        let response = upstream.oneshot(request).await.unwrap();
        let body = response.body.collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"{\"output\""));

        let seen = seen.lock().unwrap();
        let (path, headers) = &seen[0];
        assert_eq!(
            path, "/model/anthropic.claude-v2%3A1/converse",
            "model id percent-encoded"
        );
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                && authorization.contains("/eu-west-1/bedrock/aws4_request"),
            "{authorization}"
        );
        assert!(headers.contains_key("x-amz-date"));
    }
}

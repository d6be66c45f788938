//! The fallback layer under a plain hyper server, no axum: `POST /generate` with a prompt as the body
//! answers with the text of the model that served, named in `x-fallback-model`.
//!
//! ```text
//! cargo run --example hyper_server --features testing
//! curl -s -i -d 'Why is the sky blue?' http://127.0.0.1:3000/generate
//! ```
//!
//! It runs on the embedded fake Bedrock, whose primary throttles every third call.

use std::convert::Infallible;
use std::sync::Arc;

use aws_sdk_bedrockruntime::operation::converse::builders::ConverseInputBuilder;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::{BoxError, Layer, ServiceExt};
use tower_model_fallback::bedrock::{ConverseService, converse_text, user_message};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{FakeBedrock, Step};
use tower_model_fallback::{Fallback, FallbackLayer, ModelChain, ModelRequest};

type Models = Fallback<ConverseService>;

/// A fallback chain over `fake`, ready to serve.
pub fn models(fake: &FakeBedrock) -> Result<Models, BoxError> {
    let chain = ModelChain::new(["primary-model", "fallback-model"])?;
    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
    Ok(layer.layer(ConverseService::new(fake.client())))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn generate(models: Models, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/generate" {
        return text(StatusCode::NOT_FOUND, "try POST /generate\n");
    }
    let Ok(prompt) = Limited::new(request.into_body(), 64 * 1024).collect().await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "prompt too large\n");
    };
    let prompt = String::from_utf8_lossy(&prompt.to_bytes()).into_owned();
    let Ok(message) = user_message(prompt) else {
        return text(StatusCode::BAD_REQUEST, "invalid prompt\n");
    };
    let input = ConverseInputBuilder::default().messages(message);
    match models.oneshot(ModelRequest::new(Arc::new(input))).await {
        Ok(served) => {
            let answer = converse_text(served.response());
            let mut response = text(StatusCode::OK, format!("{answer}\n"));
            if let Ok(model) = served.model().as_str().parse() {
                response.headers_mut().insert("x-fallback-model", model);
            }
            response
        }
        Err(error) => text(
            StatusCode::BAD_GATEWAY,
            format!("no model answered: {error}\n"),
        ),
    }
}

/// Accepts connections on `listener` and serves each with hyper's HTTP/1 server.
pub async fn serve(listener: TcpListener, models: Models) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let models = models.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let models = models.clone();
                async move { Ok::<_, Infallible>(generate(models, request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let fake = FakeBedrock::start().await?;
    for _ in 0..100 {
        fake.script("primary-model", [Step::ok(), Step::ok(), Step::throttle()]);
    }
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!(
        "try: curl -s -i -d 'Why is the sky blue?' http://{}/generate",
        listener.local_addr()?
    );
    serve(listener, models(&fake)?).await?;
    Ok(())
}

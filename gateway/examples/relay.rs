//! The least a proxy can do: accept HTTP/1.1 requests and pass each one, unread, to one upstream over
//! pooled connections, then pass the answer back. No routing, signing, fallback, metrics or logs.
//!
//! ```text
//! cargo run --release -p tower-model-fallback-gateway --example relay -- \
//!     --listen 127.0.0.1:9100 --upstream http://127.0.0.1:9000
//! ```
//!
//! `throughput` runs it beside the gateway: its CPU per request is what two socket hops and two
//! HTTP/1.1 codecs cost on the machine, the floor under any gateway's own cost.

use std::convert::Infallible;

use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::BoxError;

/// A bare relay from one address to one upstream.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// The upstream's base URL (`http://HOST:PORT`).
    #[arg(long)]
    upstream: String,
}

type Upstream = Client<HttpConnector, Incoming>;
type Body = BoxBody<Bytes, hyper::Error>;

async fn relay(
    client: Upstream,
    upstream: Uri,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut parts = upstream.into_parts();
    parts.path_and_query = request.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    Ok(match client.request(request).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => {
            let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let upstream: Uri = args.upstream.parse()?;
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let listener = TcpListener::bind(args.listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |request| relay(client.clone(), upstream.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! Serves the example gRPC `Generator` on `127.0.0.1:50051`, over an embedded fake Bedrock.

use tokio::net::TcpListener;
use tower::BoxError;
use tower_model_fallback::testing::{FakeBedrock, Step};
use tower_model_fallback_grpc_example::{Service, serve};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let fake = FakeBedrock::start().await?;
    for _ in 0..100 {
        fake.script("primary-model", [Step::ok(), Step::ok(), Step::throttle()]);
    }
    let listener = TcpListener::bind("127.0.0.1:50051").await?;
    println!("gRPC Generator on http://{}", listener.local_addr()?);
    serve(listener, Service::new(fake.client())?).await?;
    Ok(())
}

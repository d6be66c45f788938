//! The tonic example, served on loopback and called by a real tonic client.

use tower_model_fallback_grpc_example as grpc;

use grpc::pb::GenerateRequest;
use grpc::pb::generator_client::GeneratorClient;
use tokio::net::TcpListener;
use tower_model_fallback::testing::{FakeBedrock, Step};

async fn start(fake: &FakeBedrock) -> GeneratorClient<tonic::transport::Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(grpc::serve(
        listener,
        grpc::Service::new(fake.client()).unwrap(),
    ));
    GeneratorClient::connect(url).await.unwrap()
}

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: "hello".into(),
        max_tokens: 64,
    }
}

#[tokio::test]
async fn unary_generate_falls_back_on_a_throttle() {
    let fake = FakeBedrock::builder()
        .script("primary-model", [Step::throttle()])
        .start()
        .await
        .unwrap();
    let mut client = start(&fake).await;
    let reply = client.generate(request()).await.unwrap().into_inner();
    assert_eq!(reply.model, "fallback-model");
    assert_eq!(reply.attempts, 2);
    assert_eq!(reply.text, "Hello from fallback-model");
}

#[tokio::test]
async fn streaming_falls_back_before_content_and_reports_errors_after() {
    let fake = FakeBedrock::builder()
        .script("primary-model", [Step::throttle_in_stream()])
        .script(
            "fallback-model",
            [
                Step::ok(),
                Step::fail_after_content("ModelStreamErrorException"),
            ],
        )
        .start()
        .await
        .unwrap();
    let mut client = start(&fake).await;

    let mut stream = client
        .generate_stream(request())
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks.push((chunk.model, chunk.text));
    }
    assert_eq!(
        chunks,
        [(
            "fallback-model".to_string(),
            "Hello from fallback-model".to_string()
        )]
    );

    // The primary is cooling now; the fallback fails after its first content.
    let mut stream = client
        .generate_stream(request())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.text, "Hello from fallback-model");
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("mid-stream"),
        "{}",
        status.message()
    );
}

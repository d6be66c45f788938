//! Tracing: a span per request with its id, an event per attempt with model, class and cooldown, and
//! never the payload.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tower::{Layer, ServiceExt};
use tower_model_fallback::policy::AdaptiveCooldown;
use tower_model_fallback::testing::{ScriptedModels, Step};
use tower_model_fallback::{FallbackLayer, ModelChain, ModelRequest, RequestId};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_traced_without_the_payload() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let models = ScriptedModels::new().script("A", [Step::throttle()]);
    let layer = FallbackLayer::new(AdaptiveCooldown::new(ModelChain::new(["A", "B"]).unwrap()));
    let request = ModelRequest::new("TOP-SECRET-PROMPT".to_string()).with_id(RequestId::new(0xabc));
    let served = layer.layer(models).oneshot(request).await.unwrap();
    assert_eq!(served.model(), "B");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("model_fallback{request_id=0000000000000abc}"),
        "{log}"
    );
    assert!(
        log.contains("attempt failed")
            && log.contains("model=A")
            && log.contains("class=throttled"),
        "{log}"
    );
    assert!(log.contains("cooldown_ms=10000"), "{log}");
    assert!(
        log.contains("attempt served") && log.contains("model=B"),
        "{log}"
    );
    assert!(
        !log.contains("TOP-SECRET-PROMPT"),
        "the payload never reaches the logs"
    );
}

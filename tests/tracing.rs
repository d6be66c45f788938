//! Tracing: a span per request with its id, an event per attempt with model, class and cooldown, and
//! never the payload.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tower::{Layer, ServiceExt};
use tower_model_fallback::classify::StatusError;
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

    // Inner errors may quote the request (a validation message echoing the prompt): their text must
    // not reach the logs either.
    let quoting = |status, code: &str| {
        StatusError::new(status)
            .with_code(code)
            .with_message("cannot handle TOP-SECRET-PROMPT")
    };
    let models = ScriptedModels::new()
        .script("A", [Step::throttle()])
        .script(
            "B",
            [
                Step::ok(),
                Step::fail(quoting(503, "ServiceUnavailableException")),
            ],
        )
        .script("C", [Step::fail(quoting(400, "ValidationException"))]);
    let chain = ModelChain::new(["A", "B", "C", "D"]).unwrap();
    let layer = FallbackLayer::new(AdaptiveCooldown::new(chain));
    let request = ModelRequest::new("TOP-SECRET-PROMPT".to_string()).with_id(RequestId::new(0xabc));
    let svc = layer.layer(models);
    let served = svc.clone().oneshot(request).await.unwrap();
    assert_eq!(served.model(), "B");
    let request = ModelRequest::new("TOP-SECRET-PROMPT".to_string()).with_id(RequestId::new(0xdef));
    let err = svc.oneshot(request).await.unwrap_err();
    assert!(
        err.to_string().contains("TOP-SECRET-PROMPT"),
        "the caller still gets the text"
    );

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
        log.contains("model=C") && log.contains("class=fatal"),
        "{log}"
    );
    assert!(log.contains("request failed reason=\"fatal\""), "{log}");
    assert!(
        !log.contains("TOP-SECRET-PROMPT"),
        "the payload never reaches the logs"
    );
}

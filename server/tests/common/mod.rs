//! Helpers shared by the integration tests.
#![allow(dead_code)]

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use kinko::config::ServeConfig;
use kinko::engine::fake::{FakeConfig, FakeEngine};
use kinko::metrics::Metrics;
use kinko::AppState;
use std::sync::Arc;

/// One SSE event: name and JSON data.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: serde_json::Value,
}

/// Parse a whole SSE body.
pub async fn parse_sse<S, B, E>(body: S) -> Vec<Sse>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display + std::fmt::Debug,
{
    Box::pin(body.eventsource())
        .map(|e| {
            let e = e.expect("well-formed SSE");
            Sse {
                data: serde_json::from_str(&e.data).unwrap_or_else(|err| {
                    panic!("event {} has non-JSON data {:?}: {err}", e.event, e.data)
                }),
                event: e.event,
            }
        })
        .collect()
        .await
}

/// The whole body of a response, as text.
pub async fn body_text(resp: axum::response::Response) -> String {
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The text of all `delta` events.
pub fn text_of(events: &[Sse]) -> String {
    events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().expect("delta text").to_string())
        .collect()
}

/// App state over a fake engine with `fake` behaviour and `config`.
pub fn fake_state(fake: FakeConfig, config: ServeConfig) -> (AppState, Arc<FakeEngine>, Metrics) {
    let metrics = Metrics::new();
    let engine = Arc::new(FakeEngine::new(fake, metrics.clone()));
    let state = AppState::new(engine.clone(), "fake", metrics.clone(), config);
    (state, engine, metrics)
}

/// Serve the full router for `state` on a fresh loopback port, as `kinko
/// serve` does (write timeouts, hang-ups noticed).
pub async fn spawn_server(state: AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = kinko::net::GuardedListener::new(listener, state.config.client_write_timeout());
    let header_read_timeout = state.config.header_read_timeout();
    let app = kinko::router(state);
    tokio::spawn(kinko::net::serve(
        listener,
        app,
        header_read_timeout,
        std::future::pending(),
    ));
    addr
}

/// A fresh, empty directory for one test: `kinko-<tag>-<pid>` under the
/// system's temporary directory.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kinko-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The model names in a `/api/tags` body.
pub fn model_names(tags_body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(tags_body).unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// all-MiniLM-L6-v2 as scripts/default-model.sh unpacks it (the test fails,
/// saying how to get it, when it is missing).
pub fn embedding_model_dir() -> std::path::PathBuf {
    let cache = std::env::var("KINKO_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/kinko")
        });
    let dir = cache.join("unpacked").join("all-minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/default-model.sh",
        dir.display()
    );
    dir
}

/// The JSON chunks of an OpenAI SSE answer, checked to end in `[DONE]`.
pub fn openai_chunks(text: &str) -> Vec<serde_json::Value> {
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

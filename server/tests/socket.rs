//! Real-socket tests: a client that drops the connection mid-answer makes
//! the fake engine record a cancellation, and the metrics show it.

mod common;

use app::api::FinishReason;
use common::{fake_state, spawn_server};
use futures::StreamExt;
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn dropping_the_client_mid_stream_cancels_the_generation() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(20),
        min_tokens: 10_000,
        ..FakeConfig::default()
    };
    let config = ServeConfig {
        max_tokens_cap: 10_000,
        ..ServeConfig::default()
    };
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
    assert_eq!(
        metrics.tokens_total(),
        tokens,
        "no tokens after the cancellation"
    );
    assert!(tokens < 100, "generation stopped early ({tokens} tokens)");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_engine_is_silent() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(400),
        ..FakeConfig::default()
    };
    let config = ServeConfig {
        keep_alive_secs: 0.1,
        ..ServeConfig::default()
    };
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

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_generation_cancelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeConfig {
        min_tokens: 3_000_000,
        context_length: 10_000_000,
        ..FakeConfig::default()
    };
    let config = ServeConfig {
        max_tokens_cap: 5_000_000,
        client_write_timeout_secs: 0.5,
        ..ServeConfig::default()
    };
    let (state, engine, metrics) = fake_state(fake, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = kinko::net::GuardedListener::new(listener, state.config.client_write_timeout());
    let header_read_timeout = state.config.header_read_timeout();
    tokio::spawn(kinko::net::serve(
        listener,
        kinko::router(state),
        header_read_timeout,
        std::future::pending(),
    ));

    // A client with a tiny receive buffer that reads a little, then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = json!({"model": "fake:latest", "messages": [{"role": "user", "content": "flood"}], "options": {"max_tokens": 3_000_000}}).to_string();
    let request = format!(
        "POST /api/chat/stream HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let stopped_reading = std::time::Instant::now();

    let log = engine.log();
    while log.cancelled() == 0 {
        assert!(
            stopped_reading.elapsed() < Duration::from_secs(20),
            "the stalled client still holds the engine"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = stopped_reading.elapsed();
    println!(
        "stalled client cut off {} ms after it stopped reading (bound 500 ms)",
        took.as_millis()
    );
    assert_eq!(log.completed(), 0);
    assert!(
        log.tokens() < 3_000_000,
        "the generation did not run to its end"
    );
    for _ in 0..100 {
        if metrics.active_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.active_streams(), 0);
    // The connection was reset: reading on ends (after what was already buffered).
    let mut total = 0usize;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the server closed the connection (drained {total} bytes)"
    );
}

/// A client that hangs up while the engine is still silent (a long prompt)
/// is noticed at once, though nothing is written that could fail: on the
/// UI's SSE route (whose keep-alive comes only every 10 s) and on Ollama's
/// NDJSON route (which has no keep-alive at all).
#[tokio::test]
async fn hanging_up_before_the_first_token_cancels_at_once() {
    let routes = [
        (
            "/api/chat/stream",
            json!({"model": "fake:latest", "messages": [{"role": "user", "content": "a long history"}]}),
        ),
        (
            "/api/chat",
            json!({"model": "fake:latest", "messages": [{"role": "user", "content": "a long history"}]}),
        ),
    ];
    for (path, body) in routes {
        let fake = FakeConfig {
            // The "prompt": 30 s before the first token.
            token_delay: Duration::from_secs(30),
            ..FakeConfig::default()
        };
        let (state, engine, metrics) = fake_state(fake, ServeConfig::default());
        let addr = spawn_server(state).await;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("http://{addr}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(engine.log().cancelled(), 0);
        drop(resp);
        drop(client);
        let hung_up = Instant::now();
        while engine.log().cancelled() == 0 {
            assert!(
                hung_up.elapsed() < Duration::from_secs(3),
                "{path}: the hang-up went unnoticed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let noticed = hung_up.elapsed();
        println!("{path}: hang-up to cancellation {noticed:?}");
        assert!(noticed < Duration::from_millis(1000), "{path}: {noticed:?}");
        while metrics.active_streams() != 0 {
            assert!(hung_up.elapsed() < Duration::from_secs(3), "{path}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

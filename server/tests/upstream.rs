//! Upstreams that misbehave, served in-process: one that ignores
//! `num_predict` and never stops, one that sends a line without end, one
//! that breaks into garbage mid-answer, and a replica that answers 500
//! (the request goes to the other, and it stays in service). The real
//! upstreams (llama.cpp's server, another kinko) are driven by
//! `server/tests/python/test_upstream.py`.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{body_text, parse_sse, text_of, Sse};
use kinko::config::ServeConfig;
use kinko::engine::fake::{FakeConfig, FakeEngine};
use kinko::engine::remote::{RemoteSettings, Upstreams, WithUpstreams};
use kinko::engine::ChatEngine;
use kinko::metrics::Metrics;
use kinko::AppState;
use kinko_parse::upstream::parse_spec;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A mock Ollama-kind upstream; `fails` makes every chat answer 500.
async fn mock(fails: bool) -> String {
    async fn tags() -> Json<Value> {
        Json(json!({"models": [
            {"name": "endless:1"}, {"name": "huge:1"}, {"name": "garbage:1"}, {"name": "flaky:1"}
        ]}))
    }
    async fn chat(State(fails): State<bool>, Json(body): Json<Value>) -> axum::response::Response {
        if fails {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "out of memory"})),
            )
                .into_response();
        }
        let line = |text: &str| {
            Ok::<Bytes, std::io::Error>(Bytes::from(format!(
                "{}\n",
                json!({"message": {"role": "assistant", "content": text}, "done": false})
            )))
        };
        let model = body["model"].as_str().unwrap_or("").to_string();
        let stream: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match model
            .as_str()
        {
            // Ignores num_predict: a piece every millisecond, for ever.
            "endless:1" => Box::pin(async_stream::stream! {
                loop {
                    yield line("x ");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }),
            // A line that never ends.
            "huge:1" => Box::pin(async_stream::stream! {
                for _ in 0..64 {
                    yield Ok(Bytes::from(vec![b'x'; 64 * 1024]));
                }
            }),
            "garbage:1" => Box::pin(futures::stream::iter(vec![
                line("hello"),
                Ok(Bytes::from_static(b"<html>502 Bad Gateway</html>\n")),
            ])),
            _ => Box::pin(futures::stream::iter(vec![
                line("fine"),
                Ok(Bytes::from(format!(
                    "{}\n",
                    json!({"done": true, "done_reason": "stop", "eval_count": 1, "prompt_eval_count": 3})
                ))),
            ])),
        };
        Body::from_stream(stream).into_response()
    }
    use axum::response::IntoResponse;
    let app = Router::new()
        .route("/api/tags", get(tags))
        .route("/api/chat", post(chat))
        .with_state(fails);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn front(specs: &[String]) -> (AppState, Upstreams) {
    let metrics = Metrics::new();
    let upstreams = Upstreams::new(
        specs.iter().map(|s| parse_spec(s).unwrap()).collect(),
        |_| None,
        RemoteSettings {
            connect_timeout: Duration::from_secs(1),
            check_interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(30),
            context_length: 4096,
            allow: Vec::new(),
        },
        metrics.clone(),
    )
    .unwrap();
    upstreams.start().await;
    let local: Arc<dyn ChatEngine> =
        Arc::new(FakeEngine::new(FakeConfig::default(), metrics.clone()));
    let engine = Arc::new(WithUpstreams::new(local, upstreams.clone()));
    let state = AppState::new(engine, "fake", metrics, ServeConfig::default())
        .with_upstreams(upstreams.clone());
    (state, upstreams)
}

async fn ask(state: &AppState, model: &str, max_tokens: usize) -> Vec<Sse> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                      "options": {"max_tokens": max_tokens}});
    let resp = kinko::router(state.clone())
        .oneshot(
            Request::post("/api/chat/stream")
                .header(header::HOST, "127.0.0.1:3000")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::timeout(
        Duration::from_secs(20),
        parse_sse(resp.into_body().into_data_stream()),
    )
    .await
    .expect("the answer ended")
}

#[tokio::test]
async fn an_upstream_that_ignores_max_tokens_is_cut_at_it() {
    let url = mock(false).await;
    let (state, _) = front(&[format!("m=ollama:{url}")]).await;
    let events = ask(&state, "m/endless:1", 10).await;
    let deltas = events.iter().filter(|e| e.event == "delta").count();
    assert!(deltas <= 10, "{deltas} deltas");
    assert_eq!(text_of(&events), "x ".repeat(10));
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["finish_reason"], "length");
    assert_eq!(done.data["usage"]["completion_tokens"], 10);
}

#[tokio::test]
async fn a_line_without_end_or_garbage_ends_the_answer_with_an_error_and_done() {
    let url = mock(false).await;
    let (state, _) = front(&[format!("m=ollama:{url}")]).await;
    // Before the first token, with no other replica: the error says why.
    let events = ask(&state, "m/huge:1", 10).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["meta", "error", "done"]);
    assert_eq!(events[1].data["code"], "upstream");
    let message = events[1].data["message"].as_str().unwrap();
    assert!(message.contains("longer than"), "{message}");
    assert_eq!(events[2].data["finish_reason"], "error");
    // Mid-answer: what came before stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let events = ask(&state, "m/garbage:1", 10).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["meta", "delta", "error", "done"], "{events:?}");
    assert_eq!(text_of(&events), "hello");
    assert_eq!(events[2].data["code"], "upstream");
    assert!(events[2].data["message"]
        .as_str()
        .unwrap()
        .contains("failed mid-answer"));
}

#[tokio::test]
async fn a_replica_that_answers_500_passes_the_request_on_and_stays_in_service() {
    let failing = mock(true).await;
    let working = mock(false).await;
    let (state, upstreams) =
        front(&[format!("m=ollama:{failing}"), format!("m=ollama:{working}")]).await;
    for _ in 0..4 {
        let events = ask(&state, "m/flaky:1", 10).await;
        assert_eq!(text_of(&events), "fine", "{events:?}");
        assert_eq!(events.last().unwrap().data["usage"]["prompt_tokens"], 3);
    }
    let states: Vec<&str> = upstreams.report(true).iter().map(|r| r.state).collect();
    assert_eq!(states, ["up", "up"]);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("kinko_upstream_errors_total{upstream=\"m\",replica=\"")
            && metrics.contains("kind=\"status\"} "),
        "{metrics}"
    );
    // An unknown model of a known upstream is a 404, not a hang.
    let resp = kinko::router(state.clone())
        .oneshot(
            Request::post("/api/chat")
                .header(header::HOST, "127.0.0.1:3000")
                .body(Body::from(
                    json!({"model": "m/nope:1", "messages": [{"role": "user", "content": "x"}]})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(body_text(resp).await.contains("m/nope:1"));
}

/// An upstream that closes the first chat connection without answering,
/// as a server does with a kept-alive connection it times out just as it
/// is reused: the request is sent once more, and answered.
#[tokio::test]
async fn a_connection_closed_unanswered_is_tried_once_more() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let chats = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = chats.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if head.starts_with("GET /api/tags") {
                    json!({"models": [{"name": "m:1"}]}).to_string()
                } else if !head.starts_with("POST /api/chat") {
                    let _ = sock
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                } else if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return; // closed, unanswered
                } else {
                    format!(
                        "{}\n{}\n",
                        json!({"message": {"content": "again"}, "done": false}),
                        json!({"done": true, "done_reason": "stop", "eval_count": 1})
                    )
                };
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let (state, upstreams) = front(&[format!("m=ollama:http://{addr}")]).await;
    let events = ask(&state, "m/m:1", 10).await;
    assert_eq!(text_of(&events), "again", "{events:?}");
    assert_eq!(chats.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(upstreams.report(false)[0].state, "up");
}

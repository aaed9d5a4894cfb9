//! The Ollama and OpenAI API shapes against the fake engine: NDJSON and
//! single-JSON answers with their timing fields, OpenAI's SSE ending in
//! `[DONE]`, each API's error shape, and cancellation of a non-streaming
//! call whose client went away.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{body_text, fake_state, spawn_server};
use http_body_util::BodyExt;
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

async fn post(path: &str, body: Value) -> (StatusCode, String) {
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let resp = kinko::api_router(state)
        .oneshot(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    (resp.status(), body_text(resp).await)
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_and_ends_with_timings() {
    let (status, text) = post(
        "/api/chat",
        json!({"model": "fake", "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2);
    let content: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "hi there");
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["done"] == false && l["created_at"].is_string()));
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["eval_count"], 2);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[k].is_u64(), "{k} in {last}");
    }
}

#[tokio::test]
async fn ollama_generate_without_streaming_is_one_object() {
    let (status, text) = post("/api/generate", json!({"model": "fake:latest", "prompt": "a b c", "stream": false, "options": {"num_predict": 2}})).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["response"], "a b");
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["eval_count"], 2);
}

#[tokio::test]
async fn ollama_errors_are_a_string() {
    let (status, text) = post(
        "/api/chat",
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("not installed"),
        "{v}"
    );
    let (status, text) = post(
        "/api/chat",
        json!({"model": "fake", "messages": [{"role": "tool", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let (status, _) = post("/api/chat", json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn openai_streams_chunks_then_done() {
    let (status, text) = post(
        "/v1/chat/completions",
        json!({"model": "fake", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": [{"type": "text", "text": "yo"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = common::openai_chunks(&text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "yo");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 1);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn openai_errors_have_openai_shape() {
    let (status, text) = post(
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "unknown_model");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(v["error"]["message"].is_string());
    let (status, text) = post(
        "/v1/chat/completions",
        json!({"model": "fake", "messages": [{"role": "user", "content": "hi"}], "n": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_non_streaming_call_is_cancelled_when_its_client_goes_away() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(20),
        min_tokens: 2000,
        ..FakeConfig::default()
    };
    let (state, engine, metrics) = fake_state(fake, ServeConfig::default());
    let addr = spawn_server(state).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "fake", "max_tokens": 2000, "messages": [{"role": "user", "content": "go"}]}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "stream": false, "options": {"num_predict": 2000}, "messages": [{"role": "user", "content": "go"}]}),
        ),
    ] {
        let before = engine.log().cancelled();
        let client = reqwest::Client::new();
        let call = tokio::spawn(
            client
                .post(format!("http://{addr}{path}"))
                .json(&body)
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        call.abort();
        let _ = call.await;
        drop(client);
        for _ in 0..200 {
            if engine.log().cancelled() == before + 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            engine.log().cancelled(),
            before + 1,
            "{path}: the engine saw the cancellation"
        );
    }
    assert_eq!(engine.log().completed(), 0);
    assert_eq!(metrics.active_streams(), 0);
}

#[tokio::test]
async fn head_on_the_root_answers_like_ollama() {
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let resp = kinko::router(state)
        .oneshot(Request::head("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let resp = kinko::api_router(state)
        .oneshot(Request::get("/api/version").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn stop_strings_end_the_answer_unseen_and_stop_the_engine() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(5),
        min_tokens: 500,
        ..FakeConfig::default()
    };
    let (state, engine, _) = fake_state(fake, ServeConfig::default());
    let app = kinko::api_router(state);
    let resp = app
        .oneshot(
            Request::post("/api/chat")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"model": "fake", "stream": false, "options": {"stop": ["word3"], "num_predict": 500}, "messages": [{"role": "user", "content": "go"}]}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["message"]["content"], "go word1 word2 ");
    assert_eq!(v["done_reason"], "stop");
    for _ in 0..100 {
        if engine.log().cancelled() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        engine.log().cancelled(),
        1,
        "the engine stopped at the stop string"
    );
    // OpenAI's `stop` takes a plain string too.
    let (status, text) = post(
        "/v1/chat/completions",
        json!({"model": "fake", "stop": "said", "messages": [{"role": "user", "content": "You said it"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You ");
}

/// Found by the fuzzer (fuzz/corpus/requests/regression-long-float-roundtrip):
/// a `top_p` written with 72 digits. serde_json's default float parsing is
/// best effort, so the value it read and the value its own shortest encoding
/// of it read back as differed in the last bit; with `float_roundtrip` (the
/// server's serde_json) both are the nearest double.
#[test]
fn a_long_float_reads_back_the_same_through_kinkos_wire_form() {
    use kinko_parse::api::ChatRequest;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"top_p":0.911111111111111111111111111111111111111111111111111111111111111111111111}}"#;
    let req: ChatRequest = serde_json::from_str(body).unwrap();
    let again: ChatRequest = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
    assert_eq!(again, req);
    // The nearest double to 0.9111… = 41/45 (a division rounds to nearest).
    assert_eq!(req.options.top_p, Some(41.0 / 45.0));
}

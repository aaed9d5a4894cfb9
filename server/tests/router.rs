//! Router tests against the fake engine: statuses, JSON errors, SSE framing
//! and event order, through `router(state).oneshot(request)`.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{body_text, fake_state, parse_sse, text_of};
use http_body_util::BodyExt;
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use serde_json::{json, Value};
use tower::ServiceExt;

fn app_with(fake: FakeConfig, config: ServeConfig) -> axum::Router {
    kinko::api_router(fake_state(fake, config).0)
}

fn app() -> axum::Router {
    app_with(FakeConfig::default(), ServeConfig::default())
}

fn post_json(body: impl Into<Body>) -> Request<Body> {
    Request::post("/api/chat/stream")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn json_error(resp: axum::response::Response) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "error bodies are JSON"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    (status, v)
}

fn hello() -> Value {
    json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hello world"}]})
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_json_error() {
    let too_big = format!(
        r#"{{"model":"fake:latest","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        ("malformed json", post_json("{not json"), StatusCode::BAD_REQUEST, "malformed_json"),
        ("truncated json", post_json(r#"{"model": "fake:latest", "messages": ["#), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            "wrong content type",
            Request::post("/api/chat/stream").header(header::CONTENT_TYPE, "text/plain").body(Body::from(hello().to_string())).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        ("empty messages", post_json(json!({"model": "fake:latest", "messages": []}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("missing messages", post_json(json!({"model": "fake:latest"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("unknown role", post_json(json!({"model": "fake:latest", "messages": [{"role": "wizard", "content": "hi"}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("non-string content", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": 42}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("last message not from the user", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("blank user message", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "   "}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("temperature out of range", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": 9}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("max_tokens over the cap", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"max_tokens": 1_000_000}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("unknown option", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"temprature": 1}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("unknown model", post_json(json!({"model": "nope:1b", "messages": [{"role": "user", "content": "hi"}]}).to_string()), StatusCode::NOT_FOUND, "unknown_model"),
        ("model name with a path", post_json(json!({"model": "../../etc", "messages": [{"role": "user", "content": "hi"}]}).to_string()), StatusCode::NOT_FOUND, "unknown_model"),
        ("body over the limit", post_json(too_big), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("wrong method", Request::get("/api/chat/stream").body(Body::empty()).unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("unknown route", Request::get("/api/chat/nothing-here").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "not_found"),
        ("empty body", post_json(""), StatusCode::BAD_REQUEST, "malformed_json"),
        ("json but not an object", post_json("[1, 2, 3]"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (
            "no content type",
            Request::post("/api/chat/stream").body(Body::from(hello().to_string())).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        ("messages not a list", post_json(json!({"model": "fake:latest", "messages": "hi"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("missing model", post_json(json!({"messages": [{"role": "user", "content": "hi"}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("role missing", post_json(json!({"model": "fake:latest", "messages": [{"content": "hi"}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("content null", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": null}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("negative temperature", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": -0.5}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("top_p zero", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"top_p": 0}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("top_p above one", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"top_p": 1.5}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("top_k zero", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"top_k": 0}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("top_k negative", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"top_k": -3}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("max_tokens zero", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"max_tokens": 0}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("repeat_penalty out of range", post_json(json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": {"repeat_penalty": 7}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("empty model name", post_json(json!({"model": "", "messages": [{"role": "user", "content": "hi"}]}).to_string()), StatusCode::NOT_FOUND, "unknown_model"),
        ("wrong method on models", Request::post("/api/models").body(Body::empty()).unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("delete on the stream", Request::delete("/api/chat/stream").body(Body::empty()).unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    assert!(cases.len() >= 25, "the table covers at least 25 cases");
    let mut table = Vec::new();
    for (name, req, status, code) in cases {
        let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
        let resp = kinko::api_router(state).oneshot(req).await.unwrap();
        let (got, body) = json_error(resp).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert_eq!(engine.log().started(), 0, "{name}: nothing is generated");
        table.push(format!("| {name} | {} | {code} |", got.as_u16()));
    }
    // The table for the issue note: `cargo test -- --nocapture bad_input`.
    println!(
        "| case | status | code |\n|---|---|---|\n{}",
        table.join("\n")
    );
}

#[tokio::test]
async fn nothing_is_generated_for_bad_input() {
    let (state, engine, metrics) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::api_router(state);
    let resp = app
        .oneshot(post_json(
            json!({"model": "fake:latest", "messages": []}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(engine.log().started(), 0);
    assert_eq!(metrics.tokens_total(), 0);
}

#[tokio::test]
async fn a_chat_streams_meta_deltas_done_as_named_sse_events() {
    let resp = app().oneshot(post_json(hello().to_string())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let raw = String::from_utf8(bytes.to_vec()).unwrap();
    // Framing: each event is `event: NAME\ndata: JSON\n\n`.
    assert!(raw.starts_with("event: meta\ndata: {"), "{raw}");
    assert!(raw.contains("\n\nevent: delta\ndata: {\"text\":"), "{raw}");
    assert!(raw.ends_with("}\n\n"), "{raw}");
    let events = parse_sse(futures::stream::iter([Ok::<_, std::io::Error>(bytes)])).await;
    let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"meta"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(
        names[1..names.len() - 1].iter().all(|n| *n == "delta"),
        "{names:?}"
    );
    assert_eq!(text_of(&events), "hello world");
    let meta = &events[0].data;
    assert_eq!(meta["model"], "fake:latest");
    assert_eq!(meta["trimmed_messages"], 0);
    assert_eq!(meta["max_tokens"], 512);
    let done = &events.last().unwrap().data;
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["usage"]["completion_tokens"], names.len() - 2);
    assert_eq!(done["usage"]["prompt_tokens"], meta["prompt_tokens"]);
    assert!(done["timings"]["ttft_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn an_engine_failure_mid_answer_is_an_error_event() {
    let fake = FakeConfig {
        fail_after: Some(1),
        ..FakeConfig::default()
    };
    let (state, _, metrics) = fake_state(fake, ServeConfig::default());
    let resp = kinko::api_router(state)
        .oneshot(post_json(hello().to_string()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = parse_sse(resp.into_body().into_data_stream()).await;
    let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["meta", "delta", "error"]);
    assert_eq!(events[2].data["code"], "engine_error");
    assert!(events[2].data["message"]
        .as_str()
        .unwrap()
        .contains("scripted failure"));
    assert_eq!(metrics.finished_total(app::api::FinishReason::Error), 1);
    assert_eq!(metrics.active_streams(), 0);
}

#[tokio::test]
async fn max_tokens_ends_with_length() {
    let body = json!({"model": "fake", "messages": [{"role": "user", "content": "a b c d e f g"}], "options": {"max_tokens": 4}});
    let resp = app().oneshot(post_json(body.to_string())).await.unwrap();
    let events = parse_sse(resp.into_body().into_data_stream()).await;
    assert_eq!(events.iter().filter(|e| e.event == "delta").count(), 4);
    assert_eq!(events.last().unwrap().data["finish_reason"], "length");
}

#[tokio::test]
async fn long_history_is_trimmed_and_meta_says_so() {
    let mut messages = vec![json!({"role": "system", "content": "be brief"})];
    for i in 0..400 {
        messages
            .push(json!({"role": "user", "content": format!("question {i} {}", "w ".repeat(20))}));
        messages.push(json!({"role": "assistant", "content": format!("answer {i}")}));
    }
    messages.push(json!({"role": "user", "content": "the newest question"}));
    let body =
        json!({"model": "fake:latest", "messages": messages, "options": {"max_tokens": 100}});
    let resp = app().oneshot(post_json(body.to_string())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = parse_sse(resp.into_body().into_data_stream()).await;
    let meta = &events[0].data;
    let dropped = meta["trimmed_messages"].as_u64().unwrap();
    assert!(dropped > 0 && dropped < 800, "{meta}");
    assert!(
        meta["prompt_tokens"].as_u64().unwrap() <= 4096 - 100 - 16,
        "{meta}"
    );
    assert!(text_of(&events).contains("the newest question"));
}

#[tokio::test]
async fn a_message_that_cannot_fit_alone_is_a_context_overflow() {
    let body = json!({"model": "fake:latest", "messages": [{"role": "user", "content": "w ".repeat(5000)}]});
    let resp = app().oneshot(post_json(body.to_string())).await.unwrap();
    let (status, v) = json_error(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "context_overflow");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("4096"),
        "{v}"
    );
}

#[tokio::test]
async fn models_health_and_metrics() {
    let resp = app()
        .oneshot(Request::get("/api/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["models"][0]["name"], "fake:latest");
    assert_eq!(v["models"][0]["context_length"], 4096);

    let resp = app()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::api_router(state);
    let resp = app
        .clone()
        .oneshot(post_json(hello().to_string()))
        .await
        .unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    let resp = app
        .oneshot(
            Request::builder()
                .method(Method::GET)
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = body_text(resp).await;
    for line in [
        "kinko_streams_started_total 1",
        "kinko_streams_finished_total{reason=\"stop\"} 1",
        "kinko_streams_finished_total{reason=\"cancelled\"} 0",
        "kinko_streams_active 0",
        "kinko_tokens_generated_total 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// The `meta` of one answer to `body`.
async fn meta_of(app: axum::Router, body: Value) -> Value {
    let resp = app.oneshot(post_json(body.to_string())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = parse_sse(resp.into_body().into_data_stream()).await;
    assert_eq!(events[0].event, "meta");
    events[0].data.clone()
}

#[tokio::test]
async fn the_context_size_is_the_requests_else_the_servers_default() {
    let fake = || FakeConfig {
        context_length: 8192,
        ..FakeConfig::default()
    };
    let ask = |options: Value| json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}], "options": options});
    let cases = [
        // The server's default, like Ollama's num_ctx.
        (json!({}), 4096),
        // The request's own, never past the model's window; 0: all of it.
        (json!({"num_ctx": 2048}), 2048),
        (json!({"num_ctx": 8192}), 8192),
        (json!({"num_ctx": 100000}), 8192),
        (json!({"num_ctx": 0}), 8192),
        // A large max_tokens grows the default to leave 1,024 prompt tokens.
        (json!({"max_tokens": 4000}), 4000 + 16 + 1024),
    ];
    for (options, window) in cases {
        let meta = meta_of(
            app_with(fake(), ServeConfig::default()),
            ask(options.clone()),
        )
        .await;
        assert_eq!(meta["context_window"], window, "{options} -> {meta}");
        assert_eq!(meta["model_context_window"], 8192);
    }
    // A small chosen context with the server's default answer length: the
    // answer gets at most half the window.
    let config = ServeConfig {
        default_max_tokens: 2000,
        max_tokens_cap: 4096,
        ..ServeConfig::default()
    };
    let meta = meta_of(app_with(fake(), config), ask(json!({"num_ctx": 1024}))).await;
    assert_eq!(meta["context_window"], 1024);
    assert_eq!(meta["max_tokens"], 512);
    // --default-num-ctx 0: the model's whole window.
    let config = ServeConfig {
        default_num_ctx: 0,
        ..ServeConfig::default()
    };
    let meta = meta_of(app_with(fake(), config), ask(json!({}))).await;
    assert_eq!(meta["context_window"], 8192);
}

#[tokio::test]
async fn a_history_too_slow_to_read_in_time_is_trimmed_and_meta_says_why() {
    // The model reads 50 prompt tokens a second; the first-token timeout is
    // 10 s, so a prompt may take 8 s: 400 tokens.
    let fake = FakeConfig {
        context_length: 8192,
        prompt_cost: Some(app::api::PromptCost {
            per_token: 0.02,
            per_token_squared: 0.0,
            samples: 3,
            longest: 8192,
        }),
        ..FakeConfig::default()
    };
    let config = ServeConfig {
        first_token_timeout_secs: 10.0,
        ..ServeConfig::default()
    };
    let mut messages = vec![json!({"role": "system", "content": "be brief"})];
    for i in 0..40 {
        messages
            .push(json!({"role": "user", "content": format!("question {i} {}", "w ".repeat(20))}));
        messages.push(json!({"role": "assistant", "content": format!("answer {i}")}));
    }
    messages.push(json!({"role": "user", "content": "the newest question"}));
    let body = json!({"model": "fake:latest", "messages": messages});
    let meta = meta_of(app_with(fake.clone(), config.clone()), body.clone()).await;
    assert_eq!(meta["trimmed_for_time"], true, "{meta}");
    assert!(meta["prompt_tokens"].as_u64().unwrap() <= 400, "{meta}");
    assert!(meta["trimmed_messages"].as_u64().unwrap() > 0, "{meta}");
    // With time to spare, the window alone decides.
    let patient = ServeConfig {
        first_token_timeout_secs: 600.0,
        ..config.clone()
    };
    let meta = meta_of(app_with(fake.clone(), patient), body).await;
    assert_eq!(meta["trimmed_for_time"], false, "{meta}");
    assert_eq!(meta["trimmed_messages"], 0, "{meta}");
    // A newest message too slow on its own is still answered.
    let alone = json!({"model": "fake:latest", "messages": [{"role": "user", "content": "w ".repeat(1000)}]});
    let meta = meta_of(app_with(fake, config), alone).await;
    assert!(meta["prompt_tokens"].as_u64().unwrap() > 400, "{meta}");
}

#[tokio::test]
async fn the_models_list_carries_the_default_context_size_and_prompt_costs() {
    let get = |app: axum::Router| async move {
        let resp = app
            .oneshot(Request::get("/api/models").body(Body::empty()).unwrap())
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&resp.into_body().collect().await.unwrap().to_bytes())
            .unwrap()
    };
    let v = get(app()).await;
    assert_eq!(v["default_num_ctx"], 4096);
    assert_eq!(v["prompt_costs"], json!([]), "nothing measured yet");
    let fake = FakeConfig {
        prompt_cost: Some(app::api::PromptCost {
            per_token: 0.01,
            per_token_squared: 1e-6,
            samples: 2,
            longest: 4096,
        }),
        ..FakeConfig::default()
    };
    let v = get(app_with(fake, ServeConfig::default())).await;
    assert_eq!(v["prompt_costs"][0]["model"], "fake:latest");
    assert_eq!(v["prompt_costs"][0]["cost"]["per_token"], 0.01);
}

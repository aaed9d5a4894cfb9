//! Every field a client sends is honoured or refused (issue 16), against
//! the fake engine: one error shape per API family on every path (404,
//! 405, 401, 403 included), Ollama's probe of `/`, answer formats reaching
//! the engine, capability refusals in Ollama's words, OpenAI's legacy
//! `/v1/completions`, blobs and `/api/create` with `files`, and a replay of
//! the requests Open WebUI sends.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{body_text, fake_state, spawn_server, temp_dir};
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use kinko::models::ModelStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// Which API family a path belongs to, by the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    Ollama,
    OpenAi,
    Kinko,
}

/// Check `body` has `family`'s error shape and answer its message.
fn message_of(family: Family, body: &Value) -> String {
    let e = &body["error"];
    match family {
        Family::Ollama => {
            assert!(
                e.is_string(),
                "Ollama's shape is {{\"error\": \"…\"}}: {body}"
            );
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            e.as_str().unwrap().to_string()
        }
        Family::OpenAi => {
            assert!(e["message"].is_string(), "{body}");
            assert!(e["type"].is_string(), "{body}");
            assert!(e.get("code").is_some(), "{body}");
            e["message"].as_str().unwrap().to_string()
        }
        Family::Kinko => {
            assert!(e["code"].is_string(), "{body}");
            assert!(e.get("type").is_none(), "{body}");
            e["message"].as_str().unwrap().to_string()
        }
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = body_text(resp).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, format!("{kind}\n{text}"), v)
}

fn json_req(method: Method, path: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn bare(method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:3000")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn every_path_answers_errors_in_its_familys_shape() {
    use Family::*;
    // Not found and wrong method, under each family.
    let cases: Vec<(Family, Method, &str, StatusCode)> = vec![
        (
            Ollama,
            Method::GET,
            "/api/nothing-here",
            StatusCode::NOT_FOUND,
        ),
        (Ollama, Method::POST, "/api/blobs", StatusCode::NOT_FOUND),
        (
            Ollama,
            Method::POST,
            "/api/tags",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Ollama,
            Method::GET,
            "/api/chat",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Ollama,
            Method::GET,
            "/api/generate",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Ollama,
            Method::PUT,
            "/api/show",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Ollama,
            Method::GET,
            "/api/delete",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Ollama,
            Method::GET,
            "/api/blobs/sha256:00",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            OpenAi,
            Method::GET,
            "/v1/nothing-here",
            StatusCode::NOT_FOUND,
        ),
        (
            OpenAi,
            Method::GET,
            "/v1/chat/completions",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            OpenAi,
            Method::GET,
            "/v1/completions",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            OpenAi,
            Method::POST,
            "/v1/models",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            OpenAi,
            Method::GET,
            "/v1/embeddings",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Kinko,
            Method::GET,
            "/api/chat/nothing-here",
            StatusCode::NOT_FOUND,
        ),
        (
            Kinko,
            Method::GET,
            "/api/chat/stream",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Kinko,
            Method::POST,
            "/api/models",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Kinko,
            Method::POST,
            "/health",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    for app in [kinko::api_router(state.clone()), kinko::router(state)] {
        for (family, method, path, status) in &cases {
            let (got, text, body) = send(&app, bare(method.clone(), path)).await;
            assert_eq!(got, *status, "{method} {path}: {text}");
            assert!(
                text.starts_with("application/json"),
                "{method} {path}: {text}"
            );
            let message = message_of(*family, &body);
            assert!(!message.is_empty(), "{method} {path}");
        }
    }

    // 401 without the key, 403 from a foreign Host, in each family's shape.
    let keyed = ServeConfig {
        api_key: Some("sesame-open-up".into()),
        ..ServeConfig::default()
    };
    let (state, engine, _) = fake_state(FakeConfig::default(), keyed);
    let app = kinko::api_router(state);
    let chat = json!({"model": "fake", "messages": [{"role": "user", "content": "hi"}]});
    for (family, path) in [
        (Ollama, "/api/chat"),
        (Ollama, "/api/tags"),
        (OpenAi, "/v1/chat/completions"),
        (OpenAi, "/v1/models"),
        (Kinko, "/api/chat/stream"),
        (Kinko, "/api/models"),
    ] {
        let method = if path.contains("chat") {
            Method::POST
        } else {
            Method::GET
        };
        let (got, text, body) = send(&app, json_req(method.clone(), path, chat.clone())).await;
        assert_eq!(got, StatusCode::UNAUTHORIZED, "{path}: {text}");
        message_of(family, &body);
        let mut req = json_req(method, path, chat.clone());
        req.headers_mut()
            .insert(header::HOST, "attacker.example:3000".parse().unwrap());
        req.headers_mut().insert(
            header::AUTHORIZATION,
            "Bearer sesame-open-up".parse().unwrap(),
        );
        let (got, text, body) = send(&app, req).await;
        assert_eq!(got, StatusCode::FORBIDDEN, "{path}: {text}");
        message_of(family, &body);
    }
    assert_eq!(engine.log().started(), 0);
}

#[tokio::test]
async fn the_root_says_ollama_is_running_to_clients_and_serves_browsers_the_page() {
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    for app in [
        kinko::router(state.clone()),
        kinko::api_router(state.clone()),
    ] {
        for (method, accept) in [
            (Method::GET, None),
            (Method::GET, Some("*/*")),
            (Method::GET, Some("application/json")),
            (Method::HEAD, None),
        ] {
            let mut req = bare(method.clone(), "/");
            if let Some(a) = accept {
                req.headers_mut().insert(header::ACCEPT, a.parse().unwrap());
            }
            let (status, text, _) = send(&app, req).await;
            assert_eq!(status, StatusCode::OK, "{method} {accept:?}");
            assert!(
                text.starts_with("text/plain"),
                "{method} {accept:?}: {text}"
            );
            if method == Method::GET {
                assert!(text.ends_with("\nOllama is running"), "{text}");
            }
        }
    }
    // A browser asks for HTML and gets the chat page.
    let mut req = bare(Method::GET, "/");
    req.headers_mut().insert(
        header::ACCEPT,
        "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
    );
    let (status, text, _) = send(&kinko::router(state), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.starts_with("text/html"),
        "{}",
        &text[..80.min(text.len())]
    );
    assert!(text.contains("kinko"));
}

#[tokio::test]
async fn answer_formats_reach_the_engine_and_bad_ones_are_refused() {
    let schema =
        json!({"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]});
    let user = json!([{"role": "user", "content": "how old?"}]);
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "format": "json", "stream": false}),
            json!({"type": "object"}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "format": schema, "stream": false}),
            schema.clone(),
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "how old?", "format": "json", "stream": false}),
            json!({"type": "object"}),
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "how old?", "format": schema}),
            schema.clone(),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "response_format": {"type": "json_object"}}),
            json!({"type": "object"}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "age", "schema": schema}}}),
            schema.clone(),
        ),
        (
            "/v1/completions",
            json!({"model": "fake", "prompt": "how old?", "response_format": {"type": "json_object"}}),
            json!({"type": "object"}),
        ),
    ];
    for (path, body, expected) in cases {
        let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
        let app = kinko::api_router(state);
        let (status, text, _) = send(&app, json_req(Method::POST, path, body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{path} {body}: {text}");
        let formats = engine.log().formats();
        assert_eq!(formats.len(), 1, "{path}");
        let got = formats[0]
            .as_ref()
            .unwrap_or_else(|| panic!("{path} {body}: the format reached the engine"));
        assert_eq!(got.schema(), expected, "{path} {body}");
    }
    // Without a format, none reaches the engine; text stays text.
    let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::api_router(state);
    let plain = json!({"model": "fake", "messages": user, "response_format": {"type": "text"}});
    let (status, _, _) = send(&app, json_req(Method::POST, "/v1/chat/completions", plain)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(engine.log().formats(), vec![None]);

    // Formats that cannot constrain anything are refused before the engine.
    let bad: Vec<(&str, Value, Family)> = vec![
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "format": "yaml"}),
            Family::Ollama,
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "format": {"type": "no-such-type"}}),
            Family::Ollama,
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "x", "format": 42}),
            Family::Ollama,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "response_format": {"type": "xml"}}),
            Family::OpenAi,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "response_format": {"type": "json_schema"}}),
            Family::OpenAi,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}}),
            Family::OpenAi,
        ),
    ];
    for (path, body, family) in bad {
        let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
        let app = kinko::api_router(state);
        let (status, text, v) = send(&app, json_req(Method::POST, path, body.clone())).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{path} {body}: {text}"
        );
        message_of(family, &v);
        assert_eq!(engine.log().started(), 0, "{path} {body}");
    }
}

#[tokio::test]
async fn what_a_model_cannot_do_is_refused_in_ollamas_words() {
    let user = json!([{"role": "user", "content": "weather in Paris?"}]);
    let tool = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let cases: Vec<(&str, Value, Family, &str)> = vec![
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "tools": tool}),
            Family::Ollama,
            "fake:latest does not support tools",
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "think": true}),
            Family::Ollama,
            "\"fake:latest\" does not support thinking",
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "what is this?", "images": [pixel]}]}),
            Family::Ollama,
            "fake:latest does not support vision",
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "x", "images": [pixel]}),
            Family::Ollama,
            "fake:latest does not support vision",
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "def f(", "suffix": "return 1"}),
            Family::Ollama,
            "fake:latest does not support insert",
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "x", "think": true}),
            Family::Ollama,
            "\"fake:latest\" does not support thinking",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "tools": tool}),
            Family::OpenAi,
            "fake:latest does not support tools",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "reasoning_effort": "high"}),
            Family::OpenAi,
            "\"fake:latest\" does not support thinking",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{pixel}")}}]}]}),
            Family::OpenAi,
            "fake:latest does not support vision",
        ),
        (
            "/v1/completions",
            json!({"model": "fake", "prompt": "def f(", "suffix": "x"}),
            Family::OpenAi,
            "fake:latest does not support insert",
        ),
        (
            "/api/chat/stream",
            json!({"model": "fake", "messages": user, "tools": tool}),
            Family::Kinko,
            "fake:latest does not support tools",
        ),
    ];
    for (path, body, family, message) in cases {
        let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
        let app = kinko::api_router(state);
        let (status, text, v) = send(&app, json_req(Method::POST, path, body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {text}");
        assert_eq!(message_of(family, &v), message, "{path}");
        assert_eq!(
            engine.log().started(),
            0,
            "{path}: nothing silently dropped"
        );
    }
    // Asking for none of it is no refusal: `think: false`, no tools with
    // `tool_choice: "none"`, an empty tool list.
    let fine: Vec<(&str, Value)> = vec![
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "think": false, "stream": false}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": user, "tools": [], "stream": false}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "messages": user, "tools": tool, "tool_choice": "none"}),
        ),
    ];
    for (path, body) in fine {
        let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
        let app = kinko::api_router(state);
        let (status, text, _) = send(&app, json_req(Method::POST, path, body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{path} {body}: {text}");
        assert_eq!(engine.log().started(), 1);
    }
}

#[tokio::test]
async fn legacy_completions_take_a_prompt_and_answer_text() {
    let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::api_router(state);
    let body = json!({"model": "fake", "prompt": "once upon a time", "max_tokens": 3});
    let (status, text, v) = send(&app, json_req(Method::POST, "/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(
        v["choices"][0]["text"], "once upon a",
        "the fake echoes the prompt"
    );
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(engine.log().started(), 1);

    // Streaming: SSE chunks of text, then `[DONE]`.
    let body = json!({"model": "fake", "prompt": ["once upon a time"], "stream": true});
    let (status, text, _) = send(&app, json_req(Method::POST, "/v1/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with("text/event-stream"), "{text}");
    let chunks = common::openai_chunks(&text);
    let joined: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(joined, "once upon a time");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // The same guard rails: what it cannot honour is refused.
    for body in [
        json!({"model": "fake", "prompt": "x", "n": 2}),
        json!({"model": "fake", "prompt": "x", "echo": true}),
        json!({"model": "fake", "prompt": ["a", "b"]}),
        json!({"model": "fake", "prompt": "x", "temperature": 9}),
        json!({"model": "fake", "prompt": ""}),
        json!({"model": "nope", "prompt": "x"}),
        json!({"prompt": "x"}),
    ] {
        let (status, text, v) = send(
            &app,
            json_req(Method::POST, "/v1/completions", body.clone()),
        )
        .await;
        assert!(status.is_client_error(), "{body}: {text}");
        message_of(Family::OpenAi, &v);
    }
    assert_eq!(engine.log().started(), 2);
}

/// A state over the fake engine with a model store under a fresh directory.
fn with_store(tag: &str, config: ServeConfig) -> (kinko::AppState, ModelStore) {
    let home = temp_dir(tag);
    let store = ModelStore::new(&home);
    let (state, _, _) = fake_state(FakeConfig::default(), config);
    (state.with_store(store.clone()), store)
}

fn tiny_gguf(dir: &std::path::Path) -> (Vec<u8>, String) {
    let path = dir.join("tiny.gguf");
    kinko::models::gguf::write_tiny_test_model(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let digest = format!("sha256:{}", kinko::models::hex(&Sha256::digest(&bytes)));
    (bytes, digest)
}

fn blob_req(method: Method, digest: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("/api/blobs/{digest}"))
        .header(header::HOST, "127.0.0.1:3000")
        .body(Body::from(bytes))
        .unwrap()
}

/// Files in the blobs directory (temporary uploads included).
fn blob_files(store: &ModelStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.blobs_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn blobs_are_checked_then_created_from() {
    use std::os::unix::fs::MetadataExt;
    let config = ServeConfig {
        max_blob_bytes: 1 << 20,
        ..ServeConfig::default()
    };
    let (state, store) = with_store("blobs", config);
    let app = kinko::api_router(state);
    let (bytes, digest) = tiny_gguf(&temp_dir("blobs-client"));

    let (status, _, _) = send(&app, bare(Method::HEAD, &format!("/api/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not uploaded yet");

    // Refusals leave nothing behind.
    let other = format!("sha256:{}", "ab".repeat(32));
    let junk = b"not a model at all".to_vec();
    let junk_digest = format!("sha256:{}", kinko::models::hex(&Sha256::digest(&junk)));
    let big = vec![0u8; (1 << 20) + 1];
    let big_digest = format!("sha256:{}", kinko::models::hex(&Sha256::digest(&big)));
    for (digest, body, status, code) in [
        (
            other.as_str(),
            bytes.clone(),
            StatusCode::BAD_REQUEST,
            "digest mismatch",
        ),
        (
            junk_digest.as_str(),
            junk,
            StatusCode::BAD_REQUEST,
            "not a usable GGUF model",
        ),
        (
            big_digest.as_str(),
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit",
        ),
        (
            "sha256:..%2F..%2Fescape",
            bytes.clone(),
            StatusCode::BAD_REQUEST,
            "invalid digest",
        ),
        (
            "md5:abc",
            bytes.clone(),
            StatusCode::BAD_REQUEST,
            "invalid digest",
        ),
    ] {
        let (got, text, v) = send(&app, blob_req(Method::POST, digest, body)).await;
        assert_eq!(got, status, "{digest}: {text}");
        assert!(message_of(Family::Ollama, &v).contains(code), "{text}");
        assert!(
            blob_files(&store).is_empty(),
            "{digest}: {:?}",
            blob_files(&store)
        );
    }

    let (status, text, _) = send(&app, blob_req(Method::POST, &digest, bytes.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (status, _, _) = send(&app, bare(Method::HEAD, &format!("/api/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&app, blob_req(Method::POST, &digest, bytes.clone())).await;
    assert_eq!(status, StatusCode::OK, "already there");
    assert_eq!(blob_files(&store), vec![digest.replace(':', "-")]);

    // `/api/create` with `files` naming the blob, as Ollama's CLI sends it.
    let create = json!({
        "model": "uploaded",
        "files": {"tiny.gguf": digest},
        "system": "You are terse.",
        "parameters": {"temperature": 0.2, "stop": ["<end>"]},
        "stream": false,
    });
    let (status, text, v) = send(&app, json_req(Method::POST, "/api/create", create)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["status"], "success");
    let model = store.get("uploaded").expect("the model is installed");
    assert_eq!(model.manifest.digest, digest);
    assert_eq!(model.manifest.system.as_deref(), Some("You are terse."));
    assert_eq!(
        std::fs::metadata(model.gguf_path()).unwrap().nlink(),
        2,
        "the model hard-links the blob"
    );

    // The older form: a Modelfile whose FROM names the blob.
    let create =
        json!({"model": "older", "modelfile": format!("FROM @{digest}\nPARAMETER top_k 7\n")});
    let (status, text, _) = send(&app, json_req(Method::POST, "/api/create", create)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(store.get("older").is_some());

    // Names of blobs never uploaded, several files, adapters: refused.
    for (body, status) in [
        (
            json!({"model": "x", "files": {"a.gguf": other}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"model": "x", "files": {"a.gguf": "sha256:..%2F"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"model": "x", "files": {"a.gguf": digest, "b.gguf": digest}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"model": "x", "files": {"model.safetensors": digest}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"model": "x", "files": {"a.gguf": digest}, "from": "uploaded"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"model": "x", "from": "uploaded", "adapters": {"l.gguf": digest}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"model": "x", "modelfile": format!("FROM @{other}")}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, text, v) = send(&app, json_req(Method::POST, "/api/create", body.clone())).await;
        assert_eq!(got, status, "{body}: {text}");
        message_of(Family::Ollama, &v);
    }
    assert!(store.get("x").is_none());
}

#[tokio::test]
async fn kinko_create_uploads_a_file_that_exists_only_on_the_client() {
    // The server and a recording proxy in front of it: what crosses the
    // wire is all a server on another machine would get.
    let (state, store) = with_store("create-remote", ServeConfig::default());
    let server = spawn_server(state).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, String, Vec<u8>)>::new(),
    ));
    let record = seen.clone();
    let proxy = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().unwrap().to_string();
            record
                .lock()
                .unwrap()
                .push((parts.method.to_string(), path.clone(), bytes.to_vec()));
            let mut forward = reqwest::Client::new()
                .request(parts.method, format!("http://{server}{path}"))
                .body(bytes.to_vec());
            for (k, v) in parts.headers.iter() {
                if k != header::HOST {
                    forward = forward.header(k, v);
                }
            }
            let resp = forward.send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            axum::response::Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await.unwrap() });

    let client_dir = temp_dir("create-client-side");
    let (bytes, digest) = tiny_gguf(&client_dir);
    let modelfile = client_dir.join("Modelfile");
    std::fs::write(
        &modelfile,
        "FROM ./tiny.gguf\nSYSTEM Answer in French.\nPARAMETER temperature 0.3\n",
    )
    .unwrap();
    let client = kinko::cli::Client::new(&format!("http://{proxy_addr}"), None);
    client
        .create("remote-made", &modelfile, None)
        .await
        .unwrap();

    let model = store.get("remote-made").expect("created");
    assert_eq!(model.manifest.digest, digest);
    assert_eq!(model.manifest.system.as_deref(), Some("Answer in French."));
    assert_eq!(std::fs::read(model.gguf_path()).unwrap(), bytes);
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("HEAD".to_string(), format!("/api/blobs/{digest}")),
            ("POST".to_string(), format!("/api/blobs/{digest}")),
            ("POST".to_string(), "/api/create".to_string()),
        ]
    );
    assert_eq!(seen[1].2, bytes, "the file itself crossed the wire");
    let create: Value = serde_json::from_slice(&seen[2].2).unwrap();
    assert_eq!(create["files"]["tiny.gguf"], digest);
    let client_path = client_dir.display().to_string();
    assert!(
        !String::from_utf8_lossy(&seen[2].2).contains(&client_path),
        "no client path reaches the server: {create}"
    );

    // A second create of the same file uploads nothing.
    client
        .create("remote-again", &modelfile, None)
        .await
        .unwrap();
    assert!(store.get("remote-again").is_some());
}

#[tokio::test]
async fn open_webui_requests_replayed() {
    // What Open WebUI 0.12.4 sent to kinko as its Ollama backend (seen
    // through a logging proxy): its connection check, the model list and
    // details, a chat with its built-in tools, title generation with
    // `format: "json"`, a plain streamed chat.
    let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::router(state);
    let (status, _, v) = send(&app, bare(Method::GET, "/api/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["version"].is_string());
    let (status, _, v) = send(&app, bare(Method::GET, "/api/tags")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["models"][0]["name"], "fake:latest");
    assert_eq!(v["models"][0]["capabilities"], json!(["completion"]));
    let (status, _, v) = send(&app, bare(Method::GET, "/api/ps")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, text, v) = send(
        &app,
        json_req(Method::POST, "/api/show", json!({"model": "fake:latest"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["capabilities"], json!(["completion"]));
    for key in [
        "template",
        "parameters",
        "details",
        "model_info",
        "modified_at",
    ] {
        assert!(v.get(key).is_some(), "/api/show has {key}: {v}");
    }

    let tools = json!([{"type": "function", "function": {"name": "get_current_time", "description": "Get the current time", "parameters": {"type": "object", "properties": {}}}}]);
    let (status, text, v) = send(
        &app,
        json_req(
            Method::POST,
            "/api/chat",
            json!({"model": "fake:latest", "messages": [{"role": "user", "content": "What time is it?"}], "tools": tools, "stream": true, "options": {}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(v, json!({"error": "fake:latest does not support tools"}));

    let (status, text, v) = send(
        &app,
        json_req(
            Method::POST,
            "/api/chat",
            json!({"model": "fake:latest", "messages": [{"role": "user", "content": "### Task:\nGenerate a concise title as JSON {\"title\": ...}"}], "format": "json", "stream": false, "options": {"temperature": 0.1}, "keep_alive": "5m"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["done"], true);
    assert!(matches!(
        engine.log().formats().last(),
        Some(Some(app::api::AnswerFormat::Json))
    ));

    let (status, text, _) = send(
        &app,
        json_req(
            Method::POST,
            "/api/chat",
            json!({"model": "fake:latest", "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello there"}], "stream": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("application/x-ndjson"), "{text}");
    let (status, _, v) = send(&app, bare(Method::GET, "/api/nothing-open-webui-knows")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    message_of(Family::Ollama, &v);
}

#[tokio::test]
async fn tools_reach_a_model_that_takes_them_and_calls_come_back_in_each_shape() {
    let fake = || FakeConfig {
        models: vec!["fake:latest".into(), "fake-tools:latest".into()],
        ..FakeConfig::default()
    };
    let weather = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = |text: &str| json!([{"role": "user", "content": text}]);
    let call = r#"call get_weather {"city": "Paris"}"#;

    let (state, _, _) = fake_state(fake(), ServeConfig::default());
    let app = kinko::api_router(state);
    let (_, _, v) = send(
        &app,
        json_req(Method::POST, "/api/show", json!({"model": "fake-tools"})),
    )
    .await;
    assert_eq!(v["capabilities"], json!(["completion", "tools"]));

    // Ollama, whole answer and streamed.
    let (state, engine, _) = fake_state(fake(), ServeConfig::default());
    let app = kinko::api_router(state);
    let body =
        json!({"model": "fake-tools", "messages": ask(call), "tools": weather, "stream": false});
    let (status, text, v) = send(&app, json_req(Method::POST, "/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let calls = &v["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "get_weather", "{v}");
    assert_eq!(calls[0]["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(v["message"]["content"], "");
    assert_eq!(v["done_reason"], "stop");
    let body = json!({"model": "fake-tools", "messages": ask(call), "tools": weather});
    let (status, text, _) = send(&app, json_req(Method::POST, "/api/chat", body)).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with_calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"]["tool_calls"].is_array())
        .collect();
    assert_eq!(with_calls.len(), 1, "{text}");
    assert_eq!(with_calls[0]["done"], false);
    assert_eq!(
        with_calls[0]["message"]["tool_calls"][0]["function"]["arguments"]["city"],
        "Paris"
    );
    assert_eq!(lines.last().unwrap()["done"], true);
    // A plain question with tools offered: a text answer; the tools still
    // reached the engine.
    let body = json!({"model": "fake-tools", "messages": ask("hello there"), "tools": weather, "stream": false});
    let (_, _, v) = send(&app, json_req(Method::POST, "/api/chat", body)).await;
    assert_eq!(v["message"]["content"], "hello there");
    assert!(v["message"].get("tool_calls").is_none());
    assert_eq!(
        engine.log().tools(),
        vec![vec!["get_weather".to_string()]; 3]
    );

    // OpenAI, whole answer and streamed.
    let (state, engine, _) = fake_state(fake(), ServeConfig::default());
    let app = kinko::api_router(state);
    let body = json!({"model": "fake-tools", "messages": ask(call), "tools": weather});
    let (status, text, v) = send(&app, json_req(Method::POST, "/v1/chat/completions", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call0 = &choice["message"]["tool_calls"][0];
    assert_eq!(call0["type"], "function");
    assert!(call0["id"].is_string());
    assert_eq!(call0["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call0["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let body =
        json!({"model": "fake-tools", "messages": ask(call), "tools": weather, "stream": true});
    let (_, text, _) = send(&app, json_req(Method::POST, "/v1/chat/completions", body)).await;
    let chunks = common::openai_chunks(&text);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
        .collect();
    assert_eq!(deltas.len(), 1, "{text}");
    assert_eq!(
        deltas[0]["choices"][0]["delta"]["tool_calls"][0]["index"],
        0
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // tool_choice: `none` keeps the tools from the model; `required` and a
    // named function hold generation to a call of them.
    let body = json!({"model": "fake-tools", "messages": ask(call), "tools": weather, "tool_choice": "none"});
    let (_, _, v) = send(&app, json_req(Method::POST, "/v1/chat/completions", body)).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(engine.log().tools().last(), Some(&Vec::new()));
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let body = json!({"model": "fake-tools", "messages": ask("weather?"), "tools": weather, "tool_choice": choice});
        let (status, text, _) =
            send(&app, json_req(Method::POST, "/v1/chat/completions", body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let format = engine
            .log()
            .formats()
            .last()
            .cloned()
            .flatten()
            .expect("a forced call");
        let schema = format.schema();
        assert_eq!(
            schema["properties"]["name"]["const"], "get_weather",
            "{schema}"
        );
        assert_eq!(
            schema["properties"]["arguments"]["required"],
            json!(["city"])
        );
    }

    // Tools that are not functions, or name nothing; a named choice that
    // is not offered: refused.
    for (path, body) in [
        (
            "/api/chat",
            json!({"model": "fake-tools", "messages": ask("x"), "tools": [{"type": "function", "function": {}}]}),
        ),
        (
            "/api/chat",
            json!({"model": "fake-tools", "messages": ask("x"), "tools": [{"type": "retrieval"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake-tools", "messages": ask("x"), "tools": weather, "tool_choice": {"type": "function", "function": {"name": "rm_rf"}}}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake-tools", "messages": ask("x"), "tools": weather, "tool_choice": "required", "response_format": {"type": "json_object"}}),
        ),
    ] {
        let (status, text, _) = send(&app, json_req(Method::POST, path, body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
    }

    // The next turn of a tool loop (the call, then the tool's result) is
    // refused in so many words, not half read.
    let history = json!([
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 21 C"},
    ]);
    for path in ["/api/chat", "/v1/chat/completions"] {
        let body = json!({"model": "fake-tools", "messages": history, "tools": weather});
        let (status, text, _) = send(&app, json_req(Method::POST, path, body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {text}");
        assert!(
            text.contains("tool results in the history are not supported"),
            "{text}"
        );
    }
}

//! Embeddings through the router (issue 14): the three routes' shapes, bad
//! input refused in each API's shape, the limits and the key as on every
//! route, kinds kept apart, keep-alive, and crafted embedding models
//! refused without a panic. The model is the real all-MiniLM-L6-v2.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{body_text, embedding_model_dir, fake_state, temp_dir};
use kinko::config::ServeConfig;
use kinko::engine::embeddings::Embeddings;
use kinko::engine::fake::FakeConfig;
use kinko::engine::KeepAlive;
use kinko::models::{ModelStore, StoreError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::ServiceExt;

/// A store holding all-minilm:latest and a (tiny, not runnable) chat
/// model, and the API over it with `config`.
fn app(tag: &str, config: ServeConfig) -> (PathBuf, ModelStore, axum::Router) {
    let dir = temp_dir(&format!("embed-{tag}"));
    let store = ModelStore::new(dir.join("home"));
    store
        .import_embedding("all-minilm", &embedding_model_dir())
        .unwrap();
    let gguf = dir.join("tiny.gguf");
    kinko::models::gguf::write_tiny_test_model(&gguf).unwrap();
    store.import("tiny:chat", &gguf, None).unwrap();
    let (state, _, _) = fake_state(FakeConfig::default(), config);
    let state = state
        .with_store(store.clone())
        .with_embeddings(Embeddings::new(
            store.clone(),
            KeepAlive::For(Duration::from_secs(300)),
        ));
    (dir, store, kinko::api_router(state))
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(app, method, path, body, None).await
}

async fn call_with(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let resp = app
        .clone()
        .oneshot(
            req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let text = body_text(resp).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_three_routes_answer_in_their_apis_shapes() {
    let (_dir, _, app) = app("shapes", ServeConfig::default());
    let texts = json!(["The cat sleeps on the sofa.", "猫がソファで寝ている。"]);
    let (s, v) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": texts})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "all-minilm:latest");
    let vectors = v["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].as_array().unwrap().len(), 384);
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 10);
    assert!(v["total_duration"].as_u64().unwrap() >= v["load_duration"].as_u64().unwrap());
    assert!(
        v["load_duration"].as_u64().unwrap() > 0,
        "the first request loads the model"
    );
    let first = floats(&vectors[0]);

    // The older form: one prompt, one vector, the same one.
    let (s, old) = call(
        &app,
        "POST",
        "/api/embeddings",
        Some(json!({"model": "all-minilm", "prompt": "The cat sleeps on the sofa."})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{old}");
    assert!(cosine(&floats(&old["embedding"]), &first) > 0.9999);

    // OpenAI's: floats, or base64 of little-endian f32s; usage.
    let (s, o) = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "all-minilm", "input": texts, "encoding_format": "float"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["object"], "list");
    assert_eq!(o["data"][1]["index"], 1);
    assert_eq!(o["data"][0]["object"], "embedding");
    assert!(cosine(&floats(&o["data"][0]["embedding"]), &first) > 0.9999);
    assert_eq!(o["usage"]["prompt_tokens"], v["prompt_eval_count"]);
    assert_eq!(o["usage"]["total_tokens"], v["prompt_eval_count"]);
    let (s, b) = call(&app, "POST", "/v1/embeddings",
        Some(json!({"model": "all-minilm", "input": "The cat sleeps on the sofa.", "encoding_format": "base64", "dimensions": 384}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &first) > 0.9999);

    // No input: the model is loaded (Ollama's way to preload), no vectors.
    let (s, e) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["embeddings"], json!([]));
}

#[tokio::test]
async fn bad_input_is_refused_in_each_apis_shape() {
    let config = ServeConfig {
        embed_max_inputs: 3,
        ..ServeConfig::default()
    };
    let (_dir, _, app) = app("bad", config);
    let long = "word ".repeat(400);
    for (path, body, status, needle) in [
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": ["a", ""]}),
            422,
            "input[1] is an empty string",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": ["a", 7]}),
            422,
            "token arrays",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": ["a", {"t": 1}]}),
            422,
            "input[1] must be a string",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": {"t": 1}}),
            422,
            "a string or a list",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": ["a", "b", "c", "d"]}),
            422,
            "limit of 3",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": long, "truncate": false}),
            422,
            "402 tokens",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": "a", "keep_alive": "soon"}),
            422,
            "keep_alive",
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": "a", "dimensions": 64}),
            422,
            "384-dimension",
        ),
        (
            "/api/embed",
            json!({"model": "nothing-here", "input": "a"}),
            404,
            "not installed",
        ),
        (
            "/api/embed",
            json!({"model": "tiny:chat", "input": "a"}),
            400,
            "is a chat model",
        ),
        (
            "/api/embed",
            json!({"model": "lab/x", "input": "a"}),
            400,
            "upstream",
        ),
        ("/api/embed", json!({"input": "a"}), 422, "model"),
        (
            "/api/embeddings",
            json!({"model": "all-minilm", "prompt": 5}),
            422,
            "prompt",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": [[101, 2023]]}),
            422,
            "token arrays",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": [1, 2]}),
            422,
            "token arrays",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": ""}),
            422,
            "must not be empty",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": []}),
            422,
            "must not be empty",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": "a", "encoding_format": "int8"}),
            422,
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": "a", "dimensions": 128}),
            422,
            "cannot shorten",
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": "a", "dimensions": "x"}),
            422,
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json!({"model": "tiny:chat", "input": "a"}),
            400,
            "is a chat model",
        ),
        (
            "/api/chat",
            json!({"model": "all-minilm", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "is an embedding model",
        ),
        (
            "/api/generate",
            json!({"model": "all-minilm", "prompt": "hi"}),
            400,
            "is an embedding model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "all-minilm", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "is an embedding model",
        ),
    ] {
        let (s, v) = call(&app, "POST", path, Some(body.clone())).await;
        assert_eq!(s.as_u16(), status, "{path} {body}: {v}");
        let message = if path.starts_with("/v1/") {
            assert!(v["error"]["type"].is_string(), "{v}");
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            v["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}: {v}"))
                .to_string()
        };
        assert!(message.contains(needle), "{path} {body}: {message}");
    }
    // Not JSON at all.
    let resp = app
        .clone()
        .oneshot(
            Request::post("/api/embed")
                .body(Body::from("{nope"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Too long, with truncation (the default): cut to the model's 256.
    let (s, v) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": long})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["prompt_eval_count"], 256);
}

#[tokio::test]
async fn the_key_and_the_body_limit_hold_as_on_every_route() {
    let config = ServeConfig {
        api_key: Some("sesame-embed".into()),
        body_limit: 64 * 1024,
        ..ServeConfig::default()
    };
    let (_dir, _, app) = app("guards", config);
    let body = json!({"model": "all-minilm", "input": "hello"});
    for path in ["/api/embed", "/v1/embeddings"] {
        let (s, _) = call(&app, "POST", path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let (s, v) = call_with(&app, "POST", path, Some(body.clone()), Some("sesame-embed")).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    let big = json!({"model": "all-minilm", "input": vec!["x".repeat(1024); 100]});
    let (s, v) = call_with(&app, "POST", "/api/embed", Some(big), Some("sesame-embed")).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].is_string(), "{v}");
}

#[tokio::test]
async fn embedding_models_are_listed_by_kind_and_kept_alive_like_chat_models() {
    let (_dir, _, app) = app("kinds", ServeConfig::default());
    let (_, tags) = call(&app, "GET", "/api/tags", None).await;
    let mini = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "all-minilm:latest")
        .unwrap()
        .clone();
    assert_eq!(mini["capabilities"], json!(["embedding"]));
    assert_eq!(mini["details"]["format"], "safetensors");
    assert_eq!(mini["details"]["family"], "bert");
    let (_, show) = call(
        &app,
        "POST",
        "/api/show",
        Some(json!({"model": "all-minilm"})),
    )
    .await;
    assert_eq!(show["capabilities"], json!(["embedding"]));
    assert_eq!(show["model_info"]["bert.embedding_length"], 384);
    assert_eq!(show["model_info"]["bert.context_length"], 256);
    let (_, show) = call(
        &app,
        "POST",
        "/api/show",
        Some(json!({"model": "tiny:chat"})),
    )
    .await;
    assert_eq!(show["capabilities"], json!(["completion"]));
    let (_, v1) = call(&app, "GET", "/v1/models", None).await;
    assert!(v1["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "all-minilm:latest"));
    // The chat picker lists chat models only.
    let (_, picker) = call(&app, "GET", "/api/models", None).await;
    assert!(!picker.to_string().contains("all-minilm"), "{picker}");

    // Loaded on first use, shown by ps, unloaded by keep_alive 0.
    let (_, ps) = call(&app, "GET", "/api/ps", None).await;
    assert!(!ps.to_string().contains("all-minilm"), "{ps}");
    let (s, _) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": "a", "keep_alive": "10m"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, ps) = call(&app, "GET", "/api/ps", None).await;
    assert_eq!(ps["models"][0]["name"], "all-minilm:latest", "{ps}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": "b", "keep_alive": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["load_duration"], 0, "still loaded: {v}");
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, ps) = call(&app, "GET", "/api/ps", None).await;
        if ps["models"].as_array().unwrap().is_empty() {
            gone = true;
            break;
        }
    }
    assert!(gone, "keep_alive 0 unloads the model after the request");
    // The next request loads it again.
    let (_, v) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": "c"})),
    )
    .await;
    assert!(v["load_duration"].as_u64().unwrap() > 0, "{v}");
    // An empty input with keep_alive 0 unloads at once (Ollama's way).
    let (s, _) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "keep_alive": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, ps) = call(&app, "GET", "/api/ps", None).await;
    assert!(ps["models"].as_array().unwrap().is_empty(), "{ps}");
}

/// A copy of the real model's directory with `change` applied.
fn crafted(dir: &Path, tag: &str, change: impl FnOnce(&Path)) -> PathBuf {
    let out = dir.join(tag);
    let src = embedding_model_dir();
    for file in kinko::models::embedding::FILES {
        let to = out.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(file), &to).unwrap();
    }
    change(&out);
    out
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[tokio::test]
async fn crafted_embedding_models_are_refused_without_a_panic() {
    let (dir, store, app) = app("crafted", ServeConfig::default());
    let cases: Vec<(&str, Box<dyn FnOnce(&Path)>)> = vec![
        (
            "heads",
            Box::new(|d: &Path| {
                edit_json(&d.join("config.json"), |v| {
                    v["num_attention_heads"] = json!(7)
                })
            }),
        ),
        (
            "vocab",
            Box::new(|d: &Path| {
                edit_json(&d.join("config.json"), |v| v["vocab_size"] = json!(100))
            }),
        ),
        (
            "types",
            Box::new(|d: &Path| {
                edit_json(&d.join("config.json"), |v| v["type_vocab_size"] = json!(0))
            }),
        ),
        (
            "pooling",
            Box::new(|d: &Path| {
                edit_json(&d.join("1_Pooling/config.json"), |v| {
                    v["pooling_mode_max_tokens"] = json!(true)
                })
            }),
        ),
        (
            "header",
            Box::new(|d: &Path| {
                let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
                bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                std::fs::write(d.join("model.safetensors"), bytes).unwrap();
            }),
        ),
        (
            "cut",
            Box::new(|d: &Path| {
                let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
                std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
        (
            "link",
            Box::new(|d: &Path| {
                std::fs::remove_file(d.join("tokenizer.json")).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", d.join("tokenizer.json")).unwrap();
            }),
        ),
        (
            "tokenizer",
            Box::new(|d: &Path| {
                std::fs::write(d.join("tokenizer.json"), "{\"model\": 1}").unwrap()
            }),
        ),
    ];
    for (tag, change) in cases {
        let src = crafted(&dir, tag, change);
        let err = store
            .import_embedding(&format!("bad-{tag}"), &src)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotEmbedding { .. }),
            "{tag}: {err}"
        );
        assert!(store.get(&format!("bad-{tag}")).is_none(), "{tag}");
    }
    // A model changed in the store after its import (a hostile file put
    // there by hand): the request fails with JSON, the server goes on.
    let installed = store.get("all-minilm").unwrap();
    edit_json(&installed.dir.join("config.json"), |v| {
        v["hidden_size"] = json!(385)
    });
    let (s, v) = call(
        &app,
        "POST",
        "/api/embed",
        Some(json!({"model": "all-minilm", "input": "a"})),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("could not be loaded"),
        "{v}"
    );
    let (s, _) = call(&app, "GET", "/api/tags", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn many_requests_at_once_all_get_vectors_or_a_clear_busy() {
    let config = ServeConfig {
        max_concurrent_per_model: 1,
        max_queue_per_model: 2,
        ..ServeConfig::default()
    };
    let (_dir, _, app) = app("busy", config);
    let texts: Vec<String> = (0..64)
        .map(|i| format!("sentence number {i} about embeddings"))
        .collect();
    let calls = (0..8).map(|_| {
        let app = app.clone();
        let texts = texts.clone();
        tokio::spawn(async move {
            call(
                &app,
                "POST",
                "/api/embed",
                Some(json!({"model": "all-minilm", "input": texts})),
            )
            .await
        })
    });
    let (mut ok, mut busy) = (0, 0);
    for c in calls {
        let (s, v) = c.await.unwrap();
        match s {
            StatusCode::OK => {
                assert_eq!(v["embeddings"].as_array().unwrap().len(), 64);
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(v["error"].as_str().unwrap().contains("busy"), "{v}");
                busy += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(
        ok >= 3,
        "one running and two waiting get answers ({ok} ok, {busy} busy)"
    );
    assert_eq!(ok + busy, 8);
}

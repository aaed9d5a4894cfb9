//! Hostile model files and paths through `POST /api/create`, as an attacker
//! on the LAN would send them (issue 11): the server stays up, refuses with
//! 422 and one line, lists nothing, and says nothing about files the client
//! did not send.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{body_text, fake_state, temp_dir};
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use kinko::models::validate::craft::{string, Crafted};
use kinko::models::ModelStore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tower::ServiceExt;

/// A directory of its own, an empty store in it, and the API over that store.
fn with_store(tag: &str) -> (PathBuf, ModelStore, axum::Router) {
    let dir = temp_dir(&format!("hostile-{tag}"));
    let store = ModelStore::new(dir.join("home"));
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::api_router(state.with_store(store.clone()));
    (dir, store, app)
}

async fn create(app: &axum::Router, from: &Path) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(
            Request::post("/api/create")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"model": "x", "from": from, "stream": false}).to_string(),
                ))
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

fn error_text(v: &Value) -> String {
    match &v["error"] {
        Value::String(s) => s.clone(),
        other => other["message"].as_str().unwrap_or_default().to_string(),
    }
}

#[tokio::test]
async fn crafted_ggufs_are_refused_with_one_line_and_never_listed() {
    let (dir, store, app) = with_store("ggufs");
    let arch = || Crafted::new().kv_str("general.architecture", "llama");
    let mut huge = Vec::new();
    string(&mut huge, "general.name");
    huge.extend(8u32.to_le_bytes());
    huge.extend((1u64 << 60).to_le_bytes());
    let cases: Vec<(&str, Crafted, &str)> = vec![
        // Ollama CVE-2025-0315's shape: a string length of 2^60.
        (
            "huge-string",
            Crafted::new().kv_raw(&huge),
            "declares 1152921504606846976 bytes",
        ),
        // "Bleeding Llama" (CVE-2026-7482): a tensor past the end.
        (
            "past-end",
            arch()
                .tensor("blk.0.attn_q.weight", &[32, 32], 0, 0)
                .data(64),
            "tensor blk.0.attn_q.weight ends past the end of the file",
        ),
        (
            "overflow",
            arch()
                .tensor("w", &[1 << 32, 1 << 32, 1 << 8], 0, 0)
                .data(64),
            "dimensions overflow 64 bits",
        ),
        (
            "dims",
            arch().tensor("w", &[1; 64], 0, 0).data(64),
            "declares 64 dimensions",
        ),
        (
            "unknown-type",
            arch().tensor("w", &[256], 19, 0).data(256),
            "tensor w has unknown type 19",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes.bytes()).unwrap();
        let (status, body) = create(&app, &path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        let text = error_text(&body);
        assert!(text.contains(expected), "{name}: {text}");
        assert!(
            !text.contains('\n') && !text.contains("backtrace") && !text.contains("::"),
            "{name}: {text}"
        );
    }
    assert!(store.list().is_empty());
}

#[tokio::test]
async fn server_side_paths_are_not_an_oracle() {
    let (dir, store, app) = with_store("paths");
    let secret = dir.join("shadow");
    std::fs::write(&secret, b"root:$6$salt$hash:19000:0:99999:7:::\n").unwrap();
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut answers = Vec::new();
    for path in [
        secret.clone(),
        dir.join("missing"),
        dir.clone(),
        fifo,
        PathBuf::from("/dev/zero"),
    ] {
        let (status, body) = create(&app, &path).await;
        let text = error_text(&body).replace(&path.display().to_string(), "PATH");
        assert!(!text.contains("root") && !text.contains("0x"), "{text}");
        answers.push((status, text));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert!(store.list().is_empty());
}

//! `POST /api/pull` against a local HTTP server that the test starts (no
//! test reaches the internet): a plain URL with a digest, an `hf.co/…` name,
//! a download cut off halfway and resumed with a Range request, and a wrong
//! digest that installs nothing.

mod common;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{body_text, fake_state, temp_dir};
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use kinko::models::ModelStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use tower_http::services::ServeFile;

struct Files {
    gguf: PathBuf,
    sha256: String,
    /// The Range header of every request to the flaky route.
    ranges: Mutex<Vec<Option<String>>>,
}

/// The first request gets half the file and a broken connection; later ones
/// are served properly (with Range support).
async fn flaky(State(files): State<Arc<Files>>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let first = {
        let mut r = files.ranges.lock().unwrap();
        r.push(range);
        r.len() == 1
    };
    if first {
        let bytes = std::fs::read(&files.gguf).unwrap();
        let half = bytes[..bytes.len() / 2].to_vec();
        use futures::StreamExt;
        let stream =
            futures::stream::iter(vec![Ok::<_, std::io::Error>(axum::body::Bytes::from(half))])
                .chain(futures::stream::once(async {
                    // Let the first half reach the client, then drop the line.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    Err(std::io::Error::other("connection lost"))
                }));
        return (
            [(header::CONTENT_LENGTH, bytes.len().to_string())],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let req = Request::builder()
        .header(
            header::RANGE,
            headers
                .get(header::RANGE)
                .cloned()
                .unwrap_or(header::HeaderValue::from_static("bytes=0-")),
        )
        .body(Body::empty())
        .unwrap();
    ServeFile::new(&files.gguf)
        .oneshot(req)
        .await
        .unwrap()
        .into_response()
}

async fn file_server(files: Arc<Files>) -> String {
    let gguf = files.gguf.clone();
    let app = Router::new()
        .route_service("/files/tiny.gguf", ServeFile::new(&gguf))
        .route_service(
            "/Org/Tiny-GGUF/resolve/main/tiny-q8_0.gguf",
            ServeFile::new(&gguf),
        )
        .route("/flaky/tiny.gguf", get(flaky))
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn setup(tag: &str) -> (axum::Router, ModelStore, Arc<Files>, String) {
    let dir = temp_dir(&format!("pull-{tag}"));
    let gguf = dir.join("tiny.gguf");
    kinko::models::gguf::write_tiny_test_model(&gguf).unwrap();
    let sha256: String = Sha256::digest(std::fs::read(&gguf).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let files = Arc::new(Files {
        gguf,
        sha256,
        ranges: Mutex::new(Vec::new()),
    });
    let base = file_server(files.clone()).await;
    let store = ModelStore::new(dir.join("home"));
    let config = ServeConfig {
        hf_endpoint: base.clone(),
        ..ServeConfig::default()
    };
    let (state, _, _) = fake_state(FakeConfig::default(), config);
    (
        kinko::api_router(state.with_store(store.clone())),
        store,
        files,
        base,
    )
}

async fn pull(app: &axum::Router, body: Value) -> (StatusCode, Vec<Value>) {
    let resp = app
        .clone()
        .oneshot(
            Request::post("/api/pull")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let lines = body_text(resp)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (status, lines)
}

#[tokio::test]
async fn a_url_with_its_digest_is_downloaded_and_installed() {
    let (app, store, files, base) = setup("url").await;
    let (status, lines) = pull(&app, json!({"model": format!("{base}/files/tiny.gguf@sha256:{}", files.sha256), "name": "tiny:dl"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == "downloading" && l["completed"] == l["total"]),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l["status"] == "verifying sha256 digest"));
    let m = store.get("tiny:dl").unwrap().manifest;
    assert_eq!(m.digest, format!("sha256:{}", files.sha256));
    // No partial file is left behind.
    let leftovers = std::fs::read_dir(store.root().join(".downloads"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn an_hf_name_maps_to_the_hub_layout() {
    let (app, store, _, _) = setup("hf").await;
    let (_, lines) = pull(
        &app,
        json!({"model": "hf.co/Org/Tiny-GGUF:tiny-q8_0.gguf", "stream": true}),
    )
    .await;
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    assert!(store.get("tiny-gguf:tiny-q8_0").is_some());
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_a_range_request() {
    let (app, store, files, base) = setup("resume").await;
    let spec = format!("{base}/flaky/tiny.gguf@sha256:{}", files.sha256);
    let (_, lines) = pull(&app, json!({"model": spec, "name": "tiny:resumed"})).await;
    assert!(
        lines.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("broke off"),
        "{lines:?}"
    );
    assert!(
        store.get("tiny:resumed").is_none(),
        "nothing half-installed"
    );
    let (_, lines) = pull(&app, json!({"model": spec, "name": "tiny:resumed"})).await;
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let ranges = files.ranges.lock().unwrap().clone();
    let size = std::fs::metadata(&files.gguf).unwrap().len();
    assert_eq!(ranges, vec![None, Some(format!("bytes={}-", size / 2))]);
    let first_progress = lines.iter().find(|l| l["status"] == "downloading").unwrap();
    assert_eq!(
        first_progress["completed"],
        size / 2,
        "it started from the half already there"
    );
    assert_eq!(
        store.get("tiny:resumed").unwrap().manifest.digest,
        format!("sha256:{}", files.sha256)
    );
}

#[tokio::test]
async fn a_wrong_digest_installs_nothing() {
    let (app, store, _, base) = setup("digest").await;
    let wrong = "0".repeat(64);
    let (status, lines) = pull(&app, json!({"model": format!("{base}/files/tiny.gguf@sha256:{wrong}"), "name": "tiny:bad", "stream": false})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("digest mismatch"),
        "{lines:?}"
    );
    assert!(store.get("tiny:bad").is_none());
    let (status, lines) = pull(&app, json!({"model": "not-a-url"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{lines:?}");
}

/// A body that never ends and announces no length.
async fn endless() -> Response {
    let chunk = axum::body::Bytes::from(vec![0x47u8; 64 * 1024]);
    let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Body::from_stream(stream).into_response()
}

#[tokio::test]
async fn an_endless_download_stops_at_the_cap_and_leaves_nothing() {
    let dir = temp_dir("pull-endless");
    let app = Router::new().route("/endless.gguf", get(endless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store = ModelStore::new(dir.join("home"));
    let config = ServeConfig {
        max_pull_bytes: 1 << 20,
        ..ServeConfig::default()
    };
    let (state, _, _) = fake_state(FakeConfig::default(), config);
    let kinko = kinko::api_router(state.with_store(store.clone()));
    let (_, lines) = pull(
        &kinko,
        json!({"model": format!("http://{addr}/endless.gguf"), "name": "endless"}),
    )
    .await;
    let error = lines.last().unwrap()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("larger than the pull limit of 1048576 bytes"),
        "{error}"
    );
    assert!(store.list().is_empty());
    let leftovers = std::fs::read_dir(store.root().join(".downloads"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "the partial file is deleted");
}

/// A gzip stream of `data` in stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut crc_table = [0u32; 256];
    for (i, entry) in crc_table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let crc = !data.iter().fold(!0u32, |c, &b| {
        crc_table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    });
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    out.extend(crc.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

#[tokio::test]
async fn a_gzip_body_is_never_inflated_and_redirects_stay_on_http() {
    let dir = temp_dir("pull-gzip");
    let gguf = dir.join("tiny.gguf");
    kinko::models::gguf::write_tiny_test_model(&gguf).unwrap();
    let packed = gzip_stored(&std::fs::read(&gguf).unwrap());
    let app = Router::new()
        .route(
            "/packed.gguf",
            get(move || {
                let packed = packed.clone();
                async move { ([(header::CONTENT_ENCODING, "gzip")], packed).into_response() }
            }),
        )
        .route(
            "/elsewhere.gguf",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "file:///etc/passwd")],
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store = ModelStore::new(dir.join("home"));
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let kinko = kinko::api_router(state.with_store(store.clone()));

    // Inflated, this would be a valid model; kept as sent, it is not GGUF.
    let (_, lines) = pull(
        &kinko,
        json!({"model": format!("http://{addr}/packed.gguf"), "name": "packed"}),
    )
    .await;
    let error = lines.last().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        error, "the downloaded file is not a usable GGUF model: not a GGUF file",
        "{lines:?}"
    );

    let (_, lines) = pull(
        &kinko,
        json!({"model": format!("http://{addr}/elsewhere.gguf"), "name": "elsewhere"}),
    )
    .await;
    let error = lines.last().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("download failed"), "{lines:?}");
    assert!(!error.contains("root:"), "{error}");

    assert!(store.list().is_empty());
    let leftovers = std::fs::read_dir(store.root().join(".downloads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

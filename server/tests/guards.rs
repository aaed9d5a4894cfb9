//! The guard rails, through the router with the fake engine: restricted
//! CORS, the Host allow-list, the API key (Bearer and login cookie), load
//! limits, and the three timeouts.

mod common;

use app::api::FinishReason;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{body_text, fake_state, parse_sse};
use http_body_util::BodyExt;
use kinko::config::ServeConfig;
use kinko::engine::fake::FakeConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn chat_body() -> String {
    json!({"model": "fake:latest", "messages": [{"role": "user", "content": "hello there"}]})
        .to_string()
}

fn chat(origin: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/api/chat/stream")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(chat_body())).unwrap()
}

async fn error_of(resp: axum::response::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!bytes.is_empty(), "never an empty error body");
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn with_origins() -> ServeConfig {
    ServeConfig {
        allowed_origins: vec!["http://localhost:5173".into()],
        ..ServeConfig::default()
    }
}

#[tokio::test]
async fn same_origin_and_listed_origins_may_stream() {
    for origin in [
        None,
        Some("http://127.0.0.1:3000"),
        Some("http://localhost:5173"),
    ] {
        let (state, _, _) = fake_state(FakeConfig::default(), with_origins());
        let resp = kinko::api_router(state)
            .oneshot(chat(origin))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{origin:?}");
        if origin == Some("http://localhost:5173") {
            assert_eq!(
                resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
                "http://localhost:5173"
            );
        }
    }
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_json_and_nothing_is_generated() {
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:3000.evil.example",
    ] {
        let (state, engine, metrics) = fake_state(FakeConfig::default(), with_origins());
        let resp = kinko::api_router(state)
            .oneshot(chat(Some(origin)))
            .await
            .unwrap();
        let (status, v) = error_of(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(v["error"]["code"], "origin_not_allowed");
        assert_eq!(engine.log().started(), 0);
        assert_eq!(metrics.tokens_total(), 0);
    }
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_succeeds_and_from_others_is_refused() {
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/chat/stream")
            .header(header::HOST, "127.0.0.1:3000")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,authorization",
            )
            .body(Body::empty())
            .unwrap()
    };
    let (state, _, _) = fake_state(FakeConfig::default(), with_origins());
    let resp = kinko::api_router(state.clone())
        .oneshot(preflight("http://localhost:5173"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:5173"
    );
    let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("authorization"),
        "{headers}"
    );

    let resp = kinko::api_router(state)
        .oneshot(preflight("http://evil.example"))
        .await
        .unwrap();
    let (status, v) = error_of(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "origin_not_allowed");
}

#[tokio::test]
async fn a_rebinding_host_is_refused_on_a_loopback_server() {
    let (state, engine, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let req = Request::post("/api/chat/stream")
        .header(header::HOST, "attacker.example:3000")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(chat_body()))
        .unwrap();
    let (status, v) = error_of(kinko::api_router(state).oneshot(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "host_not_allowed");
    assert_eq!(engine.log().started(), 0);
}

fn keyed() -> ServeConfig {
    ServeConfig {
        api_key: Some("sesame-open-up".into()),
        ..ServeConfig::default()
    }
}

#[tokio::test]
async fn with_a_key_api_clients_need_the_bearer_token() {
    let (state, engine, _) = fake_state(FakeConfig::default(), keyed());
    let app = kinko::api_router(state);
    for auth in [
        None,
        Some("Bearer wrong-key-123"),
        Some("sesame-open-up"),
        Some("Basic c2VzYW1l"),
    ] {
        let mut b =
            Request::post("/api/chat/stream").header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::from(chat_body())).unwrap())
            .await
            .unwrap();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"kinko\""
        );
        let (status, v) = error_of(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    assert_eq!(engine.log().started(), 0);
    let resp = app
        .clone()
        .oneshot(
            Request::post("/api/chat/stream")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, "Bearer sesame-open-up")
                .body(Body::from(chat_body()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Health stays open for liveness checks.
    let resp = app
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_a_key_browsers_log_in_and_get_a_strict_http_only_cookie() {
    let (state, _, _) = fake_state(FakeConfig::default(), keyed());
    let app = kinko::api_router(state);
    // A page visit without a session goes to the login page.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/models")
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()[header::LOCATION], "/login");
    let resp = app
        .clone()
        .oneshot(Request::get("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_text(resp).await;
    assert!(
        page.contains("name=\"key\"") && page.contains("type=\"password\""),
        "{page}"
    );

    let login = |key: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("key={key}")))
            .unwrap()
    };
    let resp = app.clone().oneshot(login("not-the-key")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());

    let resp = app.clone().oneshot(login("sesame-open-up")).await.unwrap();
    assert!(resp.status().is_redirection());
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("kinko_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("sesame"),
        "the cookie does not carry the key"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let resp = app
        .oneshot(
            Request::get("/api/models")
                .header(header::COOKIE, session)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn past_the_queue_a_request_gets_503_with_retry_after_at_once() {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(50),
        min_tokens: 1000,
        ..FakeConfig::default()
    };
    let config = ServeConfig {
        max_concurrent_per_model: 1,
        max_queue_per_model: 1,
        ..ServeConfig::default()
    };
    let (state, engine, _) = fake_state(fake, config);
    let app = kinko::api_router(state);
    // One answering (its body held open), one waiting in the queue.
    let running = app.clone().oneshot(chat(None)).await.unwrap();
    assert_eq!(running.status(), StatusCode::OK);
    let queued = tokio::spawn(app.clone().oneshot(chat(None)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !queued.is_finished(),
        "the second request waits for the slot"
    );
    let t = Instant::now();
    let resp = app.clone().oneshot(chat(None)).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(500), "refused at once");
    assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    let (status, v) = error_of(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "busy");
    assert_eq!(engine.log().started(), 1);
    // When the first answer goes away, the queued one starts.
    drop(running);
    let second = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
}

/// Run one chat against a fake engine with `delay` per token and `config`'s
/// timeouts; returns the events, how long the stream took, and whether the
/// engine saw the cancellation.
async fn timed(
    delay_ms: u64,
    min_tokens: usize,
    config: ServeConfig,
) -> (Vec<common::Sse>, Duration, u64, u64) {
    let fake = FakeConfig {
        token_delay: Duration::from_millis(delay_ms),
        min_tokens,
        ..FakeConfig::default()
    };
    let (state, engine, metrics) = fake_state(fake, config);
    let t = Instant::now();
    let resp = kinko::api_router(state).oneshot(chat(None)).await.unwrap();
    let events = parse_sse(resp.into_body().into_data_stream()).await;
    let took = t.elapsed();
    let log = engine.log();
    for _ in 0..100 {
        if log.cancelled() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (
        events,
        took,
        log.cancelled(),
        metrics.finished_total(FinishReason::Timeout),
    )
}

fn assert_timed_out(events: &[common::Sse], what: &str) {
    let n = events.len();
    assert_eq!(events[n - 2].event, "error", "{events:?}");
    assert_eq!(events[n - 2].data["code"], "timeout");
    assert!(
        events[n - 2].data["message"]
            .as_str()
            .unwrap()
            .contains(what),
        "{events:?}"
    );
    assert_eq!(events[n - 1].event, "done");
    assert_eq!(events[n - 1].data["finish_reason"], "timeout");
}

#[tokio::test]
async fn the_first_token_timeout_fires_and_stops_the_engine() {
    let config = ServeConfig {
        first_token_timeout_secs: 0.2,
        ..ServeConfig::default()
    };
    let (events, took, cancelled, timeouts) = timed(2000, 0, config).await;
    assert_timed_out(&events, "the first token");
    assert_eq!(events.len(), 3, "meta, error, done");
    assert_eq!((cancelled, timeouts), (1, 1));
    println!(
        "first-token timeout: set 200 ms, observed {} ms",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_between_tokens_timeout_fires_and_stops_the_engine() {
    let config = ServeConfig {
        token_timeout_secs: 0.15,
        ..ServeConfig::default()
    };
    // The first token comes after 300 ms (within the 120 s first-token
    // limit), the second would take another 300 ms: over the 150 ms limit.
    let (events, took, cancelled, timeouts) = timed(300, 0, config).await;
    assert_timed_out(&events, "the next token");
    assert_eq!(events[1].event, "delta");
    assert_eq!((cancelled, timeouts), (1, 1));
    println!(
        "between-tokens timeout: set 150 ms, observed {} ms after the first token",
        took.as_millis().saturating_sub(300)
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1300),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_whole_answer_timeout_fires_and_stops_the_engine() {
    let config = ServeConfig {
        answer_timeout_secs: 0.5,
        ..ServeConfig::default()
    };
    let (events, took, cancelled, timeouts) = timed(20, 1000, config).await;
    assert_timed_out(&events, "the whole answer");
    assert!(events.iter().filter(|e| e.event == "delta").count() >= 5);
    assert_eq!((cancelled, timeouts), (1, 1));
    println!(
        "whole-answer timeout: set 500 ms, observed {} ms",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1300),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_page_allows_only_its_own_nonce_and_everything_else_no_script() {
    let (state, _, _) = fake_state(FakeConfig::default(), ServeConfig::default());
    let app = kinko::router(state);
    let page = app
        .clone()
        .oneshot(
            Request::get("/")
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy")
        .to_string();
    assert!(nonce.len() >= 16, "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains("object-src 'none'") && policy.contains("frame-ancestors 'none'"));
    let html = body_text(page).await;
    // Every inline script of the page carries that nonce.
    let scripts = html.matches("<script").count();
    assert!(scripts >= 1);
    assert_eq!(
        html.matches(&format!("nonce=\"{nonce}\"")).count(),
        scripts,
        "{html}"
    );
    // A second page gets a nonce of its own.
    let again = app
        .clone()
        .oneshot(
            Request::get("/")
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!again.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains(&nonce));
    // API answers and unknown pages allow no script at all.
    for path in ["/api/models", "/no/such/page"] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let policy = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'none'"), "{path}: {policy}");
        assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}

#[tokio::test]
async fn the_model_list_names_the_default_model_for_new_chats() {
    let config = ServeConfig {
        default_model: "fake:latest".into(),
        ..ServeConfig::default()
    };
    let (state, _, _) = fake_state(FakeConfig::default(), config);
    let resp = kinko::router(state)
        .oneshot(Request::get("/api/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["default_model"], "fake:latest");
    assert_eq!(ServeConfig::default().default_model, "smollm2:135m");
}

#[tokio::test]
async fn after_five_wrong_keys_a_client_gets_429_with_retry_after() {
    let (state, _, _) = fake_state(FakeConfig::default(), keyed());
    let app = kinko::router(state);
    let login = |key: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("key={key}")))
            .unwrap()
    };
    for attempt in 1..=kinko::security::LOGIN_ATTEMPTS {
        let resp = app.clone().oneshot(login("a-wrong-guess")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Locked out now, even with the right key.
    let resp = app.clone().oneshot(login("sesame-open-up")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= kinko::security::LOGIN_WINDOW.as_secs());
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
    assert!(body_text(resp).await.contains("Too many wrong keys"));
}

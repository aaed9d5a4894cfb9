//! `GET /health`, `GET /metrics` (Prometheus text format), and the answer
//! Ollama's clients expect from `GET /`.

use crate::AppState;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The health and metrics routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// The server's state; with upstreams, each replica's. `/health` needs no
/// key, so upstream URLs and errors are shown only to a caller that could
/// use the API (or when the server has no key).
async fn health(State(state): State<AppState>, headers: HeaderMap) -> Json<serde_json::Value> {
    let mut body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "engine": state.engine_name,
        "streams_active": state.metrics.active_streams(),
    });
    if let Some(upstreams) = &state.upstreams {
        let detailed = state.security.authorized(&headers);
        body["upstreams"] = json!(upstreams.report(detailed));
    }
    Json(body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Whether `req` is a client checking that the server is up, as Ollama's
/// clients do: `GET /` or `HEAD /` without asking for HTML. A browser's
/// request names `text/html` in `Accept` and gets the chat page.
pub fn is_server_probe(req: &Request) -> bool {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    req.uri().path() == "/"
        && (req.method() == Method::GET || req.method() == Method::HEAD)
        && !wants_html
}

/// Middleware: a server probe gets Ollama's `Ollama is running` (plain
/// text, as Ollama answers it); everything else goes on.
pub async fn server_probe(req: Request, next: Next) -> Response {
    if is_server_probe(&req) {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Ollama is running",
        )
            .into_response();
    }
    next.run(req).await
}

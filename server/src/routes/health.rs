//! `GET /health` and `GET /metrics` (Prometheus text format).

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
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

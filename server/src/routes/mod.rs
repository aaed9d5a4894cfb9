//! HTTP routes, one module per area; `crate::router` merges them.

pub mod chat;
pub mod embed;
pub mod health;
pub mod models;
pub mod ollama;
pub mod openai;

use crate::error::ApiError;
use axum::response::{IntoResponse, Response};

/// `err` in the shape of the API that `path` belongs to: OpenAI's under
/// `/v1/`, Ollama's `{"error": "…"}` on its routes, kinko's own otherwise.
/// For answers given before a route's handler runs.
pub fn error_for_path(path: &str, err: ApiError) -> Response {
    if path.starts_with("/v1/") {
        openai::OpenAiError(err).into_response()
    } else if path.starts_with("/api/") && path != "/api/models" && !path.starts_with("/api/chat/")
    {
        ollama::OllamaError(err).into_response()
    } else {
        err.into_response()
    }
}

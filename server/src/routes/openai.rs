//! OpenAI's chat API, so OpenAI clients work unchanged:
//! `POST /v1/chat/completions` (streaming SSE ending in `data: [DONE]`, or
//! one JSON object) and `GET /v1/models`. Non-streaming answers are still
//! read from the engine as a stream, so a client that goes away cancels.
//! Errors use OpenAI's shape.

use super::chat::start_answer;
use crate::error::ApiError;
use crate::sse::ChatEvent;
use crate::AppState;
use app::api::FinishReason;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use kinko_parse::requests::openai::CompletionBody;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The OpenAI routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
}

/// An error in OpenAI's shape.
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<JsonRejection> for OpenAiError {
    fn from(e: JsonRejection) -> Self {
        OpenAiError(e.into())
    }
}

fn error_type(e: &ApiError) -> &'static str {
    match e.status().as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        503 => "server_overloaded",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.0.to_string(),
            "type": error_type(&self.0),
            "param": Value::Null,
            "code": self.0.code(),
        }});
        self.0.respond_with(body)
    }
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    format!("chatcmpl-{}", crate::models::hex(&bytes))
}

async fn completions(
    State(state): State<AppState>,
    body: Result<Json<CompletionBody>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let Json(body) = body?;
    let req = body.chat_request().map_err(ApiError::invalid)?;
    let answer = start_answer(&state, req, started).await?;
    let model = answer.meta.model.clone();
    let id = completion_id();
    let created = unix_now();
    let mut events = answer.events;

    if !body.stream {
        let mut text = String::new();
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Delta(d) => text.push_str(&d.text),
                ChatEvent::Done(done) => {
                    let u = done.usage;
                    return Ok(Json(json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": finish(done.finish_reason), "logprobs": null}],
                        "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                                  "total_tokens": u.prompt_tokens + u.completion_tokens},
                    }))
                    .into_response());
                }
                ChatEvent::Error(e) => {
                    let err = match e.code.as_str() {
                        "timeout" => ApiError::Engine(format!("timeout: {}", e.message)),
                        "upstream" => ApiError::Upstream {
                            status: axum::http::StatusCode::BAD_GATEWAY,
                            message: e.message,
                        },
                        _ => ApiError::Engine(e.message),
                    };
                    return Err(err.into());
                }
                ChatEvent::Meta(_) => {}
            }
        }
        return Err(ApiError::Engine("the answer ended early".into()).into());
    }

    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |delta: Value, finish_reason: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
        })
    };
    let sse = async_stream::stream! {
        yield Event::default().data(chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string());
        let mut failed = false;
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Meta(_) => {}
                ChatEvent::Delta(d) => {
                    yield Event::default().data(chunk(json!({"content": d.text}), Value::Null).to_string());
                }
                ChatEvent::Done(done) => {
                    if failed {
                        break;
                    }
                    yield Event::default().data(chunk(json!({}), json!(finish(done.finish_reason))).to_string());
                    if include_usage {
                        let u = done.usage;
                        let mut last = chunk(json!({}), Value::Null);
                        last["choices"] = json!([]);
                        last["usage"] = json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                                               "total_tokens": u.prompt_tokens + u.completion_tokens});
                        yield Event::default().data(last.to_string());
                    }
                }
                ChatEvent::Error(e) => {
                    failed = true;
                    yield Event::default().data(json!({"error": {"message": e.message, "type": "server_error", "param": null, "code": e.code}}).to_string());
                }
            }
        }
        yield Event::default().data("[DONE]");
    };
    let sse = sse.map(Ok::<Event, Infallible>);
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(state.config.keep_alive()))
        .into_response())
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    let created = unix_now();
    let mut data: Vec<Value> = state
        .engine
        .list_models()
        .await
        .into_iter()
        .map(|m| {
            let owner = m.upstream.as_deref().unwrap_or("kinko");
            json!({"id": m.name, "object": "model", "created": created, "owned_by": owner})
        })
        .collect();
    // Embedding models too (for /v1/embeddings); the chat engine lists
    // chat models only.
    if let (Some(store), Some(_)) = (state.store.clone(), &state.embeddings) {
        let installed = tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default();
        data.extend(
            installed
                .into_iter()
                .filter(|m| !m.manifest.kind.is_chat())
                .map(|m| {
                    json!({"id": m.manifest.name, "object": "model", "created": m.manifest.created, "owned_by": "kinko"})
                }),
        );
    }
    Json(json!({"object": "list", "data": data}))
}

//! OpenAI's chat API, so OpenAI clients work unchanged:
//! `POST /v1/chat/completions` and the legacy `POST /v1/completions`
//! (streaming SSE ending in `data: [DONE]`, or one JSON object) and
//! `GET /v1/models`. Non-streaming answers are still
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
use kinko_parse::requests::openai::{CompletionBody, LegacyBody};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The OpenAI routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/completions", post(legacy_completions))
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

fn completion_id(shape: Shape) -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    let prefix = match shape {
        Shape::Chat => "chatcmpl",
        Shape::Text => "cmpl",
    };
    format!("{prefix}-{}", crate::models::hex(&bytes))
}

/// Which OpenAI answer shape: chat completions or legacy completions.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

impl Shape {
    fn object(self, streaming: bool) -> &'static str {
        match (self, streaming) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    /// One choice carrying `text`: a whole message (`done`) or a delta.
    fn choice(self, text: &str, finish_reason: Value, done: bool) -> Value {
        match (self, done) {
            (Shape::Chat, true) => {
                json!({"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": finish_reason, "logprobs": null})
            }
            (Shape::Chat, false) => json!({"index": 0, "delta": {"content": text},
                                           "finish_reason": finish_reason, "logprobs": null}),
            (Shape::Text, _) => json!({"index": 0, "text": text, "finish_reason": finish_reason,
                                       "logprobs": null}),
        }
    }
}

async fn completions(
    State(state): State<AppState>,
    body: Result<Json<CompletionBody>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let Json(body) = body?;
    super::chat::require(&state, &body.model, &body.needs()).await?;
    let req = body.chat_request().map_err(ApiError::invalid)?;
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    answer(
        &state,
        req,
        started,
        Shape::Chat,
        body.stream,
        include_usage,
    )
    .await
}

/// `POST /v1/completions`.
async fn legacy_completions(
    State(state): State<AppState>,
    body: Result<Json<LegacyBody>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let Json(body) = body?;
    super::chat::require(&state, &body.model, &body.needs()).await?;
    let req = body.chat_request().map_err(ApiError::invalid)?;
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    answer(
        &state,
        req,
        started,
        Shape::Text,
        body.stream,
        include_usage,
    )
    .await
}

/// The model's tool calls as OpenAI writes them (arguments as a JSON
/// string); in a streamed delta each carries its `index`.
fn tool_calls_value(calls: &[app::api::ToolCall], streamed: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let arguments = match &c.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut v = json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": arguments}});
            if streamed {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

fn usage(u: app::api::Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// Start `req` and answer it in `shape`: one JSON object, or server-sent
/// events ending in `data: [DONE]`.
async fn answer(
    state: &AppState,
    req: app::api::ChatRequest,
    started: Instant,
    shape: Shape,
    stream: bool,
    include_usage: bool,
) -> Result<Response, OpenAiError> {
    let answer = start_answer(state, req, started).await?;
    let model = answer.meta.model.clone();
    let id = completion_id(shape);
    let created = unix_now();
    let mut events = answer.events;

    if !stream {
        let mut text = String::new();
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Delta(d) => text.push_str(&d.text),
                ChatEvent::Done(done) => {
                    let mut choice = shape.choice(&text, json!(finish(done.finish_reason)), true);
                    if !done.tool_calls.is_empty() {
                        choice["message"]["tool_calls"] = tool_calls_value(&done.tool_calls, false);
                        choice["message"]["content"] = Value::Null;
                        choice["finish_reason"] = json!("tool_calls");
                    }
                    return Ok(Json(json!({
                        "id": id, "object": shape.object(false), "created": created, "model": model,
                        "choices": [choice],
                        "usage": usage(done.usage),
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

    let chunk = move |choices: Value| {
        json!({
            "id": id, "object": shape.object(true), "created": created, "model": model,
            "choices": choices,
        })
    };
    let sse = async_stream::stream! {
        if let Shape::Chat = shape {
            let first = json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": null, "logprobs": null}]);
            yield Event::default().data(chunk(first).to_string());
        }
        let mut failed = false;
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Meta(_) => {}
                ChatEvent::Delta(d) => {
                    let choice = shape.choice(&d.text, Value::Null, false);
                    yield Event::default().data(chunk(json!([choice])).to_string());
                }
                ChatEvent::Done(done) => {
                    if failed {
                        break;
                    }
                    let mut last = shape.choice("", json!(finish(done.finish_reason)), false);
                    if let (Shape::Chat, Some(o)) = (shape, last.as_object_mut()) {
                        o.insert("delta".into(), json!({}));
                    }
                    if !done.tool_calls.is_empty() {
                        let calls = json!([{"index": 0, "delta": {"tool_calls": tool_calls_value(&done.tool_calls, true)},
                                            "finish_reason": null, "logprobs": null}]);
                        yield Event::default().data(chunk(calls).to_string());
                        last["finish_reason"] = json!("tool_calls");
                    }
                    yield Event::default().data(chunk(json!([last])).to_string());
                    if include_usage {
                        let mut last = chunk(json!([]));
                        last["usage"] = usage(done.usage);
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

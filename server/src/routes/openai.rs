//! OpenAI's chat API, so OpenAI clients work unchanged:
//! `POST /v1/chat/completions` (streaming SSE ending in `data: [DONE]`, or
//! one JSON object) and `GET /v1/models`. Non-streaming answers are still
//! read from the engine as a stream, so a client that goes away cancels.
//! Errors use OpenAI's shape.

use super::chat::start_answer;
use crate::error::ApiError;
use crate::sse::ChatEvent;
use crate::AppState;
use app::api::{ChatMessage, ChatOptions, ChatRequest, FinishReason, Role};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
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

/// Message content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    n: Option<usize>,
    /// A string or a list of strings.
    #[serde(default)]
    stop: Option<Value>,
}

fn to_message(m: Message) -> Result<ChatMessage, OpenAiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(ApiError::invalid(format!(
                "role `{other}` is not supported (system, developer, user, assistant)"
            ))
            .into())
        }
    };
    let text = match m.content {
        None => String::new(),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                return Err(ApiError::invalid(format!(
                    "content parts of type `{}` are not supported",
                    p.kind
                ))
                .into());
            }
            parts
                .into_iter()
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    Ok(ChatMessage::new(role, text))
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
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported").into());
    }
    let messages = body
        .messages
        .into_iter()
        .map(to_message)
        .collect::<Result<Vec<_>, _>>()?;
    let stop = match body.stop {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s]),
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::invalid(
                        "stop must be a string or a list of strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(ApiError::invalid("stop must be a string or a list of strings").into())
        }
    };
    let req = ChatRequest {
        model: body.model,
        messages,
        options: ChatOptions {
            temperature: body.temperature,
            top_p: body.top_p,
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            stop,
            ..ChatOptions::default()
        },
    };
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
                    let err = if e.code == "timeout" {
                        ApiError::Engine(format!("timeout: {}", e.message))
                    } else {
                        ApiError::Engine(e.message)
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
    let data: Vec<Value> = state
        .engine
        .list_models()
        .await
        .into_iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": created, "owned_by": "kinko"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

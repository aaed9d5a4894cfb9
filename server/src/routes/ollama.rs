//! Ollama's REST API, so existing Ollama clients work unchanged: chat and
//! generate (streaming NDJSON or one JSON), tags, show, ps, delete, copy,
//! version. Answers go through the same `start_answer` as the UI's stream
//! (validation, history window, load limits, timeouts, cancellation).
//! Errors use Ollama's shape, `{"error": "message"}`.

use super::chat::{start_answer_kept, Answer};
use crate::engine::KeepAlive;
use crate::error::ApiError;
use crate::models::InstalledModel;
use crate::sse::ChatEvent;
use crate::AppState;
use app::api::DoneEvent;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use kinko_parse::requests::ollama::{ChatBody, GenerateBody};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The Ollama routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(ps))
        .route("/api/delete", delete(delete_model))
        .route("/api/copy", post(copy))
        .route("/api/version", get(version))
        .route("/api/create", post(create))
        .route("/api/pull", post(pull))
        .route("/api/blobs/{digest}", post(upload_blob).head(has_blob))
}

/// `HEAD /api/blobs/:digest`: 200 when the blob is there, 404 when not.
async fn has_blob(
    State(state): State<AppState>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> OResult<StatusCode> {
    let store = served_store(&state)?;
    match store.blob(&digest).map_err(ApiError::from)? {
        Some(_) => Ok(StatusCode::OK),
        None => Ok(StatusCode::NOT_FOUND),
    }
}

/// `POST /api/blobs/:digest`: the body, streamed to disk, becomes the blob
/// once its digest matches and it passes the GGUF validator; 201 when
/// written, 200 when it was already there.
async fn upload_blob(
    State(state): State<AppState>,
    axum::extract::Path(digest): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> OResult<StatusCode> {
    use crate::models::blobs::{self, BlobError};
    let store = served_store(&state)?;
    let max = state.config.max_blob_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the upload is larger than the limit ({max} bytes)"
        ))
        .into());
    }
    let body = req.into_body().into_data_stream();
    let bad = |code: &'static str, e: BlobError| ApiError::BadRequest {
        code,
        message: e.to_string(),
    };
    match blobs::receive(&store, &digest, body, max).await {
        Ok(true) => Ok(StatusCode::CREATED),
        Ok(false) => Ok(StatusCode::OK),
        Err(e @ BlobError::Digest(_)) => Err(bad("invalid_digest", e).into()),
        Err(e @ BlobError::Mismatch { .. }) => Err(bad("digest_mismatch", e).into()),
        Err(e @ BlobError::NotAModel(_)) => Err(bad("not_a_model", e).into()),
        Err(e @ BlobError::BrokeOff(_)) => Err(bad("upload_broke_off", e).into()),
        Err(e @ BlobError::TooLarge(_)) => Err(ApiError::PayloadTooLarge(e.to_string()).into()),
        Err(BlobError::Store(e)) => Err(ApiError::from(e).into()),
    }
}

/// An error in Ollama's shape, `{"error": "…"}`, with kinko's status.
pub struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.0.to_string() });
        self.0.respond_with(body)
    }
}

type OResult<T> = Result<T, OllamaError>;

/// A JSON body read whatever its `Content-Type` says, as Ollama does
/// (`curl -d` sends form encoding).
pub struct AnyJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for AnyJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OllamaError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            OllamaError(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is larger than the limit".into())
            } else {
                ApiError::MalformedJson(e.body_text())
            })
        })?;
        serde_json::from_slice(&bytes).map(AnyJson).map_err(|e| {
            let text = kinko_parse::requests::one_line(&e.to_string());
            OllamaError(if e.is_data() {
                ApiError::invalid(text)
            } else {
                ApiError::MalformedJson(text)
            })
        })
    }
}

/// RFC 3339 UTC time, as Ollama writes `created_at`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Which API shape an answer is written in.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Generate,
}

fn piece(shape: Shape, model: &str, text: &str) -> Value {
    match shape {
        Shape::Chat => json!({
            "model": model, "created_at": now(),
            "message": {"role": "assistant", "content": text}, "done": false,
        }),
        Shape::Generate => json!({
            "model": model, "created_at": now(), "response": text, "done": false,
        }),
    }
}

/// The model's tool calls as Ollama writes them in `message.tool_calls`.
fn tool_calls_value(calls: &[app::api::ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}})
        })
        .collect()
}

/// A chat piece carrying the model's tool calls.
fn tool_call_piece(model: &str, calls: &[app::api::ToolCall]) -> Value {
    let mut v = piece(Shape::Chat, model, "");
    v["message"]["tool_calls"] = tool_calls_value(calls);
    v
}

fn ns(ms: f64) -> u64 {
    (ms.max(0.0) * 1e6) as u64
}

fn final_piece(
    shape: Shape,
    model: &str,
    text: &str,
    done: &DoneEvent,
    load_ms: f64,
    total_ms: f64,
) -> Value {
    let ttft = done.timings.ttft_ms;
    // An upstream's own figures where it gave them.
    let prompt_eval_ms = done.timings.prompt_ms.unwrap_or((ttft - load_ms).max(0.0));
    let eval_ms = done.timings.decode_ms.unwrap_or((total_ms - ttft).max(0.0));
    let mut v = piece(shape, model, text);
    let o = v.as_object_mut();
    if let Some(o) = o {
        o.insert("done".into(), json!(true));
        o.insert("done_reason".into(), json!(done.finish_reason.as_str()));
        o.insert("total_duration".into(), json!(ns(total_ms)));
        o.insert("load_duration".into(), json!(ns(load_ms)));
        o.insert("prompt_eval_count".into(), json!(done.usage.prompt_tokens));
        o.insert("prompt_eval_duration".into(), json!(ns(prompt_eval_ms)));
        o.insert("eval_count".into(), json!(done.usage.completion_tokens));
        o.insert("eval_duration".into(), json!(ns(eval_ms)));
    }
    v
}

/// Write an answer as Ollama does: NDJSON pieces then a final one, or (with
/// `stream: false`) one JSON object. Both read the engine as a stream, so a
/// client that goes away cancels the generation either way.
async fn respond(answer: Answer, shape: Shape, stream: bool, started: Instant) -> Response {
    let model = answer.meta.model.clone();
    let load_ms = answer.load_ms;
    let mut events = answer.events;
    if !stream {
        let mut text = String::new();
        while let Some(event) = events.next().await {
            match event {
                ChatEvent::Delta(d) => text.push_str(&d.text),
                ChatEvent::Done(done) => {
                    let total = started.elapsed().as_secs_f64() * 1000.0;
                    let mut v = final_piece(shape, &model, &text, &done, load_ms, total);
                    if !done.tool_calls.is_empty() {
                        v["message"]["tool_calls"] = tool_calls_value(&done.tool_calls);
                    }
                    return Json(v).into_response();
                }
                ChatEvent::Error(e) => {
                    let status = match e.code.as_str() {
                        "timeout" => StatusCode::GATEWAY_TIMEOUT,
                        "upstream" => StatusCode::BAD_GATEWAY,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    return (status, Json(json!({ "error": e.message }))).into_response();
                }
                ChatEvent::Meta(_) => {}
            }
        }
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the answer ended early"})),
        )
            .into_response();
    }
    let lines = async_stream::stream! {
        let mut failed = false;
        while let Some(event) = events.next().await {
            let line = match event {
                ChatEvent::Meta(_) => continue,
                ChatEvent::Delta(d) => piece(shape, &model, &d.text),
                ChatEvent::Done(done) => {
                    if failed {
                        break;
                    }
                    if !done.tool_calls.is_empty() {
                        // As Ollama streams them: a piece with the calls,
                        // then the final one.
                        let mut bytes = serde_json::to_vec(&tool_call_piece(&model, &done.tool_calls))
                            .unwrap_or_default();
                        bytes.push(b'\n');
                        yield Ok(Bytes::from(bytes));
                    }
                    let total = started.elapsed().as_secs_f64() * 1000.0;
                    final_piece(shape, &model, "", &done, load_ms, total)
                }
                ChatEvent::Error(e) => {
                    failed = true;
                    json!({ "error": e.message })
                }
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            yield Ok::<Bytes, std::convert::Infallible>(Bytes::from(bytes));
        }
    };
    let mut resp = Response::new(Body::from_stream(lines));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// `keep_alive` as a request sends it (none: the server's default).
pub fn keep_alive(v: Option<&Value>) -> OResult<Option<KeepAlive>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => KeepAlive::parse(v).map(Some).ok_or_else(|| {
            OllamaError(ApiError::invalid(format!(
                "keep_alive `{v}` is not a duration (e.g. \"5m\", 300, 0, -1)"
            )))
        }),
    }
}

/// A request without a prompt loads the model, or with `keep_alive: 0`
/// unloads it, as Ollama's does.
async fn load_or_unload(
    state: &AppState,
    model: &str,
    keep_alive: Option<KeepAlive>,
    shape: Shape,
) -> OResult<Response> {
    let name = resolve(state, model).await?;
    let reason = if keep_alive == Some(KeepAlive::For(std::time::Duration::ZERO)) {
        state.engine.unload(&name).await;
        "unload"
    } else {
        state
            .engine
            .ensure_loaded(&name, keep_alive)
            .await
            .map_err(ApiError::from)?;
        "load"
    };
    let mut v = piece(shape, &name, "");
    if let Some(o) = v.as_object_mut() {
        o.insert("done".into(), json!(true));
        o.insert("done_reason".into(), json!(reason));
    }
    Ok(Json(v).into_response())
}

async fn chat(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<ChatBody>,
) -> OResult<Response> {
    let started = Instant::now();
    let stream = body.stream.unwrap_or(true);
    let keep_alive = keep_alive(body.keep_alive.as_ref())?;
    if body.messages.is_empty() {
        return load_or_unload(&state, &body.model, keep_alive, Shape::Chat).await;
    }
    let req = body.chat_request().map_err(ApiError::invalid)?;
    let needs = body.needs().map_err(ApiError::invalid)?;
    super::chat::require(&state, &body.model, &needs).await?;
    let answer = start_answer_kept(&state, req, started, keep_alive).await?;
    Ok(respond(answer, Shape::Chat, stream, started).await)
}

async fn generate(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<GenerateBody>,
) -> OResult<Response> {
    let started = Instant::now();
    let stream = body.stream.unwrap_or(true);
    let keep_alive = keep_alive(body.keep_alive.as_ref())?;
    if body.prompt.trim().is_empty() {
        return load_or_unload(&state, &body.model, keep_alive, Shape::Generate).await;
    }
    let needs = body.needs().map_err(ApiError::invalid)?;
    super::chat::require(&state, &body.model, &needs).await?;
    let req = body.chat_request().map_err(ApiError::invalid)?;
    let answer = start_answer_kept(&state, req, started, keep_alive).await?;
    Ok(respond(answer, Shape::Generate, stream, started).await)
}

async fn resolve(state: &AppState, model: &str) -> OResult<String> {
    Ok(super::chat::find_model(state, model).await?.name)
}

fn parameter_size(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", (n as f64 / 1e6).round() as u64)
    }
}

fn details(m: &InstalledModel) -> Value {
    let man = &m.manifest;
    json!({
        "parent_model": "",
        "format": man.kind.format(),
        "family": man.architecture,
        "families": [man.architecture],
        "parameter_size": parameter_size(man.parameter_count),
        "quantization_level": man.quantization,
    })
}

fn modified_at(m: &InstalledModel) -> String {
    rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(m.manifest.created))
}

/// How `/api/tags` lists a model the engine serves without a store entry
/// (the fake engine's, an upstream's).
fn engine_tag(m: &app::api::ModelSummary) -> Value {
    let mut v = json!({
        "name": m.name, "model": m.name, "modified_at": now(), "size": m.size, "digest": "",
        "details": {"format": "gguf", "family": m.architecture, "families": [m.architecture],
                    "parameter_size": "", "quantization_level": m.quantization},
        "capabilities": m.capabilities,
    });
    if let (Some(upstream), Some(o)) = (&m.upstream, v.as_object_mut()) {
        // As Ollama lists a model that runs elsewhere.
        let remote = m.name.split_once('/').map_or(m.name.as_str(), |(_, r)| r);
        o.insert("remote_model".into(), json!(remote));
        o.insert("upstream".into(), json!(upstream));
    }
    v
}

async fn tags(State(state): State<AppState>) -> Json<Value> {
    let engine_models = state.engine.list_models().await;
    let mut models: Vec<Value> = match state.store.clone() {
        Some(store) => tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default()
            .iter()
            .map(|m| {
                json!({
                    "name": m.manifest.name, "model": m.manifest.name,
                    "modified_at": modified_at(m), "size": m.manifest.size,
                    "digest": m.manifest.digest.trim_start_matches("sha256:"),
                    "details": details(m),
                    "capabilities": m.manifest.capabilities(),
                })
            })
            .collect(),
        // The fake engine has no store: list what it serves.
        None => engine_models
            .iter()
            .filter(|m| m.upstream.is_none())
            .map(engine_tag)
            .collect(),
    };
    models.extend(
        engine_models
            .iter()
            .filter(|m| m.upstream.is_some())
            .map(engine_tag),
    );
    Json(json!({ "models": models }))
}

#[derive(Deserialize)]
struct NameBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl NameBody {
    fn model(&self) -> OResult<String> {
        self.model
            .clone()
            .or_else(|| self.name.clone())
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| OllamaError(ApiError::invalid("`model` is required")))
    }
}

fn find(state: &AppState, name: &str) -> OResult<InstalledModel> {
    state
        .store
        .as_ref()
        .and_then(|s| s.get(name))
        .ok_or_else(|| OllamaError(ApiError::UnknownModel(name.to_string())))
}

async fn show(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<NameBody>,
) -> OResult<Json<Value>> {
    let name = body.model()?;
    // A model of an upstream, or of an engine without a store (the fake).
    if name.contains('/') || state.store.is_none() {
        return show_engine_model(&state, &name).await;
    }
    let m = find(&state, &name)?;
    let man = &m.manifest;
    let arch = man.architecture.clone();
    let mut parameters = String::new();
    // As Ollama writes them: one line per value, a list's items each on
    // their own line (`stop`).
    for (k, v) in &man.parameters {
        match v {
            Value::Array(items) => {
                for item in items {
                    parameters.push_str(&format!("{k:<16} {item}\n"));
                }
            }
            v => parameters.push_str(&format!("{k:<16} {v}\n")),
        }
    }
    let preset = crate::models::modelfile::Modelfile {
        from: m.gguf_path().display().to_string(),
        system: man.system.clone(),
        template: man.template.clone(),
        parameters: serde_json::from_value(Value::Object(man.parameters.clone()))
            .unwrap_or_default(),
    };
    let modelfile = format!(
        "# Modelfile generated by kinko\n{}",
        crate::models::modelfile::render(&preset)
    );
    // The GGUF header's values, then what the manifest knows for sure.
    let mut model_info = man.model_info.clone();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert("general.parameter_count".into(), json!(man.parameter_count));
    model_info.insert(format!("{arch}.context_length"), json!(man.context_length));
    if let Some(d) = man.embedding_length {
        model_info.insert(format!("{arch}.embedding_length"), json!(d));
    }
    // The template that formats prompts: the GGUF's own (a Modelfile's
    // TEMPLATE is kept for the record, but kinko applies the GGUF's).
    let template = man
        .chat_template
        .clone()
        .or_else(|| man.template.clone())
        .unwrap_or_default();
    Ok(Json(json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "system": man.system.clone().unwrap_or_default(),
        "details": details(&m),
        "model_info": model_info,
        "capabilities": man.capabilities(),
        "modified_at": modified_at(&m),
    })))
}

/// What `/api/show` says of an upstream's model: what its listing gave.
async fn show_engine_model(state: &AppState, name: &str) -> OResult<Json<Value>> {
    let m = super::chat::find_model(state, name).await?;
    let arch = if m.architecture.is_empty() {
        "unknown"
    } else {
        m.architecture.as_str()
    };
    let tag = engine_tag(&m);
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(arch));
    model_info.insert(format!("{arch}.context_length"), json!(m.context_length));
    let mut v = json!({
        "modelfile": "", "parameters": "", "template": "", "system": "",
        "details": tag["details"].clone(),
        "model_info": model_info,
        "capabilities": m.capabilities,
        "modified_at": now(),
    });
    if let Some(o) = v.as_object_mut() {
        o.insert("remote_model".into(), tag["remote_model"].clone());
        o.insert("upstream".into(), tag["upstream"].clone());
    }
    Ok(Json(v))
}

async fn ps(State(state): State<AppState>) -> Json<Value> {
    let mut loaded = state.engine.loaded_models().await;
    if let Some(e) = &state.embeddings {
        loaded.extend(e.loaded_models().await);
    }
    let models: Vec<Value> = loaded
        .into_iter()
        .map(|l| {
            let m = state.store.as_ref().and_then(|s| s.get(&l.name));
            json!({
                "name": l.name, "model": l.name,
                "size": m.as_ref().map(|m| m.manifest.size).unwrap_or(0),
                "digest": m.as_ref().map(|m| m.manifest.digest.trim_start_matches("sha256:").to_string()).unwrap_or_default(),
                "details": m.as_ref().map(details).unwrap_or(Value::Null),
                // A model without an expiry stays loaded: "never" is the
                // far future, as a valid date for clients that parse it.
                "expires_at": l.expires_at.map(rfc3339).unwrap_or_else(|| "9999-12-31T23:59:59Z".into()),
                "size_vram": 0,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

async fn delete_model(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<NameBody>,
) -> OResult<StatusCode> {
    let name = body.model()?;
    let store = state
        .store
        .clone()
        .ok_or_else(|| OllamaError(ApiError::UnknownModel(name.clone())))?;
    unload_everywhere(&state, &name).await;
    let removed = tokio::task::spawn_blocking(move || store.remove(&name))
        .await
        .map_err(crate::error::task_failed)?;
    match removed {
        Ok(true) => Ok(StatusCode::OK),
        Ok(false) => Err(ApiError::UnknownModel(body.model()?).into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

/// Unload `name` from whichever engine holds it.
async fn unload_everywhere(state: &AppState, name: &str) {
    state.engine.unload(name).await;
    if let Some(e) = &state.embeddings {
        e.unload(name).await;
    }
}

#[derive(Deserialize)]
struct CopyBody {
    source: String,
    destination: String,
}

async fn copy(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<CopyBody>,
) -> OResult<StatusCode> {
    let store = state
        .store
        .clone()
        .ok_or_else(|| OllamaError(ApiError::UnknownModel(body.source.clone())))?;
    let source = body.source.clone();
    // A model loaded under the destination name is replaced: unload it.
    unload_everywhere(&state, &body.destination).await;
    let copied = tokio::task::spawn_blocking(move || store.copy(&body.source, &body.destination))
        .await
        .map_err(crate::error::task_failed)?;
    match copied {
        Ok(true) => Ok(StatusCode::OK),
        Ok(false) => Err(ApiError::UnknownModel(source).into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// A whole Modelfile (the older API, and what `kinko create` sends).
    #[serde(default)]
    modelfile: Option<String>,
    /// The newer API's fields.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    quantize: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    /// Uploaded blobs by file name (`{"model.gguf": "sha256:…"}`), the
    /// newer API's way to name a model file sent from another machine.
    #[serde(default)]
    files: Option<std::collections::BTreeMap<String, String>>,
    /// LoRA adapters: not supported, refused.
    #[serde(default)]
    adapters: Option<Map<String, Value>>,
}

/// The one GGUF file among uploaded `files`, as a path in the store's blobs.
fn uploaded_gguf(
    store: &crate::models::ModelStore,
    files: &std::collections::BTreeMap<String, String>,
) -> OResult<String> {
    let mut ggufs = files.iter().filter(|(name, _)| name.ends_with(".gguf"));
    let (file, digest) = match (ggufs.next(), ggufs.next()) {
        (Some(one), None) if files.len() == 1 => one,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "`files` names more than one GGUF file: kinko takes one-file models only",
            )
            .into())
        }
        _ => {
            return Err(ApiError::invalid(
                "`files` must name exactly one `.gguf` file: kinko imports GGUF models only",
            )
            .into())
        }
    };
    blob_from(store, digest).map_err(|e| {
        OllamaError(match e.0 {
            ApiError::Invalid { message, .. } => ApiError::invalid(format!("{file}: {message}")),
            other => other,
        })
    })
}

/// The uploaded blob `digest`, as a path; 422 when it was never uploaded.
fn blob_from(store: &crate::models::ModelStore, digest: &str) -> OResult<String> {
    match store.blob(digest).map_err(ApiError::from)? {
        Some(path) => Ok(path.display().to_string()),
        None => Err(ApiError::invalid(format!(
            "blob {digest} has not been uploaded: send it with POST /api/blobs/{digest} first"
        ))
        .into()),
    }
}

async fn create(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<CreateBody>,
) -> OResult<Response> {
    use crate::models::modelfile::{self, Modelfile, Parameters};
    let name = body
        .model
        .clone()
        .or(body.name.clone())
        .ok_or_else(|| OllamaError(ApiError::invalid("`model` is required")))?;
    let store = served_store(&state)?;
    if body.adapters.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::Unsupported("kinko does not support adapters".into()).into());
    }
    if body.files.is_some() && (body.from.is_some() || body.modelfile.is_some()) {
        return Err(ApiError::invalid(
            "send either `files` or a `from` model (or a `modelfile`), not both",
        )
        .into());
    }
    let uploaded = match &body.files {
        Some(files) => Some(uploaded_gguf(&store, files)?),
        None => None,
    };
    let mut parsed: Modelfile = match (&body.modelfile, body.from.clone().or(uploaded)) {
        (Some(text), _) => modelfile::parse(text).map_err(|e| {
            OllamaError(ApiError::Invalid {
                code: "bad_modelfile",
                message: e.to_string(),
            })
        })?,
        (None, Some(from)) => Modelfile {
            from,
            system: body.system.clone(),
            template: body.template.clone(),
            parameters: match &body.parameters {
                Some(p) => serde_json::from_value::<Parameters>(Value::Object(p.clone()))
                    .map_err(|e| OllamaError(ApiError::invalid(format!("parameters: {e}"))))?,
                None => Parameters::default(),
            },
        },
        (None, None) => {
            return Err(
                ApiError::invalid("send a `modelfile`, a `from` model or uploaded `files`").into(),
            )
        }
    };
    // Ollama's older CLI uploads the file, then names it `FROM @sha256:…`.
    if let Some(digest) = parsed.from.strip_prefix('@') {
        parsed.from = blob_from(&store, digest)?;
    }
    let quantize = quantize_target(body.quantize.as_deref())?;
    let made = tokio::task::spawn_blocking(move || store.create(&name, &parsed, quantize))
        .await
        .map_err(crate::error::task_failed)?;
    let manifest = made.map_err(ApiError::from)?;
    // A model of that name that was loaded before is stale now.
    state.engine.unload(&manifest.name).await;
    if body.stream == Some(false) {
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let lines = format!(
        "{}\n{}\n{}\n",
        json!({"status": "reading model metadata"}),
        json!({"status": format!("writing manifest for {}", manifest.name)}),
        json!({"status": "success"})
    );
    let mut resp = Response::new(Body::from(lines));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
struct PullBody {
    #[serde(default)]
    model: Option<String>,
    /// The store name to use (default: from the file name).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    quantize: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

fn pull_line(ev: &crate::models::pull::PullEvent) -> Value {
    use crate::models::pull::PullEvent;
    match ev {
        PullEvent::Progress { completed, total } => json!({
            "status": "downloading", "digest": "", "completed": completed, "total": total,
        }),
        PullEvent::Verifying => json!({"status": "verifying sha256 digest"}),
        PullEvent::Installing => json!({"status": "writing manifest"}),
    }
}

async fn pull(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<PullBody>,
) -> OResult<Response> {
    use crate::models::pull::{parse_spec, pull as download, PullError};
    let spec_text = body
        .model
        .clone()
        .ok_or_else(|| OllamaError(ApiError::invalid("`model` is required")))?;
    let spec = parse_spec(&spec_text, body.name.as_deref(), &state.config.hf_endpoint).map_err(
        |e| match e {
            PullError::Store(e) => OllamaError(e.into()),
            other => OllamaError(ApiError::invalid(other.to_string())),
        },
    )?;
    let quantize = quantize_target(body.quantize.as_deref())?;
    let store = served_store(&state)?;
    let failed = |e: PullError| match e {
        PullError::BadSpec(m) => OllamaError(ApiError::invalid(m)),
        PullError::Digest { .. } => OllamaError(ApiError::Invalid {
            code: "digest_mismatch",
            message: e.to_string(),
        }),
        PullError::Store(e) => OllamaError(e.into()),
        e @ PullError::NotAModel(_) => OllamaError(ApiError::invalid(e.to_string())),
        other => OllamaError(ApiError::Unavailable(other.to_string())),
    };
    let max_bytes = state.config.max_pull_bytes;
    if body.stream == Some(false) {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        download(&store, &spec, quantize, state.config.max_pull_bytes, tx)
            .await
            .map_err(failed)?;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let lines = async_stream::stream! {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        yield json!({"status": format!("pulling {}", spec.url)});
        let work = download(&store, &spec, quantize, max_bytes, tx);
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                Some(ev) = rx.recv() => yield pull_line(&ev),
                r = &mut work => break r,
            }
        };
        while let Ok(ev) = rx.try_recv() {
            yield pull_line(&ev);
        }
        match result {
            Ok(_) => yield json!({"status": "success"}),
            Err(e) => yield json!({"error": crate::error::public_message(&failed(e).0.to_string())}),
        }
    }
    .map(|v| {
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<Bytes, std::convert::Infallible>(Bytes::from(bytes))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// `quantize` of create and pull: `q8_0`, `q4_0` or none.
fn quantize_target(q: Option<&str>) -> OResult<Option<crate::models::quantize::Target>> {
    match q {
        None => Ok(None),
        Some(q) => crate::models::quantize::Target::parse(q)
            .map(Some)
            .ok_or_else(|| {
                OllamaError(ApiError::invalid(format!(
                    "quantize must be q8_0 or q4_0, not `{q}`"
                )))
            }),
    }
}

fn served_store(state: &AppState) -> OResult<crate::models::ModelStore> {
    state
        .store
        .clone()
        .ok_or_else(|| OllamaError(ApiError::invalid("this server has no model store")))
}

async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_242_532);
        assert_eq!(rfc3339(t), "2026-11-21T06:28:52.000000000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T00:00:00"));
    }
}

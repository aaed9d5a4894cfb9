//! `POST /api/chat/stream`: validate, resolve the model, fit the history
//! window, start the engine, and relay its tokens as SSE.

use crate::engine::{EngineRequest, KeepAlive as ModelKeepAlive, Sampling};
use crate::error::{ApiError, ApiJson};
use crate::history::{Fit, HistoryWindow, TrimError};
use crate::models::normalize_name;
use crate::sse::{relay, sse_events, ChatEvent, StopFilter, Timeouts};
use crate::AppState;
use app::api::{ChatRequest, MetaEvent, Role};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

/// The share of the first-token timeout a prompt may take to read: earlier
/// messages go (as for the window) until the measured prompt speed says it
/// fits.
const PROMPT_TIME_SHARE: f64 = 0.8;

/// Prompt tokens the server's default context size always leaves beside
/// the answer's `max_tokens`.
const MIN_PROMPT_ROOM: usize = 1024;

/// The chat stream route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/chat/stream", post(stream_chat))
}

/// A preset (made from a Modelfile) brings its system prompt, used when the
/// conversation has none, and its parameters, used where the request sets
/// none.
async fn apply_preset(state: &AppState, req: &mut ChatRequest) {
    // An upstream's model (`prefix/…`) has no preset here: its upstream
    // applies its own.
    let Some(store) = state.store.clone().filter(|_| !req.model.contains('/')) else {
        return;
    };
    let name = req.model.clone();
    let Ok(Some(model)) = tokio::task::spawn_blocking(move || store.get(&name)).await else {
        return;
    };
    let m = model.manifest;
    let p = m.preset_parameters();
    if let Some(system) = m.system.filter(|s| !s.trim().is_empty()) {
        if !req.messages.iter().any(|msg| msg.role == Role::System) {
            req.messages
                .insert(0, app::api::ChatMessage::new(Role::System, system));
        }
    }
    let o = &mut req.options;
    o.temperature = o.temperature.or(p.temperature);
    o.top_p = o.top_p.or(p.top_p);
    o.top_k = o.top_k.or(p.top_k);
    o.max_tokens = o.max_tokens.or(p.num_predict);
    o.repeat_penalty = o.repeat_penalty.or(p.repeat_penalty);
    if o.stop.is_none() && !p.stop.is_empty() {
        o.stop = Some(p.stop);
    }
    o.num_ctx = o.num_ctx.or(p.num_ctx);
}

/// The model a request names: an upstream's `prefix/model` as it is, a
/// local name normalized (`name` → `name:latest`); 404 when there is none,
/// or the upstream's failure when that is why.
pub async fn find_model(
    state: &AppState,
    requested: &str,
) -> Result<app::api::ModelSummary, ApiError> {
    let name = if requested.contains('/') {
        requested.trim().to_string()
    } else {
        normalize_name(requested).map_err(|_| ApiError::UnknownModel(requested.to_string()))?
    };
    match state.engine.model(&name).await {
        Ok(m) => Ok(m),
        Err(crate::engine::EngineError::UnknownModel(_)) => {
            let embedding = match &state.embeddings {
                Some(e) => e.installed(&name).await.ok(),
                None => None,
            };
            Err(match embedding {
                Some(m) => ApiError::WrongKind(format!(
                    "`{}` is an embedding model: it makes vectors (POST /api/embed or /v1/embeddings), not answers; pick a chat model",
                    m.manifest.name
                )),
                None => ApiError::UnknownModel(requested.to_string()),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuse a request that needs what `model` cannot do (tools, thinking,
/// vision, insert) with Ollama's 400 and message, before anything runs.
pub async fn require(
    state: &AppState,
    model: &str,
    needs: &[app::api::Capability],
) -> Result<(), ApiError> {
    if needs.is_empty() {
        return Ok(());
    }
    let info = find_model(state, model).await?;
    match needs.iter().find(|n| !info.capabilities.contains(n)) {
        None => Ok(()),
        Some(app::api::Capability::Thinking) => Err(ApiError::Unsupported(format!(
            "\"{}\" does not support thinking",
            info.name
        ))),
        Some(missing) => Err(ApiError::Unsupported(format!(
            "{} does not support {}",
            info.name,
            missing.as_str()
        ))),
    }
}

/// An answer that passed every check and holds a generation slot: its
/// `meta`, and its events (`delta`…, then `done` or `error`).
pub struct Answer {
    /// What the `meta` event says.
    pub meta: MetaEvent,
    /// The events, `meta` first; dropping them cancels the generation.
    pub events: BoxStream<'static, ChatEvent>,
    /// Milliseconds spent loading the model for this answer.
    pub load_ms: f64,
}

/// Validate `req`, resolve its model, fit the history window, take a
/// generation slot and start the engine. Every API (the UI's SSE, Ollama's,
/// OpenAI's) answers through here, so all share the same guard rails.
pub async fn start_answer(
    state: &AppState,
    req: ChatRequest,
    started: Instant,
) -> Result<Answer, ApiError> {
    start_answer_kept(state, req, started, None).await
}

/// [`start_answer`], keeping the model loaded for `keep_alive` afterwards
/// (instead of the server's default).
pub async fn start_answer_kept(
    state: &AppState,
    mut req: ChatRequest,
    started: Instant,
    keep_alive: Option<ModelKeepAlive>,
) -> Result<Answer, ApiError> {
    let config = &state.config;
    apply_preset(state, &mut req).await;
    kinko_parse::requests::check_messages(&req.messages).map_err(ApiError::invalid)?;
    let mut max_tokens = kinko_parse::requests::validate_options(
        &req.options,
        config.default_max_tokens,
        config.max_tokens_cap,
    )
    .map_err(ApiError::invalid)?;
    let info = find_model(state, &req.model).await?;
    let name = info.name.clone();
    // Every route's tools meet this one check, in Ollama's words.
    if !req.tools.is_empty() && !info.capabilities.contains(&app::api::Capability::Tools) {
        return Err(ApiError::Unsupported(format!(
            "{name} does not support tools"
        )));
    }
    if let Some(format) = req.format.clone() {
        // Compiling a schema is quick, but a client's schema may be large.
        tokio::task::spawn_blocking(move || crate::engine::check_format(&format))
            .await
            .map_err(crate::error::task_failed)?
            .map_err(|message| ApiError::Invalid {
                code: "invalid_format",
                message,
            })?;
    }

    let load_ms = state
        .engine
        .ensure_loaded(&name, keep_alive)
        .await?
        .as_secs_f64()
        * 1000.0;
    // The context size: the request's, else the preset's (applied above),
    // else the server's default, which grows when the answer's max_tokens
    // would leave the prompt less than MIN_PROMPT_ROOM; never more than the
    // model's window, and 0 means the whole window.
    let num_ctx = req
        .options
        .num_ctx
        .unwrap_or_else(|| match config.default_num_ctx {
            0 => 0,
            n => n.max(max_tokens + config.context_margin + MIN_PROMPT_ROOM),
        });
    let context_length = match num_ctx {
        0 => info.context_length,
        n => n.min(info.context_length),
    };
    // The server's default answer length fits a small chosen context: at
    // most half of it, the other half for the prompt.
    if req.options.max_tokens.is_none() {
        max_tokens = max_tokens.min((context_length / 2).max(1));
    }
    // What the model reads within the first-token timeout here, by its
    // measured prompt speed (a share of the timeout: the answer may wait
    // for a turn, too).
    let soft_max_tokens = state.engine.prompt_cost(&name).await.map(|cost| {
        cost.tokens_within(config.first_token_timeout().as_secs_f64() * PROMPT_TIME_SHARE)
    });
    let window = HistoryWindow {
        context_length,
        max_tokens,
        margin: config.context_margin,
        max_messages: config.max_history_messages,
        soft_max_tokens,
    };
    let trimmed = window
        .fit(state.engine.as_ref(), &name, &req.messages)
        .await
        .map_err(|e| match e {
            e @ TrimError::Overflow { .. } => ApiError::Invalid {
                code: "context_overflow",
                message: e.to_string(),
            },
            TrimError::Engine(e) => e.into(),
        })?;

    let o = &req.options;
    // A generation slot for this model (an upstream's models share the
    // upstream's slots), or 503 at once when the queue is full.
    let admitted = match &info.upstream {
        Some(prefix) => {
            state
                .admission
                .admit_to(
                    &format!("upstream {prefix}"),
                    config.upstream_max_concurrent,
                    config.upstream_max_queue,
                )
                .await
        }
        None => state.admission.admit(&name).await,
    };
    let slot = admitted.map_err(|busy| ApiError::busy(&name, busy))?;
    let stop = o.stop.clone().unwrap_or_default();
    let sampling = Sampling {
        temperature: o.temperature.unwrap_or(config.default_temperature),
        top_p: o.top_p.or(Some(config.default_top_p)),
        top_k: o.top_k.or(Some(config.default_top_k)),
        max_tokens,
        repeat_penalty: o.repeat_penalty.or(Some(config.default_repeat_penalty)),
        stop: stop.clone(),
        format: req.format.clone(),
        tools: req.tools.clone(),
    };
    let tokens = state
        .engine
        .stream(EngineRequest {
            model: name.clone(),
            messages: trimmed.messages,
            sampling,
            prompt_tokens: trimmed.prompt_tokens,
            explicit: req.options.clone(),
        })
        .await?;
    let guard = state.metrics.stream_started();
    let meta = MetaEvent {
        model: name,
        context_window: context_length,
        model_context_window: info.context_length,
        prompt_tokens: trimmed.prompt_tokens,
        trimmed_messages: trimmed.dropped,
        trimmed_for_time: trimmed.limited_by_time,
        max_tokens,
    };
    let timeouts = Timeouts {
        first_token: config.first_token_timeout(),
        between_tokens: config.token_timeout(),
        answer: config.answer_timeout(),
    };
    let events = relay(
        meta.clone(),
        tokens,
        guard,
        timeouts,
        started,
        state.shutdown.clone(),
        StopFilter::new(stop),
    )
    // The slot is held until the answer ends or the client goes away.
    .map(move |event| {
        let _held = &slot;
        event
    });
    Ok(Answer {
        meta,
        events: Box::pin(events),
        load_ms,
    })
}

async fn stream_chat(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let config = state.config.clone();
    let answer = start_answer(&state, req, started).await?;
    let events = answer.events;
    let mut response = Sse::new(sse_events(events))
        .keep_alive(
            KeepAlive::new()
                .interval(config.keep_alive())
                .text("keep-alive"),
        )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

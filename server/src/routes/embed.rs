//! Embeddings, in Ollama's shapes (`POST /api/embed`, and the older
//! `POST /api/embeddings`) and OpenAI's (`POST /v1/embeddings`), from the
//! store's embedding models (see [`crate::engine::embeddings`]). Each error
//! is written in its API's shape. Requests take a slot of the model's load
//! limits like answers do.

use super::ollama::{keep_alive, AnyJson, OllamaError};
use super::openai::OpenAiError;
use crate::engine::embeddings::{Embeddings, Vectors};
use crate::engine::KeepAlive;
use crate::error::ApiError;
use crate::models::InstalledModel;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use kinko_parse::requests::embed::{dimensions, texts, EmbedBody, EmbeddingsBody, OpenAiEmbedBody};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// The embedding routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .route("/v1/embeddings", post(openai))
}

/// The embedding engine, when this server has a model store.
fn engine(state: &AppState) -> Result<&Arc<Embeddings>, ApiError> {
    state.embeddings.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this server has no model store, so no embedding models".into())
    })
}

/// The embedding model a request names.
async fn find(state: &AppState, name: &str) -> Result<InstalledModel, ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("`model` is required"));
    }
    if name.contains('/') {
        return Err(ApiError::WrongKind(format!(
            "`{name}` names an upstream engine's model: kinko makes embeddings with its own models only"
        )));
    }
    engine(state)?.installed(name).await
}

/// The vectors must have the model's length: a model not trained for
/// shorter vectors cannot give them.
fn check_dimensions(m: &InstalledModel, asked: Option<&Value>) -> Result<(), ApiError> {
    let Some(asked) = dimensions(asked).map_err(ApiError::invalid)? else {
        return Ok(());
    };
    match m.manifest.embedding_length {
        Some(own) if own == asked => Ok(()),
        own => Err(ApiError::invalid(format!(
            "`{}` makes {}-dimension vectors and cannot shorten them to {asked} (it was not trained for shorter ones): leave `dimensions` out",
            m.manifest.name,
            own.map_or_else(|| "fixed".to_string(), |d| d.to_string())
        ))),
    }
}

/// Embed `texts` with `m` in a slot of its load limits; no texts loads the
/// model (or unloads it, with a keep-alive of zero) as Ollama does.
async fn run(
    state: &AppState,
    m: &InstalledModel,
    texts: Vec<String>,
    truncate: bool,
    keep: Option<KeepAlive>,
) -> Result<Vectors, ApiError> {
    let engine = engine(state)?;
    let empty = |load| Vectors {
        model: m.manifest.name.clone(),
        vectors: Vec::new(),
        tokens: 0,
        load,
    };
    if texts.is_empty() {
        if keep == Some(KeepAlive::For(std::time::Duration::ZERO)) {
            engine.unload(&m.manifest.name).await;
            return Ok(empty(std::time::Duration::ZERO));
        }
        return Ok(empty(engine.load(m, keep).await?));
    }
    let _slot = state
        .admission
        .admit(&m.manifest.name)
        .await
        .map_err(|busy| ApiError::busy(&m.manifest.name, busy))?;
    let count = texts.len();
    let started = std::time::Instant::now();
    let out = engine.embed(m, texts, truncate, keep).await?;
    state
        .metrics
        .record_embeddings(count, out.tokens, started.elapsed());
    Ok(out)
}

fn nanos(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

async fn embed(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<EmbedBody>,
) -> Result<Json<Value>, OllamaError> {
    let started = Instant::now();
    let keep = keep_alive(body.keep_alive.as_ref())?;
    let texts = texts(&body.input, state.config.embed_max_inputs).map_err(ApiError::invalid)?;
    let m = find(&state, &body.model).await?;
    check_dimensions(&m, body.dimensions.as_ref())?;
    let out = run(&state, &m, texts, body.truncate.unwrap_or(true), keep).await?;
    Ok(Json(json!({
        "model": out.model,
        "embeddings": out.vectors,
        "total_duration": nanos(started.elapsed()),
        "load_duration": nanos(out.load),
        "prompt_eval_count": out.tokens,
    })))
}

async fn embeddings(
    State(state): State<AppState>,
    AnyJson(body): AnyJson<EmbeddingsBody>,
) -> Result<Json<Value>, OllamaError> {
    let keep = keep_alive(body.keep_alive.as_ref())?;
    let m = find(&state, &body.model).await?;
    let texts = body.texts().map_err(ApiError::invalid)?;
    let out = run(&state, &m, texts, true, keep).await?;
    let embedding = out.vectors.into_iter().next().unwrap_or_default();
    Ok(Json(json!({ "embedding": embedding })))
}

/// A vector as OpenAI's `base64` format has it: the little-endian bytes
/// of its 32-bit floats.
fn base64_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn openai(
    State(state): State<AppState>,
    body: Result<Json<OpenAiEmbedBody>, JsonRejection>,
) -> Result<Json<Value>, OpenAiError> {
    let Json(body) = body?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`encoding_format` must be `float` or `base64`, not `{other}`"
            ))
            .into())
        }
    };
    let texts = texts(&body.input, state.config.embed_max_inputs).map_err(ApiError::invalid)?;
    if texts.is_empty() {
        return Err(ApiError::invalid("`input` must not be empty").into());
    }
    let m = find(&state, &body.model).await?;
    check_dimensions(&m, body.dimensions.as_ref())?;
    let out = run(&state, &m, texts, true, None).await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                json!(base64_vector(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": out.model,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    })))
}

//! The engine seam: what the server needs from an inference engine, and
//! nothing more. Dropping a [`TokenStream`] cancels the generation behind it;
//! that is the whole cancellation design.

pub mod embeddings;
pub mod fake;
pub mod json_budget;
pub mod local;
pub mod mistral;
pub mod prompt_speed;
pub mod remote;
pub mod runner;
pub mod worker;

use app::api::{ChatMessage, FinishReason, ModelSummary, PromptCost};
use async_trait::async_trait;
use futures::stream::BoxStream;

/// What went wrong inside an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model is not installed.
    #[error("model `{0}` is not installed")]
    UnknownModel(String),
    /// The model could not be loaded.
    #[error("could not load model `{model}`: {reason}")]
    Load {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// The engine rejected or failed the request.
    #[error("engine error: {0}")]
    Generation(String),
    /// An upstream engine (another machine) failed, refused, or cannot be
    /// reached.
    #[error("{message}")]
    Upstream {
        /// What kind of failure.
        kind: UpstreamFailure,
        /// What happened, naming the upstream (never its key).
        message: String,
    },
}

/// How an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No replica could be reached.
    Unreachable,
    /// The upstream refused kinko's key.
    Refused,
    /// The upstream answered an error, or broke off its answer.
    Failed,
}

/// A model the engine can serve.
pub type ModelInfo = ModelSummary;

/// Sampling settings, already validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// 0 or less means greedy.
    pub temperature: f64,
    /// Nucleus mass, if any.
    pub top_p: Option<f64>,
    /// Top-k, if any.
    pub top_k: Option<usize>,
    /// Hard cap on generated tokens.
    pub max_tokens: usize,
    /// Penalty on tokens already present (1 or none = off).
    pub repeat_penalty: Option<f32>,
    /// Stop strings (the relay also cuts the text at them).
    pub stop: Vec<String>,
    /// The shape the answer must have; generation is constrained to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<app::api::AnswerFormat>,
    /// Functions the model may call (OpenAI's shape), rendered into the
    /// prompt by the chat template; calls come back as
    /// [`EngineEvent::ToolCalls`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
}

/// The JSON schema a constrained generation follows for `format`, with
/// llguidance's options: no free whitespace between tokens (a small model
/// given free whitespace can write it until `max_tokens` and never close
/// the JSON), `, ` and `: ` as separators. Options the client set itself
/// under `x-guidance` stay.
pub fn constrained_schema(format: &app::api::AnswerFormat) -> serde_json::Value {
    let mut schema = format.schema();
    if let Some(o) = schema.as_object_mut() {
        let ours = serde_json::json!({
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        });
        let theirs = o
            .remove("x-guidance")
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        let mut merged = ours;
        llguidance::json_merge(&mut merged, &theirs);
        o.insert("x-guidance".into(), merged);
    }
    schema
}

/// Whether kinko can constrain generation to `format`: its JSON schema
/// compiles to a grammar. Answers why not, in one line.
pub fn check_format(format: &app::api::AnswerFormat) -> Result<(), String> {
    let schema = constrained_schema(format);
    let builder = llguidance::GrammarBuilder::new(None, llguidance::api::ParserLimits::default());
    llguidance::JsonCompileOptions::default()
        .json_to_llg_with_overrides(builder, schema)
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").trim();
            format!(
                "the JSON schema cannot be followed: {}",
                kinko_parse::requests::one_line(first)
            )
        })
}

impl Sampling {
    /// Greedy decoding with the given cap: reproducible output.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            max_tokens,
            repeat_penalty: None,
            stop: Vec::new(),
            format: None,
            tools: Vec::new(),
        }
    }
}

/// One generation request, after validation and trimming.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    /// The installed model to use.
    pub model: String,
    /// The prompt, oldest first.
    pub messages: Vec<ChatMessage>,
    /// How to sample.
    pub sampling: Sampling,
    /// Prompt tokens, as the history window counted them (engines learn
    /// their prompt speed from it).
    pub prompt_tokens: usize,
    /// The options the request (or its preset) set itself, for engines
    /// that apply their own defaults to the rest (upstreams).
    pub explicit: app::api::ChatOptions,
}

/// Token counts reported at the end of a generation.
pub use app::api::Usage;

/// What a token stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// New text (whole characters).
    Delta(String),
    /// The model called tools (sent before `Done`).
    ToolCalls(Vec<app::api::ToolCall>),
    /// Times the engine measured itself (an upstream's own figures), sent
    /// just before `Done`.
    Timings(kinko_parse::upstream::UpstreamTimings),
    /// The generation ended by itself.
    Done {
        /// Why.
        reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
}

/// A generation in progress; drop it to cancel.
pub type TokenStream = BoxStream<'static, Result<EngineEvent, EngineError>>;

/// How long a model stays loaded after its last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// This long (zero: unload as soon as the answer ends).
    For(std::time::Duration),
    /// Until evicted or the server stops.
    Forever,
}

impl KeepAlive {
    /// Parse Ollama's forms: seconds as a number (negative: forever), or a
    /// duration string like `300ms`, `30s`, `5m`, `1h`, `0`, `-1`.
    pub fn parse(v: &serde_json::Value) -> Option<Self> {
        let secs = |s: f64| {
            if s < 0.0 {
                Some(KeepAlive::Forever)
            } else {
                std::time::Duration::try_from_secs_f64(s)
                    .ok()
                    .map(KeepAlive::For)
            }
        };
        match v {
            serde_json::Value::Number(n) => n.as_f64().and_then(secs),
            serde_json::Value::String(s) => {
                let s = s.trim();
                let (num, unit) = s
                    .find(|c: char| c.is_ascii_alphabetic())
                    .map(|i| s.split_at(i))
                    .unwrap_or((s, "s"));
                let n: f64 = num.trim().parse().ok()?;
                let factor = match unit {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    _ => return None,
                };
                secs(n * factor)
            }
            _ => None,
        }
    }
}

/// A model held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    /// `name:tag`.
    pub name: String,
    /// When it will be unloaded, if ever.
    pub expires_at: Option<std::time::SystemTime>,
}

/// An inference engine.
#[async_trait]
pub trait ChatEngine: Send + Sync + 'static {
    /// Load `model` if it is not loaded yet; returns the time spent loading
    /// (zero when it was already loaded).
    async fn ensure_loaded(
        &self,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<std::time::Duration, EngineError> {
        let _ = (model, keep_alive);
        Ok(std::time::Duration::ZERO)
    }
    /// The models held in memory now.
    async fn loaded_models(&self) -> Vec<LoadedModel> {
        Vec::new()
    }
    /// Free `model`'s memory (answers still running keep their handle).
    async fn unload(&self, model: &str) {
        let _ = model;
    }
    /// What reading a prompt costs `model` on this machine, once measured.
    async fn prompt_cost(&self, model: &str) -> Option<PromptCost> {
        let _ = model;
        None
    }
    /// The models this engine can serve, sorted by name.
    async fn list_models(&self) -> Vec<ModelInfo>;
    /// The model a request names (`name` already normalized for a local
    /// model), or why there is none.
    async fn model(&self, name: &str) -> Result<ModelInfo, EngineError> {
        self.list_models()
            .await
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| EngineError::UnknownModel(name.to_string()))
    }
    /// Tokens the prompt takes with the model's chat template applied.
    async fn count_tokens(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<usize, EngineError>;
    /// Start generating. The stream ends after `Done` or an error.
    async fn stream(&self, req: EngineRequest) -> Result<TokenStream, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::KeepAlive;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn keep_alive_forms() {
        assert_eq!(
            KeepAlive::parse(&json!("5m")),
            Some(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(
            KeepAlive::parse(&json!("30s")),
            Some(KeepAlive::For(Duration::from_secs(30)))
        );
        assert_eq!(
            KeepAlive::parse(&json!("1h")),
            Some(KeepAlive::For(Duration::from_secs(3600)))
        );
        assert_eq!(
            KeepAlive::parse(&json!("0")),
            Some(KeepAlive::For(Duration::ZERO))
        );
        assert_eq!(
            KeepAlive::parse(&json!(0)),
            Some(KeepAlive::For(Duration::ZERO))
        );
        assert_eq!(
            KeepAlive::parse(&json!(90)),
            Some(KeepAlive::For(Duration::from_secs(90)))
        );
        assert_eq!(KeepAlive::parse(&json!(-1)), Some(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse(&json!("-1m")), Some(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse(&json!("soon")), None);
        assert_eq!(KeepAlive::parse(&json!("5d")), None);
    }
}

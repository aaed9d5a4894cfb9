//! Wire types shared by the browser and the server: the chat request, the
//! model list and the events of the SSE stream. Both sides serialise the
//! same structs, so the protocol cannot drift between them.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The lowercase name used on the wire and in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What was written.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Sampling options of one request; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatOptions {
    /// Sampling temperature; 0 means greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// The most tokens the answer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Penalty on tokens already present (1 = none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "finite_f32"
    )]
    pub repeat_penalty: Option<f32>,
    /// The answer ends at the first of these strings (not shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Use at most this much of the model's context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
}

/// An `f32` that must stay finite: a number past f32's range would become
/// infinite, which JSON cannot carry back (it reads back as no value).
fn finite_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
        Some(x) => Err(serde::de::Error::custom(format!(
            "repeat_penalty {x} is out of range"
        ))),
    }
}

/// Body of `POST /api/chat/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Installed model name, e.g. `smollm2:135m`.
    pub model: String,
    /// The whole conversation so far, oldest first, ending with the user's turn.
    pub messages: Vec<ChatMessage>,
    /// Sampling options.
    #[serde(default)]
    pub options: ChatOptions,
    /// The shape the answer must have (none: free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AnswerFormat>,
    /// Functions the model may call, as OpenAI and Ollama describe them
    /// (`{"type": "function", "function": {"name", "description",
    /// "parameters"}}`); the chat template renders them into the prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
}

/// A call of one of the request's tools, as the model asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// An id for the call (`call-…`), unique within the answer.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments (a JSON object, as the model wrote them).
    pub arguments: serde_json::Value,
}

/// Check `tools` as OpenAI and Ollama send them: each a function with a
/// name (`type` defaults to `function`); answers them in one shape.
pub fn checked_tools(tools: &[serde_json::Value]) -> Result<Vec<serde_json::Value>, String> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let kind = tool
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("function");
            if kind != "function" {
                return Err(format!(
                    "tools[{i}]: only `function` tools are supported, got `{kind}`"
                ));
            }
            let function = tool
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| format!("tools[{i}] needs a `function` object"))?;
            match function.get("name").and_then(|n| n.as_str()) {
                Some(name) if !name.trim().is_empty() => {}
                _ => return Err(format!("tools[{i}].function needs a `name`")),
            }
            if function
                .get("parameters")
                .is_some_and(|p| !p.is_object() && !p.is_null())
            {
                return Err(format!(
                    "tools[{i}].function.parameters must be a JSON schema object"
                ));
            }
            Ok(serde_json::json!({"type": "function", "function": function}))
        })
        .collect()
}

/// What a model can do, as Ollama names it in `capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Answers prompts (every chat model).
    Completion,
    /// Calls tools the request offers.
    Tools,
    /// Thinks before answering, apart from the answer.
    Thinking,
    /// Reads images.
    Vision,
    /// Fills in the middle (`suffix`).
    Insert,
    /// Makes embedding vectors.
    Embedding,
}

impl Capability {
    /// Ollama's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Completion => "completion",
            Capability::Tools => "tools",
            Capability::Thinking => "thinking",
            Capability::Vision => "vision",
            Capability::Insert => "insert",
            Capability::Embedding => "embedding",
        }
    }
}

/// The shape an answer must have: generation is constrained to it, so the
/// answer parses (when it is not cut short by `max_tokens`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnswerFormat {
    /// A JSON object (Ollama's `format: "json"`, OpenAI's `json_object`).
    Json,
    /// JSON valid against `schema` (Ollama's `format: {…}`, OpenAI's
    /// `json_schema`).
    JsonSchema {
        /// The JSON schema.
        schema: serde_json::Value,
    },
}

impl AnswerFormat {
    /// The JSON schema generation follows.
    pub fn schema(&self) -> serde_json::Value {
        match self {
            AnswerFormat::Json => serde_json::json!({"type": "object"}),
            AnswerFormat::JsonSchema { schema } => schema.clone(),
        }
    }
}

/// One entry of `GET /api/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// `name:tag`, what requests name.
    pub name: String,
    /// File size in bytes.
    pub size: u64,
    /// Weight format, e.g. `Q4_1`.
    pub quantization: String,
    /// Context window in tokens.
    pub context_length: usize,
    /// Model family, e.g. `llama`.
    #[serde(default)]
    pub architecture: String,
    /// What the model's preset (its Modelfile) sets.
    #[serde(default, skip_serializing_if = "ModelPreset::is_empty")]
    pub preset: ModelPreset,
    /// The upstream that serves it (its prefix), for a model that runs on
    /// another machine; none for a local model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// What it can do (completion, tools, thinking, …), from the model and
    /// its chat template; empty where unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
}

/// A system prompt and sampling settings: what a model's preset sets, and
/// what a chat of the page may set for itself. Each unset field falls back
/// (a chat's to the preset's, a preset's to the server's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// System prompt, used when the conversation has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Longest answer in tokens (`num_predict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

impl Sampling {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a model's preset (made from a Modelfile) sets: used where a request
/// sets nothing, before the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelPreset {
    /// System prompt and sampling.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Context size (`num_ctx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
}

impl ModelPreset {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The server's sampling defaults, used where neither the request nor the
/// model's preset sets a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus sampling mass.
    pub top_p: f64,
    /// Top-k sampling.
    pub top_k: usize,
    /// Longest answer in tokens.
    pub max_tokens: usize,
}

/// Body of `GET /api/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Installed models, sorted by name.
    pub models: Vec<ModelSummary>,
    /// The model a new chat starts on (`--default-model`); it may not be
    /// installed, then the page takes the first one.
    #[serde(default)]
    pub default_model: String,
    /// The context size (`num_ctx`) used when neither the request nor the
    /// model's preset names one (0: the model's whole window).
    #[serde(default)]
    pub default_num_ctx: usize,
    /// What a prompt costs on this machine, per model, where measured.
    #[serde(default)]
    pub prompt_costs: Vec<ModelPromptCost>,
    /// The server's sampling defaults.
    #[serde(default)]
    pub defaults: SamplingDefaults,
}

/// The measured prompt cost of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPromptCost {
    /// The model.
    pub model: String,
    /// Its cost.
    pub cost: PromptCost,
}

/// How long a model takes to read a prompt on this machine, measured from
/// the prompts it has processed: `seconds(n) = per_token·n +
/// per_token_squared·n²` (the square term is attention over the prompt).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PromptCost {
    /// Seconds per prompt token.
    pub per_token: f64,
    /// Seconds per squared prompt token.
    pub per_token_squared: f64,
    /// How many prompts the figures come from.
    pub samples: usize,
    /// The longest of those prompts, in tokens.
    #[serde(default)]
    pub longest: usize,
}

impl PromptCost {
    /// Estimated seconds to read a prompt of `tokens` tokens.
    pub fn seconds(&self, tokens: usize) -> f64 {
        let n = tokens as f64;
        self.per_token * n + self.per_token_squared * n * n
    }

    /// Whether the estimate for `tokens` is only a lower bound: far past
    /// the prompts measured with no square term known yet (attention only
    /// adds to a linear cost).
    pub fn is_lower_bound(&self, tokens: usize) -> bool {
        self.per_token_squared == 0.0 && tokens > self.longest.saturating_mul(2)
    }

    /// The longest prompt read within `seconds` (by the estimate).
    pub fn tokens_within(&self, seconds: f64) -> usize {
        let (a, b) = (self.per_token.max(0.0), self.per_token_squared.max(0.0));
        let n = if b > 0.0 {
            (-a + (a * a + 4.0 * b * seconds.max(0.0)).sqrt()) / (2.0 * b)
        } else if a > 0.0 {
            seconds.max(0.0) / a
        } else {
            f64::INFINITY
        };
        if n.is_finite() {
            n.floor() as usize
        } else {
            usize::MAX
        }
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model said it was done.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The client went away or pressed Stop.
    Cancelled,
    /// A time limit expired.
    Timeout,
    /// The engine failed.
    Error,
}

impl FinishReason {
    /// Every reason, for metrics that must show zeros too.
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Cancelled,
        FinishReason::Timeout,
        FinishReason::Error,
    ];

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Timeout => "timeout",
            FinishReason::Error => "error",
        }
    }
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt, after trimming and the chat template.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// Timings of one answer, measured by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Milliseconds from the request to the first token.
    pub ttft_ms: f64,
    /// Generated tokens per second after the first one (an upstream's
    /// own figure when it reports one).
    pub tokens_per_second: f64,
    /// Milliseconds the engine itself spent reading the prompt, when it
    /// reports them (an upstream does; kinko's TTFT includes the network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ms: Option<f64>,
    /// Milliseconds the engine itself spent generating, when it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f64>,
}

/// The `meta` event: sent once, before any text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaEvent {
    /// The model answering.
    pub model: String,
    /// The context window this answer used, in tokens (`num_ctx`: the
    /// request's, the preset's or the server's default, at most the model's).
    pub context_window: usize,
    /// The model's own context window, the most `num_ctx` can be.
    #[serde(default)]
    pub model_context_window: usize,
    /// Tokens of the prompt after trimming.
    pub prompt_tokens: usize,
    /// How many earlier messages were left out to fit the window.
    pub trimmed_messages: usize,
    /// Whether they were left out so the model reads the prompt within the
    /// first-token timeout (by its measured speed), not for the window.
    #[serde(default)]
    pub trimmed_for_time: bool,
    /// The most tokens the answer may have.
    pub max_tokens: usize,
}

/// The `delta` event: a piece of the answer, whole UTF-8 characters only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEvent {
    /// The new text.
    pub text: String,
}

/// The `done` event: the answer is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneEvent {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Speed.
    pub timings: Timings,
    /// The tools the model called (then the answer's text is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// The body of every JSON error, and the `error` event's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// Code and human message of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `unknown_model`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

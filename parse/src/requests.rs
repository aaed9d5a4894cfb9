//! Decoding and checking a chat request from each API into kinko's own
//! [`ChatRequest`]: the UI's (kinko's wire type), Ollama's `/api/chat` and
//! `/api/generate`, OpenAI's `/v1/chat/completions`. Every refusal is one
//! line for the client (the server answers it with 422 in that API's shape).

use crate::api::{AnswerFormat, Capability, ChatMessage, ChatOptions, ChatRequest, Role};

/// `text` on one line: control characters (a newline in a field name the
/// client sent, say) written as escapes, so a refusal that quotes the
/// client stays one whole line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Cut `text` to at most `max` bytes at a character boundary, marking the
/// cut with `…`.
pub fn shorten(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
}

/// Check sampling options; answers the answer length (`max_tokens`, or the
/// default bounded by the cap).
pub fn validate_options(
    options: &ChatOptions,
    default_max_tokens: usize,
    max_tokens_cap: usize,
) -> Result<usize, String> {
    if let Some(t) = options.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(format!(
                "options.temperature must be between 0 and 2, got {t}"
            ));
        }
    }
    if let Some(p) = options.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("options.top_p must be in (0, 1], got {p}"));
        }
    }
    if let Some(k) = options.top_k {
        if !(1..=1000).contains(&k) {
            return Err(format!("options.top_k must be between 1 and 1000, got {k}"));
        }
    }
    if let Some(r) = options.repeat_penalty {
        if !(0.5..=2.0).contains(&r) {
            return Err(format!(
                "options.repeat_penalty must be between 0.5 and 2, got {r}"
            ));
        }
    }
    if let Some(stop) = &options.stop {
        if stop.len() > 8 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err("options.stop takes at most 8 non-empty strings of up to 256 bytes".into());
        }
    }
    let max_tokens = options
        .max_tokens
        .unwrap_or(default_max_tokens.min(max_tokens_cap));
    if max_tokens == 0 || max_tokens > max_tokens_cap {
        return Err(format!(
            "options.max_tokens must be between 1 and {max_tokens_cap}, got {max_tokens}"
        ));
    }
    Ok(max_tokens)
}

/// The refusal of a tool call or a tool's result in the history.
pub const TOOL_HISTORY: &str = "tool calls and tool results in the history are not supported yet: \
send the tool's result in a user message";

/// A conversation the model can answer: not empty, ending with a user
/// message that says something.
pub fn check_messages(messages: &[ChatMessage]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("messages must not be empty".into());
    }
    match messages.last() {
        Some(last) if last.role == Role::User && !last.content.trim().is_empty() => Ok(()),
        _ => Err("the last message must be a non-empty user message".into()),
    }
}

/// Ollama's chat and generate requests.
pub mod ollama {
    use super::{one_line, AnswerFormat, Capability, ChatMessage, ChatOptions, ChatRequest, Role};
    use serde::Deserialize;
    use serde_json::{Map, Value};

    /// One message of `/api/chat`.
    #[derive(Debug, Deserialize)]
    pub struct OllamaMessage {
        /// `system`, `user` or `assistant`.
        pub role: String,
        /// The text.
        #[serde(default)]
        pub content: String,
        /// Images (base64), for a model that sees.
        #[serde(default)]
        pub images: Option<Vec<Value>>,
        /// Calls an earlier answer made (refused: not supported yet).
        #[serde(default)]
        pub tool_calls: Option<Vec<Value>>,
    }

    /// `POST /api/chat`.
    #[derive(Debug, Deserialize)]
    pub struct ChatBody {
        /// The model.
        pub model: String,
        /// How long the model stays loaded afterwards.
        #[serde(default)]
        pub keep_alive: Option<Value>,
        /// The conversation (none: load or unload the model).
        #[serde(default)]
        pub messages: Vec<OllamaMessage>,
        /// Stream NDJSON (the default) or answer once.
        #[serde(default)]
        pub stream: Option<bool>,
        /// Ollama's options.
        #[serde(default)]
        pub options: Option<Map<String, Value>>,
        /// `"json"` or a JSON schema the answer must follow.
        #[serde(default)]
        pub format: Option<Value>,
        /// Tools the model may call.
        #[serde(default)]
        pub tools: Option<Vec<Value>>,
        /// Think before answering (`true`, or a level such as `"high"`).
        #[serde(default)]
        pub think: Option<Value>,
    }

    /// `POST /api/generate`.
    #[derive(Debug, Deserialize)]
    pub struct GenerateBody {
        /// The model.
        pub model: String,
        /// How long the model stays loaded afterwards.
        #[serde(default)]
        pub keep_alive: Option<Value>,
        /// The prompt (empty: load or unload the model).
        #[serde(default)]
        pub prompt: String,
        /// A system prompt.
        #[serde(default)]
        pub system: Option<String>,
        /// Stream NDJSON (the default) or answer once.
        #[serde(default)]
        pub stream: Option<bool>,
        /// Ollama's options.
        #[serde(default)]
        pub options: Option<Map<String, Value>>,
        /// `"json"` or a JSON schema the answer must follow.
        #[serde(default)]
        pub format: Option<Value>,
        /// Think before answering.
        #[serde(default)]
        pub think: Option<Value>,
        /// Images (base64), for a model that sees.
        #[serde(default)]
        pub images: Option<Vec<Value>>,
        /// Text after the insertion point (fill-in-the-middle).
        #[serde(default)]
        pub suffix: Option<String>,
        /// The prompt as it is, without the chat template.
        #[serde(default)]
        pub raw: Option<bool>,
        /// A prompt template in Ollama's Go syntax, instead of the model's.
        #[serde(default)]
        pub template: Option<String>,
        /// The token context an earlier answer returned (deprecated).
        #[serde(default)]
        pub context: Option<Vec<Value>>,
    }

    /// Ollama's `format`: none (`null`, `""`), `"json"` or a JSON schema
    /// (an object).
    pub fn format(v: Option<&Value>) -> Result<Option<AnswerFormat>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s == "json" => Ok(Some(AnswerFormat::Json)),
            Some(Value::Object(_)) => {
                Ok(v.cloned().map(|schema| AnswerFormat::JsonSchema { schema }))
            }
            Some(other) => Err(one_line(&format!(
                "invalid format `{other}`: use \"json\" or a JSON schema object"
            ))),
        }
    }

    /// What `think` asks for: `false`, `null` or none ask nothing; `true`
    /// or a level (`"low"`, `"medium"`, `"high"`) need a thinking model.
    pub fn think_needed(v: Option<&Value>) -> Result<bool, String> {
        match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
            Some(Value::Bool(true)) => Ok(true),
            Some(Value::String(s)) if ["low", "medium", "high"].contains(&s.as_str()) => Ok(true),
            Some(other) => Err(one_line(&format!(
                "invalid think value `{other}`: use true, false, \"low\", \"medium\" or \"high\""
            ))),
        }
    }

    pub fn role(r: &str) -> Result<Role, String> {
        match r {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(format!(
                "role `{}` is not supported (system, user, assistant)",
                one_line(other)
            )),
        }
    }

    /// Ollama's `options` mapped onto kinko's; unknown options are ignored,
    /// as Ollama does, but a known one with a wrong type is an error.
    pub fn options(map: Option<&Map<String, Value>>) -> Result<ChatOptions, String> {
        let mut o = ChatOptions::default();
        let Some(map) = map else { return Ok(o) };
        let bad = |k: &str| format!("option `{k}` has the wrong type");
        let count = |k: &str, v: &Value| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(k))
        };
        for (k, v) in map {
            match k.as_str() {
                "temperature" => o.temperature = Some(v.as_f64().ok_or_else(|| bad(k))?),
                "top_p" => o.top_p = Some(v.as_f64().ok_or_else(|| bad(k))?),
                "top_k" => o.top_k = Some(count(k, v)?),
                "repeat_penalty" => {
                    // A number past f32's range would become infinity.
                    let r = v.as_f64().ok_or_else(|| bad(k))? as f32;
                    if !r.is_finite() {
                        return Err(format!("option `{k}` is out of range"));
                    }
                    o.repeat_penalty = Some(r)
                }
                "num_ctx" => o.num_ctx = Some(count(k, v)?),
                "stop" => {
                    let list = v.as_array().ok_or_else(|| bad(k))?;
                    o.stop = Some(
                        list.iter()
                            .map(|s| s.as_str().map(String::from).ok_or_else(|| bad(k)))
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                "num_predict" => {
                    let n = v.as_i64().ok_or_else(|| bad(k))?;
                    // -1 (and -2) mean "as long as it takes": the server's
                    // default. A count past the address space is past any cap.
                    o.max_tokens = (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX));
                }
                _ => {}
            }
        }
        Ok(o)
    }

    impl ChatBody {
        /// The request this body asks for (when it has messages).
        pub fn chat_request(&self) -> Result<ChatRequest, String> {
            let messages = self
                .messages
                .iter()
                .map(|m| {
                    if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) || m.role == "tool" {
                        return Err(super::TOOL_HISTORY.to_string());
                    }
                    Ok(ChatMessage::new(role(&m.role)?, m.content.clone()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(ChatRequest {
                model: self.model.clone(),
                messages,
                options: options(self.options.as_ref())?,
                format: format(self.format.as_ref())?,
                tools: crate::api::checked_tools(self.tools.as_deref().unwrap_or_default())?,
            })
        }

        /// What the model must be able to do for this request, beyond
        /// completion and tools (the request's `tools`, checked where every
        /// route's answer starts).
        pub fn needs(&self) -> Result<Vec<Capability>, String> {
            let mut needs = Vec::new();
            if think_needed(self.think.as_ref())? {
                needs.push(Capability::Thinking);
            }
            if self
                .messages
                .iter()
                .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
            {
                needs.push(Capability::Vision);
            }
            Ok(needs)
        }
    }

    impl GenerateBody {
        /// The request this body asks for (when it has a prompt). A raw
        /// prompt, a Go template and an earlier answer's context are
        /// refused: kinko formats prompts with the model's own chat template
        /// and keeps no token context between requests.
        pub fn chat_request(&self) -> Result<ChatRequest, String> {
            if self.raw == Some(true) {
                return Err("raw prompts are not supported: send the prompt without `raw` (kinko applies the model's chat template)".into());
            }
            if self.template.as_ref().is_some_and(|t| !t.is_empty()) {
                return Err("`template` is not supported: kinko formats prompts with the model's own chat template".into());
            }
            if self.context.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(
                    "`context` is not supported: send the conversation to /api/chat instead".into(),
                );
            }
            let mut messages = Vec::new();
            if let Some(system) = self.system.as_ref().filter(|s| !s.trim().is_empty()) {
                messages.push(ChatMessage::new(Role::System, system.clone()));
            }
            messages.push(ChatMessage::new(Role::User, self.prompt.clone()));
            Ok(ChatRequest {
                model: self.model.clone(),
                messages,
                options: options(self.options.as_ref())?,
                format: format(self.format.as_ref())?,
                tools: Vec::new(),
            })
        }

        /// What the model must be able to do for this request, beyond
        /// completion.
        pub fn needs(&self) -> Result<Vec<Capability>, String> {
            let mut needs = Vec::new();
            if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
                needs.push(Capability::Insert);
            }
            if think_needed(self.think.as_ref())? {
                needs.push(Capability::Thinking);
            }
            if self.images.as_ref().is_some_and(|i| !i.is_empty()) {
                needs.push(Capability::Vision);
            }
            Ok(needs)
        }
    }
}

/// OpenAI's chat completions request.
pub mod openai {
    use super::{one_line, AnswerFormat, Capability, ChatMessage, ChatOptions, ChatRequest, Role};
    use serde::Deserialize;
    use serde_json::Value;

    /// Message content: a string, or a list of parts of which the text ones
    /// count.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Content {
        /// Plain text.
        Text(String),
        /// Typed parts.
        Parts(Vec<Part>),
    }

    /// One part of a message's content.
    #[derive(Debug, Deserialize)]
    pub struct Part {
        /// `text` (others are refused).
        #[serde(rename = "type")]
        pub kind: String,
        /// The text of a `text` part.
        #[serde(default)]
        pub text: Option<String>,
    }

    /// One message.
    #[derive(Debug, Deserialize)]
    pub struct Message {
        /// `system`, `developer`, `user` or `assistant`.
        pub role: String,
        /// Its content.
        #[serde(default)]
        pub content: Option<Content>,
        /// Calls an earlier answer made (refused: not supported yet).
        #[serde(default)]
        pub tool_calls: Option<Vec<Value>>,
    }

    /// `stream_options`.
    #[derive(Debug, Deserialize)]
    pub struct StreamOptions {
        /// Send a last chunk with the usage.
        #[serde(default)]
        pub include_usage: bool,
    }

    /// `POST /v1/chat/completions`.
    #[derive(Debug, Deserialize)]
    pub struct CompletionBody {
        /// The model.
        pub model: String,
        /// The conversation.
        pub messages: Vec<Message>,
        /// Stream server-sent events.
        #[serde(default)]
        pub stream: bool,
        /// Streaming options.
        #[serde(default)]
        pub stream_options: Option<StreamOptions>,
        /// Sampling temperature.
        #[serde(default)]
        pub temperature: Option<f64>,
        /// Nucleus sampling mass.
        #[serde(default)]
        pub top_p: Option<f64>,
        /// Answer length (older name).
        #[serde(default)]
        pub max_tokens: Option<usize>,
        /// Answer length.
        #[serde(default)]
        pub max_completion_tokens: Option<usize>,
        /// Answers wanted (only 1).
        #[serde(default)]
        pub n: Option<usize>,
        /// A string or a list of strings.
        #[serde(default)]
        pub stop: Option<Value>,
        /// `{"type": "text" | "json_object" | "json_schema", …}`.
        #[serde(default)]
        pub response_format: Option<Value>,
        /// Tools the model may call.
        #[serde(default)]
        pub tools: Option<Vec<Value>>,
        /// `none`, `auto`, `required` or one function.
        #[serde(default)]
        pub tool_choice: Option<Value>,
        /// How hard a reasoning model thinks.
        #[serde(default)]
        pub reasoning_effort: Option<Value>,
        /// Return log probabilities (not supported).
        #[serde(default)]
        pub logprobs: Option<bool>,
        /// How many alternatives per token to return (not supported).
        #[serde(default)]
        pub top_logprobs: Option<Value>,
    }

    /// OpenAI's `response_format`: `text` (or none), `json_object`, or
    /// `json_schema` with its `schema`.
    pub fn response_format(v: Option<&Value>) -> Result<Option<AnswerFormat>, String> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        match v.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(AnswerFormat::Json)),
            Some("json_schema") => match v.get("json_schema").and_then(|j| j.get("schema")) {
                Some(schema @ Value::Object(_)) => Ok(Some(AnswerFormat::JsonSchema {
                    schema: schema.clone(),
                })),
                _ => Err("response_format.json_schema.schema must be a JSON schema object".into()),
            },
            Some(other) => Err(format!(
                "response_format type `{}` is not supported (text, json_object, json_schema)",
                one_line(other)
            )),
            None => Err("response_format needs a `type` (text, json_object, json_schema)".into()),
        }
    }

    /// `POST /v1/completions`, OpenAI's legacy completions: a prompt in,
    /// text out. As Ollama does, the prompt is answered as one user turn
    /// with the model's chat template.
    #[derive(Debug, Deserialize)]
    pub struct LegacyBody {
        /// The model.
        pub model: String,
        /// A string, or a list of exactly one string.
        pub prompt: Value,
        /// Stream server-sent events.
        #[serde(default)]
        pub stream: bool,
        /// Streaming options.
        #[serde(default)]
        pub stream_options: Option<StreamOptions>,
        /// Sampling temperature.
        #[serde(default)]
        pub temperature: Option<f64>,
        /// Nucleus sampling mass.
        #[serde(default)]
        pub top_p: Option<f64>,
        /// Answer length.
        #[serde(default)]
        pub max_tokens: Option<usize>,
        /// Answers wanted (only 1).
        #[serde(default)]
        pub n: Option<usize>,
        /// Candidates to pick the best of (only 1).
        #[serde(default)]
        pub best_of: Option<usize>,
        /// A string or a list of strings.
        #[serde(default)]
        pub stop: Option<Value>,
        /// Text after the insertion point (needs a fill-in-the-middle model).
        #[serde(default)]
        pub suffix: Option<String>,
        /// Repeat the prompt before the answer (not supported).
        #[serde(default)]
        pub echo: Option<bool>,
        /// Log probabilities of the top tokens (not supported).
        #[serde(default)]
        pub logprobs: Option<Value>,
        /// `text`, `json_object` or `json_schema`, as for chat.
        #[serde(default)]
        pub response_format: Option<Value>,
    }

    impl LegacyBody {
        /// The request this body asks for.
        pub fn chat_request(&self) -> Result<ChatRequest, String> {
            if self.n.is_some_and(|n| n != 1) || self.best_of.is_some_and(|n| n != 1) {
                return Err("only n = 1 and best_of = 1 are supported".into());
            }
            if self.echo == Some(true) {
                return Err("echo is not supported".into());
            }
            if self.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
                return Err("logprobs are not supported".into());
            }
            let prompt = match &self.prompt {
                Value::String(s) => s.clone(),
                Value::Array(items) if items.len() == 1 && items[0].is_string() => {
                    items[0].as_str().unwrap_or_default().to_string()
                }
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    return Err("only one prompt per request is supported".into())
                }
                _ => return Err("prompt must be a string (token arrays are not supported)".into()),
            };
            Ok(ChatRequest {
                model: self.model.clone(),
                messages: vec![ChatMessage::new(Role::User, prompt)],
                options: ChatOptions {
                    temperature: self.temperature,
                    top_p: self.top_p,
                    max_tokens: self.max_tokens,
                    stop: stop_list(self.stop.as_ref())?,
                    ..ChatOptions::default()
                },
                format: response_format(self.response_format.as_ref())?,
                tools: Vec::new(),
            })
        }

        /// What the model must be able to do for this request, beyond
        /// completion.
        pub fn needs(&self) -> Vec<Capability> {
            if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
                vec![Capability::Insert]
            } else {
                Vec::new()
            }
        }
    }

    /// `stop`: a string or a list of strings.
    fn stop_list(stop: Option<&Value>) -> Result<Option<Vec<String>>, String> {
        let bad_stop = || "stop must be a string or a list of strings".to_string();
        match stop {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(bad_stop))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad_stop()),
        }
    }

    /// One message as kinko's.
    pub fn to_message(m: &Message) -> Result<ChatMessage, String> {
        if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) || m.role == "tool" {
            return Err(super::TOOL_HISTORY.into());
        }
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(format!(
                    "role `{}` is not supported (system, developer, user, assistant)",
                    one_line(other)
                ))
            }
        };
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                if parts.iter().any(|p| p.kind == "image_url") {
                    return Err("image parts need a model that sees (vision)".into());
                }
                if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                    return Err(format!(
                        "content parts of type `{}` are not supported",
                        one_line(&p.kind)
                    ));
                }
                parts
                    .iter()
                    .filter_map(|p| p.text.clone())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        Ok(ChatMessage::new(role, text))
    }

    impl CompletionBody {
        /// The request this body asks for.
        pub fn chat_request(&self) -> Result<ChatRequest, String> {
            if self.n.is_some_and(|n| n != 1) {
                return Err("only n = 1 is supported".into());
            }
            if self.logprobs == Some(true)
                || self.top_logprobs.as_ref().is_some_and(|v| !v.is_null())
            {
                return Err("logprobs are not supported".into());
            }
            let messages = self
                .messages
                .iter()
                .map(to_message)
                .collect::<Result<Vec<_>, _>>()?;
            let stop = stop_list(self.stop.as_ref())?;
            Ok(ChatRequest {
                model: self.model.clone(),
                messages,
                options: ChatOptions {
                    temperature: self.temperature,
                    top_p: self.top_p,
                    max_tokens: self.max_completion_tokens.or(self.max_tokens),
                    stop,
                    ..ChatOptions::default()
                },
                format: match self.forced_tool()? {
                    Some(forced) if self.response_format.is_none() => Some(forced),
                    Some(_) => return Err(
                        "response_format and a tool_choice that requires a call cannot be combined"
                            .into(),
                    ),
                    None => response_format(self.response_format.as_ref())?,
                },
                tools: if self.offers_tools() {
                    crate::api::checked_tools(self.tools.as_deref().unwrap_or_default())?
                } else {
                    Vec::new()
                },
            })
        }

        /// For `tool_choice` `required` or one named function: the shape
        /// of the call generation is held to (`{"name", "arguments"}`, the
        /// form mistral.rs reads as a tool call), so a call always comes.
        fn forced_tool(&self) -> Result<Option<AnswerFormat>, String> {
            let tools = crate::api::checked_tools(self.tools.as_deref().unwrap_or_default())?;
            let wanted: Option<&str> = match &self.tool_choice {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) if s == "auto" || s == "none" => return Ok(None),
                Some(Value::String(s)) if s == "required" => None,
                Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
                    Some(name) => Some(name),
                    None => {
                        return Err(one_line(&format!(
                            "tool_choice must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\"}}}}, got {v}"
                        )))
                    }
                },
            };
            let calls: Vec<Value> = tools
                .iter()
                .filter_map(|t| t.get("function"))
                .filter(|f| wanted.is_none() || f["name"].as_str() == wanted)
                .map(|f| {
                    let parameters = match &f["parameters"] {
                        Value::Object(p) if !p.is_empty() => Value::Object(p.clone()),
                        _ => serde_json::json!({"type": "object"}),
                    };
                    serde_json::json!({
                        "type": "object",
                        "properties": {"name": {"const": f["name"]}, "arguments": parameters},
                        "required": ["name", "arguments"],
                        "additionalProperties": false,
                    })
                })
                .collect();
            match (calls.len(), wanted) {
                (0, Some(name)) => Err(one_line(&format!(
                    "tool_choice names `{name}`, which is not among the tools"
                ))),
                (0, None) => Err("tool_choice `required` needs tools".into()),
                (1, _) => Ok(calls
                    .into_iter()
                    .next()
                    .map(|schema| AnswerFormat::JsonSchema { schema })),
                _ => Ok(Some(AnswerFormat::JsonSchema {
                    schema: serde_json::json!({"anyOf": calls}),
                })),
            }
        }

        /// Whether the request offers tools the model may call: `tools`,
        /// unless `tool_choice` is `none` (then the model answers in text,
        /// which honours it).
        pub fn offers_tools(&self) -> bool {
            self.tools.as_ref().is_some_and(|t| !t.is_empty())
                && self.tool_choice.as_ref().and_then(Value::as_str) != Some("none")
        }

        /// What the model must be able to do for this request, beyond
        /// completion and tools (the request's `tools`, checked where every
        /// route's answer starts).
        pub fn needs(&self) -> Vec<Capability> {
            let mut needs = Vec::new();
            if self
                .reasoning_effort
                .as_ref()
                .is_some_and(|e| !e.is_null() && e.as_str() != Some("none"))
            {
                needs.push(Capability::Thinking);
            }
            let sees = |m: &Message| match &m.content {
                Some(Content::Parts(parts)) => parts.iter().any(|p| p.kind == "image_url"),
                _ => false,
            };
            if self.messages.iter().any(sees) {
                needs.push(Capability::Vision);
            }
            needs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (fuzz/corpus/requests/regression-newline-in-field):
    /// an unknown option named with a newline made a two-line refusal. So
    /// do roles and content types the client names.
    #[test]
    fn refusals_that_quote_the_client_stay_one_line() {
        let unknown = br#"{"model":"m","messages":[],"options":{"t\n":1}}"#;
        let err = serde_json::from_slice::<ChatRequest>(unknown).unwrap_err();
        let shown = one_line(&err.to_string());
        assert!(!shown.contains('\n') && shown.contains("t\\n"), "{shown}");

        let body: ollama::ChatBody = serde_json::from_slice(
            br#"{"model":"m","messages":[{"role":"us\ner","content":"hi"}]}"#,
        )
        .unwrap();
        let refusal = body.chat_request().unwrap_err();
        assert_eq!(
            refusal,
            "role `us\\ner` is not supported (system, user, assistant)"
        );

        let body: openai::CompletionBody = serde_json::from_slice(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"im\r\nage"}]}]}"#,
        )
        .unwrap();
        let refusal = body.chat_request().unwrap_err();
        assert!(!refusal.contains(['\n', '\r']), "{refusal}");
    }

    /// Found by the fuzzer (fuzz/corpus/requests/regression-f32-overflow):
    /// an Ollama `repeat_penalty` of 4.4e99 became an infinite f32, which
    /// kinko's wire form cannot carry (it reads back as no value).
    #[test]
    fn a_repeat_penalty_past_f32_is_refused() {
        let map = serde_json::json!({"repeat_penalty": 4.4e99});
        let refusal = ollama::options(map.as_object()).unwrap_err();
        assert_eq!(refusal, "option `repeat_penalty` is out of range");
        let map = serde_json::json!({"repeat_penalty": 1.1});
        assert_eq!(
            ollama::options(map.as_object()).unwrap().repeat_penalty,
            Some(1.1)
        );
    }

    /// Found by the fuzzer (fuzz/corpus/requests/regression-f32-overflow-own):
    /// the same overflow through kinko's own request, whose options decode
    /// straight into an f32.
    #[test]
    fn kinkos_own_repeat_penalty_past_f32_is_refused() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"repeat_penalty":1e39}}"#;
        let refusal = serde_json::from_str::<crate::api::ChatRequest>(body)
            .unwrap_err()
            .to_string();
        assert!(refusal.contains("out of range"), "{refusal}");
        let body = r#"{"model":"m","messages":[],"options":{"repeat_penalty":1.1}}"#;
        let req: crate::api::ChatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.options.repeat_penalty, Some(1.1));
        let body = r#"{"model":"m","messages":[]}"#;
        let req: crate::api::ChatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.options.repeat_penalty, None);
    }

    #[test]
    fn ollama_counts_past_the_address_space_are_refused_or_capped() {
        let map = |v: serde_json::Value| v.as_object().cloned();
        let o =
            ollama::options(map(serde_json::json!({"num_predict": i64::MAX})).as_ref()).unwrap();
        assert_eq!(
            validate_options(&o, 512, 4096).unwrap_err(),
            format!(
                "options.max_tokens must be between 1 and 4096, got {}",
                i64::MAX
            )
        );
        assert!(ollama::options(map(serde_json::json!({"num_ctx": -1})).as_ref()).is_err());
        let o = ollama::options(map(serde_json::json!({"num_predict": -1})).as_ref()).unwrap();
        assert_eq!(o.max_tokens, None);
    }
}

/// The embedding requests: Ollama's `/api/embed` and `/api/embeddings`,
/// OpenAI's `/v1/embeddings`. Each `input` becomes a list of texts.
pub mod embed {
    use super::one_line;
    use serde::Deserialize;
    use serde_json::{Map, Value};

    /// `POST /api/embed`.
    #[derive(Debug, Deserialize)]
    pub struct EmbedBody {
        /// The model.
        pub model: String,
        /// A text or a list of texts (none or `""`: load or unload the model).
        #[serde(default)]
        pub input: Value,
        /// Cut inputs longer than the model reads (the default), or refuse them.
        #[serde(default)]
        pub truncate: Option<bool>,
        /// How long the model stays loaded afterwards.
        #[serde(default)]
        pub keep_alive: Option<Value>,
        /// The vectors' length (only the model's own is possible).
        #[serde(default)]
        pub dimensions: Option<Value>,
        /// Ollama's options (none changes an embedding).
        #[serde(default)]
        pub options: Option<Map<String, Value>>,
    }

    /// `POST /api/embeddings`, the older form.
    #[derive(Debug, Deserialize)]
    pub struct EmbeddingsBody {
        /// The model.
        pub model: String,
        /// One text (none or empty: load the model).
        #[serde(default)]
        pub prompt: Value,
        /// How long the model stays loaded afterwards.
        #[serde(default)]
        pub keep_alive: Option<Value>,
        /// Ollama's options (none changes an embedding).
        #[serde(default)]
        pub options: Option<Map<String, Value>>,
    }

    /// `POST /v1/embeddings`.
    #[derive(Debug, Deserialize)]
    pub struct OpenAiEmbedBody {
        /// The model.
        pub model: String,
        /// A text or a list of texts.
        #[serde(default)]
        pub input: Value,
        /// `float` (the default) or `base64`.
        #[serde(default)]
        pub encoding_format: Option<String>,
        /// The vectors' length (only the model's own is possible).
        #[serde(default)]
        pub dimensions: Option<Value>,
    }

    impl EmbeddingsBody {
        /// The prompt's text, if any.
        pub fn texts(&self) -> Result<Vec<String>, String> {
            match &self.prompt {
                Value::Null => Ok(Vec::new()),
                Value::String(s) if s.is_empty() => Ok(Vec::new()),
                Value::String(s) => Ok(vec![s.clone()]),
                _ => Err("`prompt` must be a string".into()),
            }
        }
    }

    /// Whether `v` is a token array (numbers) rather than text.
    fn tokens(v: &Value) -> bool {
        match v {
            Value::Number(_) => true,
            Value::Array(a) => !a.is_empty() && a.iter().all(|x| x.is_number()),
            _ => false,
        }
    }

    const TOKENS: &str =
        "token arrays are not supported: send the text itself (a string or a list of strings)";

    /// The texts of `input`, a string or a list of strings. Token arrays,
    /// other values, empty strings in a list and more than `max` texts are
    /// refused. A missing input, `""` or `[]` is no text at all (the caller
    /// decides whether that is allowed).
    pub fn texts(input: &Value, max: usize) -> Result<Vec<String>, String> {
        let texts = match input {
            Value::Null => Vec::new(),
            Value::String(s) if s.is_empty() => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Array(_) if tokens(input) => return Err(TOKENS.into()),
            Value::Array(items) => {
                if items.len() > max {
                    return Err(format!(
                        "`input` has {} texts, more than the limit of {max} per request",
                        items.len()
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) if s.is_empty() => {
                            Err(format!("input[{i}] is an empty string"))
                        }
                        Value::String(s) => Ok(s.clone()),
                        v if tokens(v) => Err(TOKENS.to_string()),
                        _ => Err(format!("input[{i}] must be a string")),
                    })
                    .collect::<Result<_, _>>()?
            }
            Value::Number(_) => return Err(TOKENS.into()),
            _ => return Err("`input` must be a string or a list of strings".into()),
        };
        Ok(texts)
    }

    /// The vector length a request asks for: none, or a positive whole
    /// number.
    pub fn dimensions(v: Option<&Value>) -> Result<Option<usize>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(d) if d > 0 => Ok(Some(d as usize)),
                _ => Err(format!(
                    "`dimensions` must be a positive whole number, not {n}"
                )),
            },
            Some(other) => Err(one_line(&format!(
                "`dimensions` must be a positive whole number, not {other}"
            ))),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn inputs() {
            assert_eq!(texts(&json!("a"), 4).unwrap(), vec!["a"]);
            assert_eq!(texts(&json!(["a", "b"]), 4).unwrap(), vec!["a", "b"]);
            assert!(texts(&json!(""), 4).unwrap().is_empty());
            assert!(texts(&json!([]), 4).unwrap().is_empty());
            assert!(texts(&Value::Null, 4).unwrap().is_empty());
            assert!(texts(&json!([1, 2]), 4)
                .unwrap_err()
                .contains("token arrays"));
            assert!(texts(&json!([[1, 2]]), 4)
                .unwrap_err()
                .contains("token arrays"));
            assert!(texts(&json!(["a", 3]), 4)
                .unwrap_err()
                .contains("token arrays"));
            assert_eq!(
                texts(&json!(["a", ""]), 4).unwrap_err(),
                "input[1] is an empty string"
            );
            assert_eq!(
                texts(&json!(["a", {}]), 4).unwrap_err(),
                "input[1] must be a string"
            );
            assert!(texts(&json!({"a": 1}), 4)
                .unwrap_err()
                .contains("a string or a list"));
            assert!(texts(&Value::Array(vec![json!("a"); 5]), 4)
                .unwrap_err()
                .contains("limit of 4"));
            assert_eq!(dimensions(Some(&json!(384))).unwrap(), Some(384));
            assert!(dimensions(Some(&json!(0))).is_err());
            assert!(dimensions(Some(&json!("384"))).is_err());
        }
    }
}

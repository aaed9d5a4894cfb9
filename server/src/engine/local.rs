//! mistral.rs 0.8.1 in this process: one GGUF model, loaded from its own
//! directory (read from disk only), with F32 activations and no prefix
//! cache. The engine process (`kinko engine-worker`, see
//! [`super::worker`]) and the bare-engine benchmark drive it; the server
//! itself talks to engine processes ([`super::runner`]).
//!
//! Requests are sent to the engine with our own channel and forwarded by a
//! task; when the consumer drops its stream the forwarder drops the engine's
//! receiver, and the engine marks the sequence cancelled at its next token.
//! Tokenize calls run in their own task because cancelling one mid-flight
//! panics the engine thread.

use super::{EngineError, EngineEvent, Sampling, TokenStream};
use app::api::{ChatMessage, FinishReason, Role, Usage};
use mistralrs::{
    Constraint, Model, NormalRequest, Request, RequestLike, Response, SamplingParams, StopTokens,
    TextMessageRole, TextMessages,
};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// How many responses may wait between the engine and our forwarder.
const ENGINE_BUFFER: usize = 64;

/// A model loaded into mistral.rs in this process.
#[derive(Clone)]
pub struct LocalModel {
    model: Arc<Model>,
    /// Its GGUF file.
    path: Arc<std::path::PathBuf>,
    /// Its tokens as text, to close structured answers within their
    /// budget: read from the GGUF at the first structured answer.
    vocab: Arc<tokio::sync::OnceCell<Arc<super::json_budget::Vocabulary>>>,
}

impl LocalModel {
    /// Load `file` from `dir` (which must exist: a missing path would be
    /// taken as a Hub repo id), serving at most `max_num_seqs` sequences at
    /// once.
    pub async fn load(dir: &Path, file: &str, max_num_seqs: usize) -> Result<Self, String> {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
        let dir = dir.to_string_lossy().to_string();
        let file = file.to_string();
        let handle = tokio::runtime::Handle::current();
        let model = tokio::task::spawn_blocking(move || {
            handle.block_on(build_model(dir, file, max_num_seqs))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Self {
            model: Arc::new(model),
            path: Arc::new(path),
            vocab: Arc::default(),
        })
    }

    /// Tokens the prompt takes with the model's chat template applied.
    pub async fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        let model = self.model.clone();
        let messages = text_messages(messages);
        // Never cancel a tokenize call mid-flight: run it in its own task.
        tokio::spawn(async move {
            model
                .tokenize(either::Either::Left(messages), None, true, true, None)
                .await
                .map(|ids| ids.len())
                .map_err(|e| EngineError::Generation(e.to_string()))
        })
        .await
        .map_err(|e| EngineError::Generation(e.to_string()))?
    }

    /// Start generating. The stream yields one `Delta` per engine token
    /// (empty when the token ends inside a UTF-8 character), then `Done`;
    /// dropping it cancels the sequence at its next token.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        sampling: &Sampling,
    ) -> Result<TokenStream, EngineError> {
        self.stream_timed(messages, sampling)
            .await
            .map(|(stream, _)| stream)
    }

    /// What runs on the logits before each token is sampled: joining the
    /// compute pool, and for a structured answer, closing it within its
    /// budget.
    async fn logits_processors(
        &self,
        sampling: &Sampling,
    ) -> Vec<Arc<dyn mistralrs::CustomLogitsProcessor>> {
        let mut processors: Vec<Arc<dyn mistralrs::CustomLogitsProcessor>> =
            vec![Arc::new(JoinComputePool)];
        if sampling.format.is_some() {
            let path = self.path.clone();
            let vocab = self
                .vocab
                .get_or_init(|| async move {
                    tokio::task::spawn_blocking(move || {
                        super::json_budget::Vocabulary::from_gguf(&path)
                    })
                    .await
                    .map(Arc::new)
                    .unwrap_or_default()
                })
                .await
                .clone();
            processors.push(Arc::new(super::json_budget::CloseWithinBudget::new(
                vocab,
                sampling.max_tokens,
            )));
        }
        processors
    }

    /// [`LocalModel::stream`], and the seconds the engine spent on the
    /// prompt, set when the answer ends.
    pub async fn stream_timed(
        &self,
        messages: &[ChatMessage],
        sampling: &Sampling,
    ) -> Result<(TokenStream, Arc<OnceLock<f64>>), EngineError> {
        let mut messages = text_messages(messages);
        let logits_processors = self.logits_processors(sampling).await;
        let (engine_tx, mut engine_rx) = mpsc::channel::<Response>(ENGINE_BUFFER);
        let request = Request::Normal(Box::new(NormalRequest {
            messages: messages.take_messages(),
            sampling_params: sampling_params(sampling),
            response: engine_tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint: match &sampling.format {
                Some(format) => Constraint::JsonSchema(super::constrained_schema(format)),
                None => Constraint::None,
            },
            suffix: None,
            tools: engine_tools(&sampling.tools)?,
            tool_choice: (!sampling.tools.is_empty()).then_some(mistralrs::ToolChoice::Auto),
            logits_processors: Some(logits_processors),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let sender = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| EngineError::Generation(e.to_string()))?;
        sender
            .send(request)
            .await
            .map_err(|e| EngineError::Generation(e.to_string()))?;

        // Unbounded towards the consumer: the engine thread must never wait
        // on a slow reader (it would stall every other answer); at most
        // `max_tokens` items can pile up.
        let (tx, rx) = mpsc::unbounded_channel();
        let model = self.model.clone();
        let prompt_secs = Arc::new(OnceLock::new());
        let prompt_time = prompt_secs.clone();
        let max_tokens = sampling.max_tokens;
        // The forwarder owns the model handle and the engine's receiver; it
        // ends (dropping both) as soon as the consumer is gone.
        tokio::spawn(async move {
            let _model = model;
            let mut tokens_seen = 0usize;
            loop {
                let response = tokio::select! {
                    r = engine_rx.recv() => r,
                    _ = tx.closed() => return,
                };
                let Some(response) = response else {
                    let _ = tx.send(ended_without_final_chunk(tokens_seen, max_tokens));
                    return;
                };
                if matches!(response, Response::Chunk(_)) {
                    tokens_seen += 1;
                }
                let (out, finished) = events_of(response, &prompt_time);
                for item in out {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
                if finished {
                    return;
                }
            }
        });
        Ok((Box::pin(UnboundedReceiverStream::new(rx)), prompt_secs))
    }
}

/// The engine closed the stream without a final chunk. mistral.rs 0.8.1
/// sends no chunk at all for a token that ends inside a UTF-8 character, and
/// when that token is the last one the finish reason and usage go with it:
/// the sequence is over (errors and cancellations come otherwise), so after
/// any token this is the end of an answer cut at `max_tokens` (a stop at the
/// end-of-sequence token has whole text). Before any token it is an error.
fn ended_without_final_chunk(
    tokens_seen: usize,
    max_tokens: usize,
) -> Result<EngineEvent, EngineError> {
    if tokens_seen == 0 {
        return Err(EngineError::Generation(
            "the engine ended the stream without finishing".into(),
        ));
    }
    Ok(EngineEvent::Done {
        reason: FinishReason::Length,
        // The prompt count is the caller's (the runner fills it in).
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: max_tokens,
        },
    })
}

/// What one engine response means for the stream, and whether it ends it;
/// the final usage's prompt time goes to `prompt_secs`.
fn events_of(
    response: Response,
    prompt_secs: &OnceLock<f64>,
) -> (Vec<Result<EngineEvent, EngineError>>, bool) {
    match response {
        Response::Chunk(chunk) => {
            let mut out = Vec::with_capacity(2);
            let mut finished = false;
            let mut text = String::new();
            let mut reason = None;
            let mut calls = Vec::new();
            for choice in chunk.choices {
                if let Some(t) = choice.delta.content {
                    text.push_str(&t);
                }
                calls.extend(
                    choice
                        .delta
                        .tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .map(tool_call),
                );
                reason = reason.or(choice.finish_reason);
            }
            // One delta per engine token, even an empty one: the worker
            // counts tokens by them, and the first one marks the prompt done.
            out.push(Ok(EngineEvent::Delta(text)));
            if !calls.is_empty() {
                out.push(Ok(EngineEvent::ToolCalls(calls)));
            }
            if let Some(reason) = reason {
                if let Some(u) = &chunk.usage {
                    let _ = prompt_secs.set(f64::from(u.total_prompt_time_sec));
                }
                let usage = chunk.usage.as_ref().map(|u| Usage {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                });
                out.push(Ok(EngineEvent::Done {
                    reason: finish_reason(&reason),
                    usage: usage.unwrap_or_default(),
                }));
                finished = true;
            }
            (out, finished)
        }
        Response::ModelError(msg, _) => (vec![Err(EngineError::Generation(msg))], true),
        Response::InternalError(e) | Response::ValidationError(e) => {
            (vec![Err(EngineError::Generation(e.to_string()))], true)
        }
        Response::Done(done) => {
            let reason = done
                .choices
                .first()
                .map(|c| finish_reason(&c.finish_reason))
                .unwrap_or(FinishReason::Stop);
            let _ = prompt_secs.set(f64::from(done.usage.total_prompt_time_sec));
            let usage = Usage {
                prompt_tokens: done.usage.prompt_tokens,
                completion_tokens: done.usage.completion_tokens,
            };
            (vec![Ok(EngineEvent::Done { reason, usage })], true)
        }
        _ => (
            vec![Err(EngineError::Generation(
                "unexpected response kind from the engine".into(),
            ))],
            true,
        ),
    }
}

/// Loads a GGUF model on the CPU with F32 activations. mistral.rs's
/// `GgufModelBuilder` picks BF16 there, which the quantized matmuls convert
/// to F32 and back at every layer; F32 throughout measured faster here (see
/// the README's benchmark notes). No Hub token is read, no prefix cache kept
/// (0.8.1 mis-matches multi-turn prefixes and never evicts on CPU).
async fn build_model(dir: String, file: String, max_num_seqs: usize) -> anyhow::Result<Model> {
    use mistralrs::core as mc;
    let loader = mc::GGUFLoaderBuilder::new(
        None,
        None,
        dir,
        vec![file],
        mc::GGUFSpecificConfig { topology: None },
        false,
        None,
    )
    .build();
    let pipeline = loader.load_model_from_hf(
        None,
        mc::TokenSource::None,
        &mc::ModelDType::F32,
        &mistralrs::Device::Cpu,
        true,
        mc::DeviceMapSetting::Auto(mc::AutoDeviceMapParams::default_text()),
        None,
        None,
    )?;
    let scheduler = mc::SchedulerConfig::DefaultScheduler {
        method: mc::DefaultSchedulerMethod::Fixed(max_num_seqs.try_into()?),
    };
    let runner = mc::MistralRsBuilder::new(pipeline, scheduler, false, None)
        .with_no_prefix_cache(true)
        .build()
        .await;
    Ok(Model::new(runner))
}

/// A logits processor that changes no logits: mistral.rs calls it on its
/// engine thread when it samples, which is where kinko can make that thread
/// a worker of its compute pool ([`crate::threads::join_compute_pool`]).
struct JoinComputePool;

impl mistralrs::CustomLogitsProcessor for JoinComputePool {
    fn apply(
        &self,
        logits: &mistralrs::Tensor,
        _context: &[u32],
    ) -> mistralrs::Result<mistralrs::Tensor> {
        crate::threads::join_compute_pool();
        Ok(logits.clone())
    }
}

/// The request's tools in mistral.rs's types (none when there are none).
fn engine_tools(tools: &[serde_json::Value]) -> Result<Option<Vec<mistralrs::Tool>>, EngineError> {
    if tools.is_empty() {
        return Ok(None);
    }
    tools
        .iter()
        .map(|t| serde_json::from_value(t.clone()))
        .collect::<Result<Vec<mistralrs::Tool>, _>>()
        .map(Some)
        .map_err(|e| EngineError::Generation(format!("a tool the engine cannot take: {e}")))
}

/// A call mistral.rs recognised in the output: its arguments parsed (a
/// string that is not JSON stays a string).
fn tool_call(call: mistralrs::ToolCallResponse) -> app::api::ToolCall {
    let arguments = serde_json::from_str(&call.function.arguments)
        .unwrap_or(serde_json::Value::String(call.function.arguments));
    app::api::ToolCall {
        id: call.id,
        name: call.function.name,
        arguments,
    }
}

fn text_messages(messages: &[ChatMessage]) -> TextMessages {
    messages.iter().fold(TextMessages::new(), |acc, m| {
        let role = match m.role {
            Role::System => TextMessageRole::System,
            Role::User => TextMessageRole::User,
            Role::Assistant => TextMessageRole::Assistant,
        };
        acc.add_message(role, &m.content)
    })
}

fn sampling_params(s: &Sampling) -> SamplingParams {
    let mut params = SamplingParams::deterministic();
    params.max_len = Some(s.max_tokens);
    params.repetition_penalty = s.repeat_penalty.filter(|p| *p != 1.0);
    if !s.stop.is_empty() {
        params.stop_toks = Some(StopTokens::Seqs(s.stop.clone()));
    }
    if s.temperature > 0.0 {
        params.temperature = Some(s.temperature);
        params.top_k = s.top_k;
        params.top_p = s.top_p;
    }
    params
}

fn finish_reason(engine_reason: &str) -> FinishReason {
    match engine_reason {
        "length" | "modellength" => FinishReason::Length,
        "canceled" | "cancelled" => FinishReason::Cancelled,
        _ => FinishReason::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_closed_after_tokens_ended_at_max_tokens() {
        assert!(matches!(
            ended_without_final_chunk(0, 64),
            Err(EngineError::Generation(_))
        ));
        assert_eq!(
            ended_without_final_chunk(62, 64).unwrap(),
            EngineEvent::Done {
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 0,
                    completion_tokens: 64
                }
            }
        );
    }
}

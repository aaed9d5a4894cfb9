//! A deterministic engine for tests and UI work (`--engine fake`): it echoes
//! the last user message exactly (whitespace and newlines included, a word
//! with the space before it per token), optionally pads the answer, waits a
//! fixed delay per token, can fail after N tokens, and records every
//! cancellation so tests can assert that dropping a stream stops it.

use super::{ChatEngine, EngineError, EngineEvent, EngineRequest, ModelInfo, TokenStream};
use crate::metrics::Metrics;
use app::api::{ChatMessage, FinishReason, PromptCost, Role, Usage};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The model the fake engine serves unless told otherwise.
pub const FAKE_MODEL: &str = "fake:latest";
/// Context window the fake model claims.
pub const FAKE_CONTEXT: usize = 4096;

/// How the fake engine behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Pause before each token.
    pub token_delay: Duration,
    /// Pad the echo with numbered filler words up to this many tokens.
    pub min_tokens: usize,
    /// Fail with an engine error after this many tokens.
    pub fail_after: Option<usize>,
    /// The context length the fake model claims.
    pub context_length: usize,
    /// The prompt cost it claims to have measured, if any.
    pub prompt_cost: Option<PromptCost>,
    /// The models it serves.
    pub models: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            token_delay: Duration::ZERO,
            min_tokens: 0,
            fail_after: None,
            context_length: FAKE_CONTEXT,
            prompt_cost: None,
            models: vec![FAKE_MODEL.into()],
        }
    }
}

/// What the fake engine saw, for assertions.
#[derive(Debug, Default)]
pub struct FakeLog {
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    tokens: AtomicU64,
    formats: std::sync::Mutex<Vec<Option<app::api::AnswerFormat>>>,
    tools: std::sync::Mutex<Vec<Vec<String>>>,
}

impl FakeLog {
    /// Generations started.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    /// Generations that ran to their end.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    /// Generations stopped because their stream was dropped.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    /// Tokens produced.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }
    /// The names of the tools each generation was offered, in order.
    pub fn tools(&self) -> Vec<Vec<String>> {
        self.tools.lock().map(|t| t.clone()).unwrap_or_default()
    }
    /// The answer format each generation was asked for, in order.
    pub fn formats(&self) -> Vec<Option<app::api::AnswerFormat>> {
        self.formats.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// The deterministic engine.
pub struct FakeEngine {
    config: FakeConfig,
    log: Arc<FakeLog>,
    metrics: Metrics,
}

impl FakeEngine {
    /// A fake engine that counts its tokens in `metrics`.
    pub fn new(config: FakeConfig, metrics: Metrics) -> Self {
        Self {
            config,
            log: Arc::default(),
            metrics,
        }
    }

    fn serves(&self, model: &str) -> bool {
        self.config.models.iter().any(|m| m == model)
    }

    /// What it saw so far.
    pub fn log(&self) -> Arc<FakeLog> {
        self.log.clone()
    }

    /// The tokens it answers `messages` with, before the `max_tokens` cap.
    pub fn script(&self, messages: &[ChatMessage]) -> Vec<String> {
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let mut tokens = echo_tokens(last_user);
        let mut n = 1;
        while tokens.len() < self.config.min_tokens {
            tokens.push(format!(" word{n}"));
            n += 1;
        }
        tokens
    }
}

/// `text` cut into tokens that join back to exactly `text`: each token is a
/// run of whitespace followed by a run of anything else.
fn echo_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            tokens.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// With tools offered, a last question `call NAME {JSON}` is answered by a
/// call of the tool NAME (one the request offers) with those arguments.
fn scripted_call(req: &EngineRequest) -> Option<app::api::ToolCall> {
    let last = req.messages.iter().rev().find(|m| m.role == Role::User)?;
    let rest = last.content.strip_prefix("call ")?;
    let (name, arguments) = rest.split_once(' ').unwrap_or((rest, "{}"));
    let offered = req
        .sampling
        .tools
        .iter()
        .any(|t| t.pointer("/function/name").and_then(|n| n.as_str()) == Some(name));
    offered.then(|| app::api::ToolCall {
        id: "call-fake-1".into(),
        name: name.to_string(),
        arguments: serde_json::from_str(arguments).unwrap_or_default(),
    })
}

fn count_words(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.content.split_whitespace().count() + 4)
        .sum::<usize>()
        + 2
}

#[async_trait]
impl ChatEngine for FakeEngine {
    async fn prompt_cost(&self, model: &str) -> Option<PromptCost> {
        self.config.prompt_cost.filter(|_| self.serves(model))
    }

    async fn list_models(&self) -> Vec<ModelInfo> {
        let mut names = self.config.models.clone();
        names.sort();
        names
            .into_iter()
            .map(|name| ModelInfo {
                // A fake model named `…tools…` takes tools.
                capabilities: if name.contains("tools") {
                    vec![
                        app::api::Capability::Completion,
                        app::api::Capability::Tools,
                    ]
                } else {
                    vec![app::api::Capability::Completion]
                },
                name,
                size: 0,
                quantization: "none".into(),
                context_length: self.config.context_length,
                architecture: "fake".into(),
                preset: Default::default(),
                upstream: None,
            })
            .collect()
    }

    async fn count_tokens(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<usize, EngineError> {
        if !self.serves(model) {
            return Err(EngineError::UnknownModel(model.into()));
        }
        Ok(count_words(messages))
    }

    async fn stream(&self, req: EngineRequest) -> Result<TokenStream, EngineError> {
        if !self.serves(&req.model) {
            return Err(EngineError::UnknownModel(req.model));
        }
        let script = self.script(&req.messages);
        let prompt_tokens = count_words(&req.messages);
        let max = req.sampling.max_tokens;
        let delay = self.config.token_delay;
        let fail_after = self.config.fail_after;
        let log = self.log.clone();
        let metrics = self.metrics.clone();
        let (tx, rx) = mpsc::channel(1);
        log.started.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut formats) = log.formats.lock() {
            formats.push(req.sampling.format.clone());
        }
        if let Ok(mut tools) = log.tools.lock() {
            tools.push(
                req.sampling
                    .tools
                    .iter()
                    .filter_map(|t| t.pointer("/function/name")?.as_str().map(String::from))
                    .collect(),
            );
        }
        let call = scripted_call(&req);
        tokio::spawn(async move {
            if let Some(call) = call {
                // One token, then the call, as an engine that recognised it.
                metrics.tokens_generated(1);
                let _ = tx.send(Ok(EngineEvent::Delta(String::new()))).await;
                let _ = tx.send(Ok(EngineEvent::ToolCalls(vec![call]))).await;
                let done = EngineEvent::Done {
                    reason: FinishReason::Stop,
                    usage: Usage {
                        prompt_tokens,
                        completion_tokens: 1,
                    },
                };
                if tx.send(Ok(done)).await.is_ok() {
                    log.completed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            let mut produced = 0usize;
            for token in script.into_iter().take(max) {
                if fail_after == Some(produced) {
                    let _ = tx
                        .send(Err(EngineError::Generation(format!(
                            "scripted failure after {produced} tokens"
                        ))))
                        .await;
                    return;
                }
                if !delay.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tx.closed() => {
                            log.cancelled.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
                produced += 1;
                log.tokens.fetch_add(1, Ordering::SeqCst);
                metrics.tokens_generated(1);
                if tx.send(Ok(EngineEvent::Delta(token))).await.is_err() {
                    log.cancelled.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            let reason = if produced >= max {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            let done = EngineEvent::Done {
                reason,
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: produced,
                },
            };
            if tx.send(Ok(done)).await.is_err() {
                log.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            log.completed.fetch_add(1, Ordering::SeqCst);
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sampling;
    use futures::StreamExt as _;

    fn request(text: &str, max_tokens: usize) -> EngineRequest {
        EngineRequest {
            model: FAKE_MODEL.into(),
            messages: vec![ChatMessage::new(Role::User, text)],
            sampling: Sampling::greedy(max_tokens),
            prompt_tokens: 0,
            explicit: Default::default(),
        }
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_then_done() {
        let engine = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let events: Vec<_> = engine
            .stream(request("hello there", 100))
            .await
            .unwrap()
            .collect()
            .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(EngineEvent::Delta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "hello there");
        match events.last() {
            Some(Ok(EngineEvent::Done { reason, usage })) => {
                assert_eq!(*reason, FinishReason::Stop);
                assert_eq!(usage.completion_tokens, 2);
            }
            other => panic!("expected done, got {other:?}"),
        }
    }

    #[test]
    fn the_echo_keeps_every_space_and_newline() {
        let text = "  # Title\n\n```rust\nfn main() {}\n```\n\t- [x] done  \n";
        let tokens = echo_tokens(text);
        assert_eq!(tokens.concat(), text);
        assert_eq!(tokens[0], "  #");
        assert_eq!(tokens[1], " Title");
        assert!(echo_tokens("").is_empty());
        assert_eq!(echo_tokens("one"), vec!["one"]);
    }

    #[tokio::test]
    async fn max_tokens_ends_with_length() {
        let engine = FakeEngine::new(FakeConfig::default(), Metrics::new());
        let events: Vec<_> = engine
            .stream(request("a b c d e f", 3))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(events.len(), 4);
        assert!(matches!(
            events.last(),
            Some(Ok(EngineEvent::Done {
                reason: FinishReason::Length,
                ..
            }))
        ));
    }

    #[tokio::test]
    async fn dropping_the_stream_is_recorded_as_cancellation() {
        let config = FakeConfig {
            token_delay: Duration::from_millis(5),
            min_tokens: 1000,
            ..FakeConfig::default()
        };
        let engine = FakeEngine::new(config, Metrics::new());
        let log = engine.log();
        let mut stream = engine.stream(request("x", 1000)).await.unwrap();
        let _ = stream.next().await;
        drop(stream);
        for _ in 0..100 {
            if log.cancelled() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(log.cancelled(), 1);
        assert_eq!(log.completed(), 0);
        let tokens = log.tokens();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(log.tokens(), tokens, "no tokens after cancellation");
        assert!(tokens < 10);
    }

    #[tokio::test]
    async fn scripted_failure_yields_an_error() {
        let config = FakeConfig {
            fail_after: Some(2),
            ..FakeConfig::default()
        };
        let engine = FakeEngine::new(config, Metrics::new());
        let events: Vec<_> = engine
            .stream(request("a b c", 100))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(events.len(), 3);
        assert!(matches!(events[2], Err(EngineError::Generation(_))));
    }
}

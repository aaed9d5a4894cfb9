//! The production engine: mistral.rs 0.8.1 embedded in the process.
//!
//! Models load on first use from the store (each GGUF in its own directory,
//! read from disk only). Requests are sent to the engine with our own
//! channel and forwarded by a task that counts tokens; when the consumer
//! drops its stream the forwarder drops the engine's receiver, and the
//! engine marks the sequence cancelled at its next token. The prefix cache
//! is off (0.8.1 mis-matches multi-turn prefixes), and tokenize calls run in
//! their own task because cancelling one mid-flight panics the engine thread.

use super::{
    ChatEngine, EngineError, EngineEvent, EngineRequest, KeepAlive, ModelInfo, Sampling,
    TokenStream,
};
use crate::metrics::Metrics;
use crate::models::{InstalledModel, ModelStore};
use app::api::{ChatMessage, FinishReason, Role, Usage};
use async_trait::async_trait;
use mistralrs::{
    Constraint, Model, NormalRequest, Request, RequestLike, Response, SamplingParams, StopTokens,
    TextMessageRole, TextMessages,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex, OnceCell};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// How many responses may wait between the engine and our forwarder.
const ENGINE_BUFFER: usize = 64;

/// One model slot: loaded at most once, kept while used or kept alive.
struct Entry {
    cell: Arc<OnceCell<Arc<Model>>>,
    last_used: std::time::Instant,
    keep_alive: KeepAlive,
}

impl Entry {
    /// Whether an answer holds the model now.
    fn in_use(&self) -> bool {
        self.cell.get().is_some_and(|m| Arc::strong_count(m) > 1)
    }

    fn expires(&self) -> Option<std::time::Instant> {
        match self.keep_alive {
            KeepAlive::For(d) => Some(self.last_used + d),
            KeepAlive::Forever => None,
        }
    }
}

type Loaded = Arc<Mutex<HashMap<String, Entry>>>;

/// The mistral.rs engine over the model store.
pub struct MistralEngine {
    store: ModelStore,
    metrics: Metrics,
    max_num_seqs: usize,
    keep_alive: KeepAlive,
    max_loaded: usize,
    loaded: Loaded,
    reaper: std::sync::Once,
}

impl MistralEngine {
    /// An engine serving the models of `store`; nothing is loaded yet.
    /// Models stay loaded 5 minutes after their last use, two at most.
    pub fn new(store: ModelStore, metrics: Metrics) -> Self {
        Self::with_limits(
            store,
            metrics,
            KeepAlive::For(std::time::Duration::from_secs(300)),
            2,
        )
    }

    /// Like [`MistralEngine::new`] with the default keep-alive and the most
    /// models held in memory at once (the least recently used goes first).
    pub fn with_limits(
        store: ModelStore,
        metrics: Metrics,
        keep_alive: KeepAlive,
        max_loaded: usize,
    ) -> Self {
        Self {
            store,
            metrics,
            max_num_seqs: 16,
            keep_alive,
            max_loaded: max_loaded.max(1),
            loaded: Arc::new(Mutex::new(HashMap::new())),
            reaper: std::sync::Once::new(),
        }
    }

    /// Once, from within the runtime: a task that unloads models whose
    /// keep-alive ran out while no answer used them.
    fn start_reaper(&self) {
        let loaded = Arc::downgrade(&self.loaded);
        self.reaper.call_once(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(loaded) = loaded.upgrade() else {
                        return;
                    };
                    let now = std::time::Instant::now();
                    let mut map = loaded.lock().await;
                    map.retain(|name, e| {
                        if e.in_use() {
                            // Being used counts as used: the keep-alive
                            // runs from the end of the last answer.
                            e.last_used = now;
                            return true;
                        }
                        let expired = e.cell.initialized() && e.expires().is_some_and(|t| t <= now);
                        if expired {
                            tracing::info!(model = %name, "keep-alive over: unloading");
                        }
                        !expired
                    });
                }
            });
        });
    }

    /// Make room for one more model: drop the least recently used ones that
    /// no answer is using.
    fn evict_for_one_more(&self, map: &mut HashMap<String, Entry>, keep: &str) {
        loop {
            let loaded = map.values().filter(|e| e.cell.initialized()).count();
            if loaded < self.max_loaded {
                return;
            }
            let victim = map
                .iter()
                .filter(|(n, e)| n.as_str() != keep && e.cell.initialized() && !e.in_use())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            match victim {
                Some(v) => {
                    tracing::info!(model = %v, "unloading the least recently used model");
                    map.remove(&v);
                }
                None => return,
            }
        }
    }

    fn installed(&self, name: &str) -> Result<InstalledModel, EngineError> {
        self.store
            .get(name)
            .ok_or_else(|| EngineError::UnknownModel(name.to_string()))
    }

    /// The loaded model called `name`, loading it on first use.
    pub async fn model(&self, name: &str) -> Result<Arc<Model>, EngineError> {
        self.model_kept(name, None).await
    }

    async fn model_kept(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<Model>, EngineError> {
        self.start_reaper();
        let key = crate::models::normalize_name(name)
            .map_err(|_| EngineError::UnknownModel(name.to_string()))?;
        // A loaded model needs no trip to the store (this runs for every
        // token count of the history window).
        {
            let mut loaded = self.loaded.lock().await;
            if let Some(entry) = loaded.get_mut(&key) {
                if let Some(model) = entry.cell.get().cloned() {
                    entry.last_used = std::time::Instant::now();
                    if let Some(k) = keep_alive {
                        entry.keep_alive = k;
                    }
                    return Ok(model);
                }
            }
        }
        let installed = self.installed(name)?;
        let cell = {
            let mut loaded = self.loaded.lock().await;
            if !loaded.get(&key).is_some_and(|e| e.cell.initialized()) {
                self.evict_for_one_more(&mut loaded, &key);
            }
            let default = self.keep_alive;
            let entry = loaded.entry(key.clone()).or_insert_with(|| Entry {
                cell: Arc::default(),
                last_used: std::time::Instant::now(),
                keep_alive: default,
            });
            entry.last_used = std::time::Instant::now();
            if let Some(k) = keep_alive {
                entry.keep_alive = k;
            }
            entry.cell.clone()
        };
        let max_num_seqs = self.max_num_seqs;
        cell.get_or_try_init(|| load(installed, max_num_seqs))
            .await
            .cloned()
    }
}

async fn load(installed: InstalledModel, max_num_seqs: usize) -> Result<Arc<Model>, EngineError> {
    let name = installed.manifest.name.clone();
    let load_err = |reason: String| EngineError::Load {
        model: name.clone(),
        reason,
    };
    // A path that does not exist would be taken as a Hub repo id: check first.
    if !installed.gguf_path().is_file() {
        return Err(load_err(format!(
            "{} is missing",
            installed.gguf_path().display()
        )));
    }
    let dir = installed.dir.to_string_lossy().to_string();
    let file = installed.manifest.file.clone();
    let started = std::time::Instant::now();
    let handle = tokio::runtime::Handle::current();
    let model =
        tokio::task::spawn_blocking(move || handle.block_on(build_model(dir, file, max_num_seqs)))
            .await
            .map_err(|e| load_err(e.to_string()))?
            .map_err(|e| load_err(e.to_string()))?;
    tracing::info!(model = %name, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
    Ok(Arc::new(model))
}

/// Loads a GGUF model on the CPU with F32 activations. mistral.rs's
/// `GgufModelBuilder` picks BF16 there, which the quantized matmuls convert
/// to F32 and back at every layer; F32 throughout measured faster here (see
/// the README's benchmark notes). No Hub token is read, no prefix cache kept.
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

#[async_trait]
impl ChatEngine for MistralEngine {
    async fn ensure_loaded(
        &self,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<std::time::Duration, EngineError> {
        let key = crate::models::normalize_name(model)
            .map_err(|_| EngineError::UnknownModel(model.to_string()))?;
        let already = {
            let loaded = self.loaded.lock().await;
            loaded.get(&key).is_some_and(|e| e.cell.initialized())
        };
        let started = std::time::Instant::now();
        self.model_kept(model, keep_alive).await?;
        Ok(if already {
            std::time::Duration::ZERO
        } else {
            started.elapsed()
        })
    }

    async fn loaded_models(&self) -> Vec<super::LoadedModel> {
        let loaded = self.loaded.lock().await;
        let now = std::time::Instant::now();
        let mut names: Vec<super::LoadedModel> = loaded
            .iter()
            .filter(|(_, e)| e.cell.initialized())
            .map(|(name, e)| super::LoadedModel {
                name: name.clone(),
                expires_at: e
                    .expires()
                    .map(|t| std::time::SystemTime::now() + t.saturating_duration_since(now)),
            })
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        names
    }

    async fn unload(&self, model: &str) {
        if let Ok(name) = crate::models::normalize_name(model) {
            self.loaded.lock().await.remove(&name);
        }
    }

    async fn list_models(&self) -> Vec<ModelInfo> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.list())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.manifest.summary())
            .collect()
    }

    async fn count_tokens(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<usize, EngineError> {
        let model = self.model(model).await?;
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

    async fn stream(&self, req: EngineRequest) -> Result<TokenStream, EngineError> {
        let model = self.model(&req.model).await?;
        let mut messages = text_messages(&req.messages);
        let (engine_tx, mut engine_rx) = mpsc::channel::<Response>(ENGINE_BUFFER);
        let request = Request::Normal(Box::new(NormalRequest {
            messages: messages.take_messages(),
            sampling_params: sampling_params(&req.sampling),
            response: engine_tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: Some(vec![Arc::new(JoinComputePool)]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let sender = model
            .inner()
            .get_sender(None)
            .map_err(|e| EngineError::Generation(e.to_string()))?;
        sender
            .send(request)
            .await
            .map_err(|e| EngineError::Generation(e.to_string()))?;

        // Unbounded towards the client: the engine thread must never wait on
        // a slow reader (it would stall every other answer). A reader that
        // stops altogether is cut off by the socket's write timeout, and at
        // most `max_tokens` items can pile up meanwhile.
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = self.metrics.clone();
        // The forwarder owns the model handle and the engine's receiver; it
        // ends (dropping both) as soon as the consumer is gone.
        tokio::spawn(async move {
            let _model = model;
            // The engine sends one chunk per token, except for tokens that end
            // inside a UTF-8 character; the final usage settles the count.
            let mut counted = 0usize;
            loop {
                let response = tokio::select! {
                    r = engine_rx.recv() => r,
                    _ = tx.closed() => return,
                };
                let Some(response) = response else {
                    let _ = tx.send(Err(EngineError::Generation(
                        "the engine ended the stream without finishing".into(),
                    )));
                    return;
                };
                let mut out = Vec::with_capacity(2);
                let mut finished = false;
                match response {
                    Response::Chunk(chunk) => {
                        metrics.tokens_generated(1);
                        counted += 1;
                        if let Some(u) = &chunk.usage {
                            let missing = u.completion_tokens.saturating_sub(counted);
                            metrics.tokens_generated(missing as u64);
                            counted += missing;
                        }
                        for choice in chunk.choices {
                            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                                out.push(Ok(EngineEvent::Delta(text)));
                            }
                            if let Some(reason) = choice.finish_reason {
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
                        }
                    }
                    Response::ModelError(msg, _) => {
                        out.push(Err(EngineError::Generation(msg)));
                        finished = true;
                    }
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        out.push(Err(EngineError::Generation(e.to_string())));
                        finished = true;
                    }
                    Response::Done(done) => {
                        let reason = done
                            .choices
                            .first()
                            .map(|c| finish_reason(&c.finish_reason))
                            .unwrap_or(FinishReason::Stop);
                        out.push(Ok(EngineEvent::Done {
                            reason,
                            usage: Usage {
                                prompt_tokens: done.usage.prompt_tokens,
                                completion_tokens: done.usage.completion_tokens,
                            },
                        }));
                        finished = true;
                    }
                    _ => {
                        out.push(Err(EngineError::Generation(
                            "unexpected response kind from the engine".into(),
                        )));
                        finished = true;
                    }
                }
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
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

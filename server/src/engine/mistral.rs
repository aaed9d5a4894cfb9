//! The production engine: mistral.rs 0.8.1, one engine process per loaded
//! model (see [`super::runner`] for why a process).
//!
//! Models load on first use from the store, stay loaded for their
//! keep-alive while no answer uses them, and at most `max_loaded` stay in
//! memory (the least recently used goes first). Unloading a model ends its
//! engine process, so its memory goes back to the system at once.

use super::prompt_speed::PromptSpeed;
use super::runner::{Runner, WorkerSpec};
use super::{ChatEngine, EngineError, EngineRequest, KeepAlive, ModelInfo, TokenStream};
use crate::metrics::Metrics;
use crate::models::{InstalledModel, ModelStore};
use app::api::{ChatMessage, PromptCost};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};

/// One model slot: loaded at most once, kept while used or kept alive.
struct Entry {
    cell: Arc<OnceCell<Arc<Runner>>>,
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
    worker: WorkerSpec,
    keep_alive: KeepAlive,
    max_loaded: usize,
    loaded: Loaded,
    /// Prompt timings per model; kept when a model unloads.
    speeds: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<PromptSpeed>>>>,
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
            worker: WorkerSpec::default(),
            keep_alive,
            max_loaded: max_loaded.max(1),
            loaded: Arc::new(Mutex::new(HashMap::new())),
            speeds: Default::default(),
            reaper: std::sync::Once::new(),
        }
    }

    /// The same engine, starting its engine processes as `worker` says.
    pub fn with_worker(mut self, worker: WorkerSpec) -> Self {
        self.worker = worker;
        self
    }

    /// The engine processes running now, by model.
    pub async fn engine_processes(&self) -> Vec<(String, u32)> {
        let loaded = self.loaded.lock().await;
        let mut pids: Vec<(String, u32)> = loaded
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.cell.get()?.pid()?)))
            .collect();
        pids.sort();
        pids
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

    /// The prompt timings of `model` (by its normalized name).
    fn speed(&self, model: &str) -> Arc<std::sync::Mutex<PromptSpeed>> {
        let mut speeds = self.speeds.lock().unwrap_or_else(|p| p.into_inner());
        speeds.entry(model.to_string()).or_default().clone()
    }

    fn installed(&self, name: &str) -> Result<InstalledModel, EngineError> {
        // Embedding models are served by `super::embeddings`.
        self.store
            .get(name)
            .filter(|m| m.manifest.kind.is_chat())
            .ok_or_else(|| EngineError::UnknownModel(name.to_string()))
    }

    /// The engine process of the model called `name`, started on first use.
    pub async fn model(&self, name: &str) -> Result<Arc<Runner>, EngineError> {
        self.model_kept(name, None).await
    }

    async fn model_kept(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<Runner>, EngineError> {
        self.start_reaper();
        let key = crate::models::normalize_name(name)
            .map_err(|_| EngineError::UnknownModel(name.to_string()))?;
        // A loaded model needs no trip to the store (this runs for every
        // token count of the history window).
        {
            let mut loaded = self.loaded.lock().await;
            // An engine process that died is started again below.
            if loaded
                .get(&key)
                .and_then(|e| e.cell.get())
                .is_some_and(|r| r.dead().is_some())
            {
                loaded.remove(&key);
            }
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
        let (spec, metrics, speed) = (self.worker.clone(), self.metrics.clone(), self.speed(&key));
        cell.get_or_try_init(|| load(installed, spec, metrics, speed))
            .await
            .cloned()
    }
}

async fn load(
    installed: InstalledModel,
    spec: WorkerSpec,
    metrics: Metrics,
    speed: Arc<std::sync::Mutex<PromptSpeed>>,
) -> Result<Arc<Runner>, EngineError> {
    let name = installed.manifest.name.clone();
    // A path that does not exist would be taken as a Hub repo id: check first.
    if !installed.gguf_path().is_file() {
        return Err(EngineError::Load {
            model: name,
            reason: format!("{} is missing", installed.gguf_path().display()),
        });
    }
    let started = std::time::Instant::now();
    let runner = Runner::start(
        &name,
        installed.dir.clone(),
        installed.manifest.file.clone(),
        spec,
        metrics,
        speed,
    )
    .await?;
    tracing::info!(model = %name, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
    Ok(runner)
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
            .filter(|m| m.manifest.kind.is_chat())
            .map(|m| m.manifest.summary())
            .collect()
    }

    async fn count_tokens(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<usize, EngineError> {
        self.model(model).await?.count_tokens(messages).await
    }

    async fn stream(&self, req: EngineRequest) -> Result<TokenStream, EngineError> {
        self.model(&req.model)
            .await?
            .stream(req.messages, req.sampling, req.prompt_tokens)
    }

    async fn prompt_cost(&self, model: &str) -> Option<PromptCost> {
        let key = crate::models::normalize_name(model).ok()?;
        let speed = self.speed(&key);
        let estimate = speed.lock().unwrap_or_else(|p| p.into_inner()).estimate();
        estimate
    }
}

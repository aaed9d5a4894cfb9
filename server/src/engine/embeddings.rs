//! The embedding engine: embedding models of the store, run in this process
//! by [`crate::embed`] (a BERT this size loads in a fraction of a second and
//! needs no engine process of its own: candle errors are values, and the
//! work runs on blocking threads, where a panic becomes an error answer).
//!
//! Models load on first use and unload by the same keep-alive rules as chat
//! models: the server's default, or what the request asks (`0`: unload when
//! the request ends; negative: never). A request whose client is gone stops
//! before its next batch.

use super::{KeepAlive, LoadedModel};
use crate::embed::{EmbedError, Embedder};
use crate::error::ApiError;
use crate::models::{InstalledModel, ModelKind, ModelStore};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};

/// One model slot: loaded at most once, kept while used or kept alive.
struct Slot {
    cell: Arc<OnceCell<Arc<Embedder>>>,
    last_used: Instant,
    keep_alive: KeepAlive,
}

impl Slot {
    fn in_use(&self) -> bool {
        self.cell.get().is_some_and(|m| Arc::strong_count(m) > 1)
    }

    fn expires(&self) -> Option<Instant> {
        match self.keep_alive {
            KeepAlive::For(d) => Some(self.last_used + d),
            KeepAlive::Forever => None,
        }
    }
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

/// Vectors for a request's texts.
#[derive(Debug, Clone)]
pub struct Vectors {
    /// The model's `name:tag`.
    pub model: String,
    /// One vector per text, in their order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read (after truncation).
    pub tokens: usize,
    /// Time spent loading the model for this request.
    pub load: Duration,
}

/// The embedding models of a store, loaded on demand.
pub struct Embeddings {
    store: ModelStore,
    keep_alive: KeepAlive,
    slots: Slots,
    reaper: std::sync::Once,
}

/// Sets its flag when dropped: the request's future went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Embeddings {
    /// The embedding models of `store`, kept `keep_alive` after their last
    /// use unless a request asks otherwise.
    pub fn new(store: ModelStore, keep_alive: KeepAlive) -> Self {
        Self {
            store,
            keep_alive,
            slots: Arc::default(),
            reaper: std::sync::Once::new(),
        }
    }

    /// The installed embedding model called `name`: 404 when there is
    /// none, 400 when it is a chat model.
    pub async fn installed(&self, name: &str) -> Result<InstalledModel, ApiError> {
        let store = self.store.clone();
        let key = name.to_string();
        let found = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .map_err(crate::error::task_failed)?
            .ok_or_else(|| ApiError::UnknownModel(name.to_string()))?;
        if found.manifest.kind != ModelKind::Embedding {
            return Err(ApiError::WrongKind(format!(
                "`{}` is a chat model and does not make embeddings: use an embedding model such as all-minilm",
                found.manifest.name
            )));
        }
        Ok(found)
    }

    /// Once, from within the runtime: unload models whose keep-alive ran
    /// out while no request used them.
    fn start_reaper(&self) {
        let slots = Arc::downgrade(&self.slots);
        self.reaper.call_once(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(slots) = slots.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    slots.lock().await.retain(|name, s| {
                        if s.in_use() {
                            s.last_used = now;
                            return true;
                        }
                        let expired = s.cell.initialized() && s.expires().is_some_and(|t| t <= now);
                        if expired {
                            tracing::info!(model = %name, "keep-alive over: unloading the embedding model");
                        }
                        !expired
                    });
                }
            });
        });
    }

    /// The loaded model for `m`, loading it if needed; and the time spent
    /// loading.
    async fn model(
        &self,
        m: &InstalledModel,
        keep_alive: Option<KeepAlive>,
    ) -> Result<(Arc<Embedder>, Duration), ApiError> {
        self.start_reaper();
        let name = m.manifest.name.clone();
        let cell = {
            let mut slots = self.slots.lock().await;
            let default = self.keep_alive;
            let slot = slots.entry(name.clone()).or_insert_with(|| Slot {
                cell: Arc::default(),
                last_used: Instant::now(),
                keep_alive: default,
            });
            slot.last_used = Instant::now();
            if let Some(k) = keep_alive {
                slot.keep_alive = k;
            }
            slot.cell.clone()
        };
        if let Some(model) = cell.get() {
            return Ok((model.clone(), Duration::ZERO));
        }
        let started = Instant::now();
        let dir = m.dir.clone();
        let model = cell
            .get_or_try_init(|| async move {
                let loaded = tokio::task::spawn_blocking(move || Embedder::load(&dir))
                    .await
                    .map_err(crate::error::task_failed)?;
                loaded.map(Arc::new).map_err(|e| {
                    tracing::error!(model = %name, error = %e, "embedding model failed to load");
                    ApiError::Unavailable(format!("model `{name}` could not be loaded: {e}"))
                })
            })
            .await?
            .clone();
        tracing::info!(model = %m.manifest.name, elapsed_ms = started.elapsed().as_millis() as u64, "embedding model loaded");
        Ok((model, started.elapsed()))
    }

    /// Load `m` (kept as `keep_alive` says), without embedding anything;
    /// answers the time spent loading.
    pub async fn load(
        &self,
        m: &InstalledModel,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Duration, ApiError> {
        Ok(self.model(m, keep_alive).await?.1)
    }

    /// The vectors of `texts` from model `m`; inputs past its limit are cut
    /// when `truncate`, else refused.
    pub async fn embed(
        &self,
        m: &InstalledModel,
        texts: Vec<String>,
        truncate: bool,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Vectors, ApiError> {
        let (model, load) = self.model(m, keep_alive).await?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let limit = model.max_tokens;
        let worker = model.clone();
        let done =
            tokio::task::spawn_blocking(move || worker.embed_until(&texts, truncate, &cancel))
                .await
                .map_err(crate::error::task_failed)?;
        drop(model);
        self.touch(&m.manifest.name).await;
        let embedded = done.map_err(|e| match e {
            EmbedError::TooLong { index, tokens, .. } => ApiError::Invalid {
                code: "context_overflow",
                message: format!(
                    "input {index} has {tokens} tokens, more than `{}` reads ({limit}): send `truncate: true` to cut it",
                    m.manifest.name
                ),
            },
            e => {
                tracing::error!(model = %m.manifest.name, error = %e, "embedding failed");
                ApiError::Engine(e.to_string())
            }
        })?;
        Ok(Vectors {
            model: m.manifest.name.clone(),
            vectors: embedded.vectors,
            tokens: embedded.tokens,
            load,
        })
    }

    /// The keep-alive runs from the end of the last request.
    async fn touch(&self, name: &str) {
        if let Some(slot) = self.slots.lock().await.get_mut(name) {
            slot.last_used = Instant::now();
        }
    }

    /// The embedding models held in memory now.
    pub async fn loaded_models(&self) -> Vec<LoadedModel> {
        let slots = self.slots.lock().await;
        let now = Instant::now();
        let mut loaded: Vec<LoadedModel> = slots
            .iter()
            .filter(|(_, s)| s.cell.initialized())
            .map(|(name, s)| LoadedModel {
                name: name.clone(),
                expires_at: s
                    .expires()
                    .map(|t| std::time::SystemTime::now() + t.saturating_duration_since(now)),
            })
            .collect();
        loaded.sort_by(|a, b| a.name.cmp(&b.name));
        loaded
    }

    /// Free `name`'s memory (requests running keep their handle).
    pub async fn unload(&self, name: &str) {
        if let Ok(name) = crate::models::normalize_name(name) {
            self.slots.lock().await.remove(&name);
        }
    }
}

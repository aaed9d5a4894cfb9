//! Upstream engines on other machines (vLLM, llama.cpp's server, Ollama,
//! another kinko), behind the same seam as the embedded engine. Each
//! upstream has a prefix (`lab`) and one or more replicas; its models are
//! listed as `lab/<model>`. A request goes to the replica serving the model
//! with the fewest requests open; a replica that fails before the first
//! token is taken out of service and the request goes to the next one.
//! Health checks (the model listing, which also refreshes it) bring a
//! replica back, with a backoff while it keeps failing. Dropping the token
//! stream drops the HTTP request, and the upstream stops generating.

use super::{
    ChatEngine, EngineError, EngineEvent, EngineRequest, ModelInfo, TokenStream, UpstreamFailure,
};
use crate::metrics::{Metrics, UpstreamLabel};
use app::api::{ChatMessage, ChatOptions, FinishReason, Usage};
use async_trait::async_trait;
use futures::StreamExt;
use kinko_parse::upstream::{
    self, key_variable, Lines, Piece, UpstreamKind, UpstreamModel, UpstreamSpec,
};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the upstreams are reached and checked.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// The longest wait to connect to a replica.
    pub connect_timeout: Duration,
    /// Time between two checks of a replica in service.
    pub check_interval: Duration,
    /// The longest wait between two checks of a replica out of service
    /// (the wait doubles from one second up to this).
    pub max_backoff: Duration,
    /// The context window of a model whose upstream reports none.
    pub context_length: usize,
    /// When not empty, only the upstream models these name are offered
    /// (`prefix/model`; a trailing `*` matches any end, so `lab/*` is all
    /// of `lab`).
    pub allow: Vec<String>,
}

/// A replica's state, as its last check or request left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Not checked yet.
    Unknown,
    /// In service.
    Up,
    /// Out of service: it could not be reached or failed.
    Down,
    /// It refused kinko's key.
    Refused,
}

impl ReplicaState {
    /// The name `/health` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Unknown => "unknown",
            ReplicaState::Up => "up",
            ReplicaState::Down => "down",
            ReplicaState::Refused => "refused_key",
        }
    }
}

#[derive(Debug)]
struct Health {
    state: ReplicaState,
    failures: u32,
    models: Vec<UpstreamModel>,
    last_error: Option<String>,
    checked_at: Option<SystemTime>,
    next_check: Instant,
}

/// One replica of an upstream.
pub struct Replica {
    spec: UpstreamSpec,
    label: UpstreamLabel,
    key: Option<HeaderValue>,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
    wake: Notify,
}

impl Replica {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serves(&self, model: &str) -> bool {
        self.health().models.iter().any(|m| m.name == model)
    }

    fn who(&self) -> String {
        format!("upstream `{}` ({})", self.spec.prefix, self.label.replica)
    }

    /// Take it out of service after `error`; its next check comes after the
    /// backoff.
    fn failed(&self, state: ReplicaState, error: String, metrics: &Metrics, max_backoff: Duration) {
        let mut h = self.health();
        let was = h.state;
        h.state = state;
        h.failures = h.failures.saturating_add(1);
        h.next_check = Instant::now() + backoff(h.failures, max_backoff);
        if was != state || h.last_error.as_deref() != Some(error.as_str()) {
            let who = self.who();
            let why = error
                .strip_prefix(who.as_str())
                .unwrap_or(&error)
                .trim_start();
            tracing::warn!(
                upstream = %self.spec.prefix,
                replica = %self.label.replica,
                "{who} is out of service: {why}"
            );
        }
        h.last_error = Some(error);
        drop(h);
        metrics.upstream_up(&self.label, false);
        self.wake.notify_one();
    }

    /// Back in service (an answer or a check went through).
    fn succeeded(&self, metrics: &Metrics) {
        let mut h = self.health();
        if h.state != ReplicaState::Up && !h.models.is_empty() {
            tracing::info!(upstream = %self.spec.prefix, replica = %self.label.replica, "{} is in service", self.who());
            h.state = ReplicaState::Up;
            h.failures = 0;
            metrics.upstream_up(&self.label, true);
        }
    }
}

/// The wait before checking a failing replica again: 1 s, 2 s, 4 s, …, at
/// most `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(max.max(Duration::from_secs(1)))
}

struct Group {
    prefix: String,
    replicas: Vec<Arc<Replica>>,
}

struct Inner {
    groups: Vec<Group>,
    client: reqwest::Client,
    settings: RemoteSettings,
    metrics: Metrics,
    turn: AtomicUsize,
}

/// The upstream engines; cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

/// Counts a request as open at a replica until dropped.
struct Open {
    replica: Arc<Replica>,
    metrics: Metrics,
}

impl Open {
    fn new(replica: Arc<Replica>, metrics: &Metrics) -> Self {
        replica.in_flight.fetch_add(1, Ordering::SeqCst);
        metrics.upstream_in_flight(&replica.label, 1);
        metrics.upstream_request(&replica.label);
        Self {
            replica,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.metrics.upstream_in_flight(&self.replica.label, -1);
    }
}

/// Why one try at a replica did not give an answer.
enum Attempt {
    /// Try the next replica (this one is out of service unless `keep`).
    Next {
        error: String,
        kind: &'static str,
        keep: bool,
    },
    /// Give up: the request itself was refused.
    Stop(EngineError),
}

/// What `/health` shows of one replica.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaReport {
    /// The upstream's prefix.
    pub upstream: String,
    /// Its API.
    pub kind: &'static str,
    /// `up`, `down`, `refused_key` or `unknown`.
    pub state: &'static str,
    /// Models it serves (by its last listing).
    pub models: usize,
    /// Requests open there now.
    pub in_flight: usize,
    /// Its URL (shown to authorized callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its last failure (shown to authorized callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since its last check (shown to authorized callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_secs_ago: Option<f64>,
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or(rest)
        .to_string()
}

/// A rough count of the tokens `messages` take, on the high side (an
/// upstream's tokenizer is not here): a token per three ASCII bytes, one
/// per other character, four per message for the template, and 64 for
/// what a template adds on its own (SmolLM2's adds a 20-token system
/// prompt when there is none).
pub fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| {
            let (ascii, other) = m.content.chars().fold((0usize, 0usize), |(a, o), c| {
                if c.is_ascii() {
                    (a + 1, o)
                } else {
                    (a, o + 1)
                }
            });
            4 + ascii.div_ceil(3) + other
        })
        .sum::<usize>()
        + 64
}

impl Upstreams {
    /// Upstreams for `specs` (replicas share a prefix); each key comes from
    /// `KINKO_UPSTREAM_KEY_<PREFIX>` through `key_of`. Nothing is contacted
    /// until [`Upstreams::start`].
    pub fn new(
        specs: Vec<UpstreamSpec>,
        key_of: impl Fn(&str) -> Option<String>,
        settings: RemoteSettings,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let mut groups: Vec<Group> = Vec::new();
        for spec in specs {
            let key = match key_of(&key_variable(&spec.prefix)) {
                Some(k) if !k.trim().is_empty() => {
                    let mut v =
                        HeaderValue::from_str(&format!("Bearer {}", k.trim())).map_err(|_| {
                            anyhow::anyhow!(
                                "{} holds characters a header cannot carry",
                                key_variable(&spec.prefix)
                            )
                        })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                _ => None,
            };
            let label = UpstreamLabel {
                upstream: spec.prefix.clone(),
                replica: host_of(&spec.url),
            };
            metrics.upstream_known(&label);
            let replica = Arc::new(Replica {
                label,
                key,
                in_flight: AtomicUsize::new(0),
                health: Mutex::new(Health {
                    state: ReplicaState::Unknown,
                    failures: 0,
                    models: Vec::new(),
                    last_error: None,
                    checked_at: None,
                    next_check: Instant::now(),
                }),
                wake: Notify::new(),
                spec,
            });
            match groups.iter_mut().find(|g| g.prefix == replica.spec.prefix) {
                Some(g) => g.replicas.push(replica),
                None => groups.push(Group {
                    prefix: replica.spec.prefix.clone(),
                    replicas: vec![replica],
                }),
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // Below the 5 s keep-alive of uvicorn (llama-cpp-python's and
            // vLLM's servers) and the 10 s of kinko's: an idle connection
            // is let go before the upstream closes it under a request.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            .user_agent(concat!("kinko/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                groups,
                client,
                settings,
                metrics,
                turn: AtomicUsize::new(0),
            }),
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inner.groups.is_empty()
    }

    /// Whether `name` names a model of an upstream (`prefix/…`).
    pub fn owns(&self, name: &str) -> bool {
        self.group_of(name).is_some()
    }

    fn group_of<'a>(&self, name: &'a str) -> Option<(&Group, &'a str)> {
        let (prefix, model) = name.split_once('/')?;
        self.inner
            .groups
            .iter()
            .find(|g| g.prefix == prefix)
            .map(|g| (g, model))
    }

    fn allowed(&self, prefix: &str, model: &str) -> bool {
        let allow = &self.inner.settings.allow;
        let name = format!("{prefix}/{model}");
        allow.is_empty()
            || allow.iter().any(|p| match p.strip_suffix('*') {
                Some(start) => name.starts_with(start),
                None => *p == name,
            })
    }

    /// Check every replica once, together, then keep checking each in the
    /// background (the first round is awaited, so the models are listed
    /// when the server starts).
    pub async fn start(&self) {
        let replicas: Vec<Arc<Replica>> = self
            .inner
            .groups
            .iter()
            .flat_map(|g| g.replicas.iter().cloned())
            .collect();
        futures::future::join_all(replicas.iter().map(|r| self.check(r))).await;
        for replica in replicas {
            let this = self.clone();
            tokio::spawn(async move { this.keep_checking(replica).await });
        }
    }

    async fn keep_checking(&self, replica: Arc<Replica>) {
        loop {
            let next = replica.health().next_check;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => self.check(&replica).await,
                // A request marked it down: wait for the new backoff.
                _ = replica.wake.notified() => {}
            }
        }
    }

    fn request(
        &self,
        replica: &Replica,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .inner
            .client
            .request(method, format!("{}{path}", replica.spec.url));
        if let Some(key) = &replica.key {
            req = req.header(AUTHORIZATION, key.clone());
        }
        req
    }

    /// Read a replica's model listing: in service with its models, or out.
    async fn check(&self, replica: &Replica) {
        let settings = &self.inner.settings;
        let result = self.list(replica).await;
        let checked = SystemTime::now();
        match result {
            Ok(models) => {
                let was = {
                    let mut h = replica.health();
                    let mut models = models;
                    // Context windows already asked for are kept.
                    for m in &mut models {
                        if m.context_length.is_none() {
                            m.context_length = h
                                .models
                                .iter()
                                .find(|old| old.name == m.name)
                                .and_then(|old| old.context_length);
                        }
                    }
                    let was = h.state;
                    h.models = models;
                    h.state = ReplicaState::Up;
                    h.failures = 0;
                    h.last_error = None;
                    h.checked_at = Some(checked);
                    h.next_check = Instant::now() + settings.check_interval;
                    was
                };
                if was != ReplicaState::Up {
                    tracing::info!(
                        upstream = %replica.spec.prefix,
                        replica = %replica.label.replica,
                        models = replica.health().models.len(),
                        "{} is in service",
                        replica.who()
                    );
                }
                self.inner.metrics.upstream_up(&replica.label, true);
                if replica.spec.kind == UpstreamKind::Ollama {
                    self.ask_context_lengths(replica).await;
                }
            }
            Err((state, error)) => {
                replica.health().checked_at = Some(checked);
                replica.failed(state, error, &self.inner.metrics, settings.max_backoff);
            }
        }
    }

    async fn list(&self, replica: &Replica) -> Result<Vec<UpstreamModel>, (ReplicaState, String)> {
        let path = match replica.spec.kind {
            UpstreamKind::OpenAi => "/models",
            UpstreamKind::Ollama => "/api/tags",
        };
        let timeout = self.inner.settings.connect_timeout + Duration::from_secs(5);
        let response = send_once_more(|| {
            self.request(replica, reqwest::Method::GET, path)
                .timeout(timeout)
                .send()
        })
        .await
        .map_err(|e| (ReplicaState::Down, reach_error(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| (ReplicaState::Down, reach_error(&e)))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err((ReplicaState::Refused, key_refused(replica, status, &body)));
        }
        if !status.is_success() {
            return Err((
                ReplicaState::Down,
                format!(
                    "its model list answered HTTP {}: {}",
                    status.as_u16(),
                    upstream::error_message(&body)
                ),
            ));
        }
        upstream::parse_models(replica.spec.kind, &body).map_err(|e| (ReplicaState::Down, e))
    }

    /// Ollama's listing has no context windows: ask `/api/show` for those
    /// not known yet (at most 64 per check).
    async fn ask_context_lengths(&self, replica: &Replica) {
        let unknown: Vec<String> = replica
            .health()
            .models
            .iter()
            .filter(|m| m.context_length.is_none())
            .take(64)
            .map(|m| m.name.clone())
            .collect();
        for name in unknown {
            let answer = self
                .request(replica, reqwest::Method::POST, "/api/show")
                .timeout(self.inner.settings.connect_timeout + Duration::from_secs(5))
                .json(&json!({ "model": name }))
                .send()
                .await;
            let Ok(answer) = answer else { return };
            if !answer.status().is_success() {
                continue;
            }
            let Ok(body) = answer.bytes().await else {
                return;
            };
            if let Some(n) = upstream::parse_show_context(&body) {
                if let Some(m) = replica.health().models.iter_mut().find(|m| m.name == name) {
                    m.context_length = Some(n);
                }
            }
        }
    }

    /// The models of every upstream, as `prefix/model`.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut out: Vec<ModelInfo> = Vec::new();
        for group in &self.inner.groups {
            for replica in &group.replicas {
                for m in replica.health().models.iter() {
                    if !self.allowed(&group.prefix, &m.name) {
                        continue;
                    }
                    let name = format!("{}/{}", group.prefix, m.name);
                    if out.iter().any(|o| o.name == name) {
                        continue;
                    }
                    out.push(ModelInfo {
                        name,
                        size: m.size,
                        quantization: m.quantization.clone(),
                        context_length: m
                            .context_length
                            .unwrap_or(self.inner.settings.context_length),
                        architecture: m.family.clone(),
                        preset: Default::default(),
                        upstream: Some(group.prefix.clone()),
                        // What the upstream's model can do is the
                        // upstream's to say; kinko relays text answers.
                        capabilities: vec![app::api::Capability::Completion],
                    });
                }
            }
        }
        out
    }

    /// The model `name` names, or why none: the name as listed (a bare
    /// `prefix/model` of an Ollama-kind upstream gets `:latest`).
    pub fn model(&self, name: &str) -> Result<ModelInfo, EngineError> {
        let Some((group, model)) = self.group_of(name) else {
            return Err(EngineError::UnknownModel(name.to_string()));
        };
        let models = self.models();
        let latest = (!model.contains(':')).then(|| format!("{name}:latest"));
        if let Some(found) = models
            .iter()
            .find(|m| m.name == name)
            .or_else(|| models.iter().find(|m| Some(&m.name) == latest.as_ref()))
        {
            return Ok(found.clone());
        }
        // Say why, where the upstream is the reason.
        let states: Vec<(ReplicaState, Option<String>, usize)> = group
            .replicas
            .iter()
            .map(|r| {
                let h = r.health();
                (h.state, h.last_error.clone(), h.models.len())
            })
            .collect();
        if let Some((_, Some(error), _)) = states.iter().find(|s| s.0 == ReplicaState::Refused) {
            return Err(EngineError::Upstream {
                kind: UpstreamFailure::Refused,
                message: error.clone(),
            });
        }
        if states.iter().all(|s| s.2 == 0 && s.0 != ReplicaState::Up) {
            let why = states
                .iter()
                .find_map(|s| s.1.clone())
                .unwrap_or_else(|| "it has not answered yet".into());
            return Err(EngineError::Upstream {
                kind: UpstreamFailure::Unreachable,
                message: format!("upstream `{}` cannot be reached: {why}", group.prefix),
            });
        }
        Err(EngineError::UnknownModel(name.to_string()))
    }

    /// The replica to try next for `model`: among those serving it and not
    /// tried yet, one in service with the fewest requests open (ties taken
    /// in turn); when none is in service, one out of service whose retry
    /// time has come.
    fn pick(&self, group: &Group, model: &str, tried: &[usize]) -> Option<(usize, Arc<Replica>)> {
        let n = group.replicas.len();
        let start = self.inner.turn.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let candidates = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| !tried.contains(i))
            .map(|i| (i, &group.replicas[i]))
            .filter(|(_, r)| r.serves(model));
        let mut best: Option<(usize, &Arc<Replica>, usize)> = None;
        let mut fallback: Option<(usize, &Arc<Replica>)> = None;
        let now = Instant::now();
        for (i, r) in candidates {
            let (state, retry_at) = {
                let h = r.health();
                (h.state, h.next_check)
            };
            match state {
                ReplicaState::Up | ReplicaState::Unknown => {
                    let open = r.in_flight.load(Ordering::SeqCst);
                    if best.is_none_or(|(_, _, b)| open < b) {
                        best = Some((i, r, open));
                    }
                }
                ReplicaState::Down | ReplicaState::Refused => {
                    if retry_at <= now && fallback.is_none() {
                        fallback = Some((i, r));
                    }
                }
            }
        }
        best.map(|(i, r, _)| (i, r.clone()))
            .or_else(|| fallback.map(|(i, r)| (i, r.clone())))
    }

    /// Start one answer: the events of the first replica that gives a
    /// token (or ends its answer).
    pub fn answer(&self, req: EngineRequest) -> Result<TokenStream, EngineError> {
        let info = self.model(&req.model)?;
        let Some((group, model)) = self.group_of(&info.name) else {
            return Err(EngineError::UnknownModel(req.model));
        };
        let prefix = group.prefix.clone();
        let model = model.to_string();
        let this = self.clone();
        let events = async_stream::stream! {
            let Some((group, _)) = this.group_of(&info.name) else {
                yield Err(EngineError::UnknownModel(info.name.clone()));
                return;
            };
            let settings = &this.inner.settings;
            let metrics = &this.inner.metrics;
            let mut tried: Vec<usize> = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            loop {
                let Some((index, replica)) = this.pick(group, &model, &tried) else {
                    let why = if errors.is_empty() {
                        "no replica serving it is in service".to_string()
                    } else {
                        errors.join("; ")
                    };
                    yield Err(EngineError::Upstream {
                        kind: UpstreamFailure::Unreachable,
                        message: format!("upstream `{prefix}` could not answer: {why}"),
                    });
                    return;
                };
                tried.push(index);
                let _open = Open::new(replica.clone(), metrics);
                let sent = Instant::now();
                let body = match this.send(&replica, &model, &req, &info).await {
                    Ok(body) => body,
                    Err(Attempt::Stop(e)) => {
                        yield Err(e);
                        return;
                    }
                    Err(Attempt::Next { error, kind, keep }) => {
                        metrics.upstream_error(&replica.label, kind);
                        if !keep {
                            replica.failed(ReplicaState::Down, error.clone(), metrics, settings.max_backoff);
                        }
                        errors.push(format!("{}: {error}", replica.label.replica));
                        continue;
                    }
                };
                let mut pieces = pieces(replica.spec.kind, body);
                let mut first = true;
                let mut usage = kinko_parse::upstream::UpstreamUsage::default();
                let mut timings = None;
                let mut finish: Option<String> = None;
                let mut pieces_sent = 0usize;
                let ended = loop {
                    match pieces.next().await {
                        Some(Ok(piece)) => {
                            if let Some(u) = piece.usage {
                                usage = u;
                            }
                            if piece.timings.is_some() {
                                timings = piece.timings;
                            }
                            if piece.finish.is_some() {
                                finish = piece.finish.clone();
                            }
                            if !piece.text.is_empty() {
                                // Each piece holds a token at least: a piece
                                // past `max_tokens` is an upstream that
                                // ignores it. The answer ends here.
                                if pieces_sent >= req.sampling.max_tokens {
                                    finish = Some("length".into());
                                    usage.completion_tokens = Some(pieces_sent);
                                    break Ok(());
                                }
                                if first {
                                    first = false;
                                    metrics.upstream_first_token(&replica.label, sent.elapsed().as_secs_f64());
                                    replica.succeeded(metrics);
                                }
                                yield Ok(EngineEvent::Delta(piece.text));
                                pieces_sent += 1;
                            }
                            if piece.end {
                                break Ok(());
                            }
                        }
                        Some(Err(error)) => break Err(error),
                        // OpenAI streams end with `[DONE]`; a body that ends
                        // after its finish reason is whole too.
                        None if finish.is_some() => break Ok(()),
                        None => break Err("the answer broke off before its end".to_string()),
                    }
                };
                match ended {
                    Ok(()) => {
                        replica.succeeded(metrics);
                        if let Some(t) = timings {
                            yield Ok(EngineEvent::Timings(t));
                        }
                        yield Ok(EngineEvent::Done {
                            reason: match finish.as_deref() {
                                Some("length") => FinishReason::Length,
                                _ => FinishReason::Stop,
                            },
                            usage: Usage {
                                prompt_tokens: usage.prompt_tokens.unwrap_or(req.prompt_tokens),
                                completion_tokens: usage.completion_tokens.unwrap_or(0),
                            },
                        });
                        return;
                    }
                    Err(error) if first => {
                        // Nothing was shown yet: the next replica answers.
                        metrics.upstream_error(&replica.label, "stream");
                        replica.failed(ReplicaState::Down, error.clone(), metrics, settings.max_backoff);
                        errors.push(format!("{}: {error}", replica.label.replica));
                    }
                    Err(error) => {
                        metrics.upstream_error(&replica.label, "midstream");
                        replica.failed(ReplicaState::Down, error.clone(), metrics, settings.max_backoff);
                        yield Err(EngineError::Upstream {
                            kind: UpstreamFailure::Failed,
                            message: format!("{} failed mid-answer: {error}", replica.who()),
                        });
                        return;
                    }
                }
            }
        };
        Ok(Box::pin(events))
    }

    /// Send the request to one replica; its body streams the answer.
    async fn send(
        &self,
        replica: &Replica,
        model: &str,
        req: &EngineRequest,
        info: &ModelInfo,
    ) -> Result<reqwest::Response, Attempt> {
        let (path, body) = match replica.spec.kind {
            UpstreamKind::OpenAi => ("/chat/completions", openai_body(model, req)),
            UpstreamKind::Ollama => ("/api/chat", ollama_body(model, req, info.context_length)),
        };
        let response = send_once_more(|| {
            self.request(replica, reqwest::Method::POST, path)
                .json(&body)
                .send()
        })
        .await
        .map_err(|e| Attempt::Next {
            error: reach_error(&e),
            kind: "connect",
            keep: false,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = upstream::error_message(&body);
        match status.as_u16() {
            401 | 403 => {
                let error = key_refused(replica, status, &body);
                self.inner.metrics.upstream_error(&replica.label, "key");
                replica.failed(
                    ReplicaState::Refused,
                    error.clone(),
                    &self.inner.metrics,
                    self.inner.settings.max_backoff,
                );
                Err(Attempt::Stop(EngineError::Upstream {
                    kind: UpstreamFailure::Refused,
                    message: error,
                }))
            }
            // Its listing was out of date, or it is busy, or its own
            // engine failed on this one request: another replica may
            // answer, and this one stays in service.
            404 | 429 | 500 => Err(Attempt::Next {
                error: format!("HTTP {}: {message}", status.as_u16()),
                kind: "status",
                keep: true,
            }),
            // Down or overloaded behind a proxy.
            502..=504 => Err(Attempt::Next {
                error: format!("HTTP {}: {message}", status.as_u16()),
                kind: "status",
                keep: false,
            }),
            code => {
                self.inner.metrics.upstream_error(&replica.label, "status");
                Err(Attempt::Stop(EngineError::Upstream {
                    kind: UpstreamFailure::Failed,
                    message: format!(
                        "{} refused the request (HTTP {code}): {message}",
                        replica.who()
                    ),
                }))
            }
        }
    }

    /// What `/health` shows, with URLs and errors when `detailed`.
    pub fn report(&self, detailed: bool) -> Vec<ReplicaReport> {
        self.inner
            .groups
            .iter()
            .flat_map(|g| g.replicas.iter())
            .map(|r| {
                let h = r.health();
                ReplicaReport {
                    upstream: r.spec.prefix.clone(),
                    kind: r.spec.kind.as_str(),
                    state: h.state.as_str(),
                    models: h.models.len(),
                    in_flight: r.in_flight.load(Ordering::SeqCst),
                    url: detailed.then(|| r.spec.url.clone()),
                    last_error: h.last_error.clone().filter(|_| detailed),
                    checked_secs_ago: h
                        .checked_at
                        .filter(|_| detailed)
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                }
            })
            .collect()
    }
}

/// Send, and once more when the request failed on a connection that was
/// already open (the upstream closed it as it was reused: nothing was
/// answered); a failure to connect or a timeout is final.
async fn send_once_more<F, Fut>(send: F) -> Result<reqwest::Response, reqwest::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    match send().await {
        Err(e) if !e.is_connect() && !e.is_timeout() && e.is_request() => send().await,
        other => other,
    }
}

fn reach_error(e: &reqwest::Error) -> String {
    // The chain without the URL (it is in the log line's fields already).
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if let Some(last) = last {
        text.push_str(": ");
        text.push_str(&upstream::clean_message(&last));
    }
    text
}

fn key_refused(replica: &Replica, status: reqwest::StatusCode, body: &[u8]) -> String {
    let variable = key_variable(&replica.spec.prefix);
    let set = if replica.key.is_some() {
        format!("check {variable}")
    } else {
        format!("set {variable} to the key it expects")
    };
    format!(
        "{} refused kinko's key (HTTP {}: {}); {set}",
        replica.who(),
        status.as_u16(),
        upstream::error_message(body)
    )
}

/// The streamed body as pieces of the answer.
fn pieces(
    kind: UpstreamKind,
    response: reqwest::Response,
) -> futures::stream::BoxStream<'static, Result<Piece, String>> {
    let mut bytes = response.bytes_stream();
    Box::pin(async_stream::stream! {
        let mut lines = Lines::default();
        let read = |line: &str| -> Option<Result<Piece, String>> {
            match kind {
                UpstreamKind::OpenAi => upstream::sse_data(line).map(upstream::parse_openai_event),
                UpstreamKind::Ollama => {
                    (!line.trim().is_empty()).then(|| upstream::parse_ollama_line(line.as_bytes()))
                }
            }
        };
        loop {
            match bytes.next().await {
                Some(Ok(chunk)) => match lines.push(&chunk) {
                    Ok(done) => {
                        for line in done {
                            if let Some(piece) = read(&line) {
                                let end = matches!(&piece, Ok(p) if p.end) || piece.is_err();
                                yield piece;
                                if end {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                },
                Some(Err(e)) => {
                    yield Err(reach_error(&e));
                    return;
                }
                None => {
                    if let Some(piece) = lines.finish().as_deref().and_then(read) {
                        yield piece;
                    }
                    return;
                }
            }
        }
    })
}

/// The options a request set itself, in Ollama's names (the upstream's own
/// defaults apply to the rest).
fn own_options(o: &ChatOptions) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(t) = o.temperature {
        m.insert("temperature".into(), json!(t));
    }
    if let Some(p) = o.top_p {
        m.insert("top_p".into(), json!(p));
    }
    if let Some(k) = o.top_k {
        m.insert("top_k".into(), json!(k));
    }
    if let Some(r) = o.repeat_penalty {
        m.insert("repeat_penalty".into(), json!(r));
    }
    m
}

/// An OpenAI chat completion request: the trimmed conversation, the
/// answer's bound and stop strings, and what the request set itself
/// (`top_k` and `repeat_penalty` as llama.cpp's server and vLLM read them).
pub fn openai_body(model: &str, req: &EngineRequest) -> Value {
    let mut body = own_options(&req.explicit);
    if let Some(r) = body.remove("repeat_penalty") {
        body.insert("repeat_penalty".into(), r.clone());
        body.insert("repetition_penalty".into(), r);
    }
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), messages(&req.messages));
    body.insert("max_tokens".into(), json!(req.sampling.max_tokens));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if !req.sampling.stop.is_empty() {
        body.insert("stop".into(), json!(req.sampling.stop));
    }
    match &req.sampling.format {
        Some(app::api::AnswerFormat::Json) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(app::api::AnswerFormat::JsonSchema { schema }) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}),
            );
        }
        None => {}
    }
    Value::Object(body)
}

/// An Ollama chat request: the trimmed conversation, the context window
/// kinko fitted it to (`num_ctx`), the answer's bound, stop strings, and
/// what the request set itself.
pub fn ollama_body(model: &str, req: &EngineRequest, context_length: usize) -> Value {
    let mut options = own_options(&req.explicit);
    options.insert("num_predict".into(), json!(req.sampling.max_tokens));
    options.insert(
        "num_ctx".into(),
        json!(req
            .explicit
            .num_ctx
            .unwrap_or(context_length)
            .min(context_length)),
    );
    if !req.sampling.stop.is_empty() {
        options.insert("stop".into(), json!(req.sampling.stop));
    }
    let mut body = json!({
        "model": model,
        "messages": messages(&req.messages),
        "stream": true,
        "options": options,
    });
    match &req.sampling.format {
        Some(app::api::AnswerFormat::Json) => body["format"] = json!("json"),
        Some(app::api::AnswerFormat::JsonSchema { schema }) => body["format"] = schema.clone(),
        None => {}
    }
    body
}

fn messages(messages: &[ChatMessage]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect(),
    )
}

/// The embedded (or fake) engine, with the upstreams beside it: names
/// with an upstream's prefix go there, every other name stays here.
pub struct WithUpstreams {
    local: Arc<dyn ChatEngine>,
    upstreams: Upstreams,
}

impl WithUpstreams {
    /// `local` for local names, `upstreams` for `prefix/…` names.
    pub fn new(local: Arc<dyn ChatEngine>, upstreams: Upstreams) -> Self {
        Self { local, upstreams }
    }
}

#[async_trait]
impl ChatEngine for WithUpstreams {
    async fn ensure_loaded(
        &self,
        model: &str,
        keep_alive: Option<super::KeepAlive>,
    ) -> Result<Duration, EngineError> {
        if self.upstreams.owns(model) {
            return Ok(Duration::ZERO);
        }
        self.local.ensure_loaded(model, keep_alive).await
    }

    async fn loaded_models(&self) -> Vec<super::LoadedModel> {
        self.local.loaded_models().await
    }

    async fn unload(&self, model: &str) {
        if !self.upstreams.owns(model) {
            self.local.unload(model).await;
        }
    }

    async fn prompt_cost(&self, model: &str) -> Option<app::api::PromptCost> {
        if self.upstreams.owns(model) {
            return None;
        }
        self.local.prompt_cost(model).await
    }

    async fn list_models(&self) -> Vec<ModelInfo> {
        let mut all = self.local.list_models().await;
        all.extend(self.upstreams.models());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    async fn model(&self, name: &str) -> Result<ModelInfo, EngineError> {
        if self.upstreams.owns(name) {
            return self.upstreams.model(name);
        }
        self.local.model(name).await
    }

    async fn count_tokens(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<usize, EngineError> {
        if self.upstreams.owns(model) {
            return Ok(estimate_tokens(messages));
        }
        self.local.count_tokens(model, messages).await
    }

    async fn stream(&self, req: EngineRequest) -> Result<TokenStream, EngineError> {
        if self.upstreams.owns(&req.model) {
            return self.upstreams.answer(req);
        }
        self.local.stream(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::api::Role;

    fn settings(allow: &[&str]) -> RemoteSettings {
        RemoteSettings {
            connect_timeout: Duration::from_millis(200),
            check_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            context_length: 2048,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn upstreams(specs: &[&str], allow: &[&str]) -> Upstreams {
        let specs = specs
            .iter()
            .map(|s| upstream::parse_spec(s).unwrap())
            .collect();
        Upstreams::new(specs, |_| None, settings(allow), Metrics::new()).unwrap()
    }

    fn serve(u: &Upstreams, replica: usize, models: &[&str]) {
        let r = &u.inner.groups[0].replicas[replica];
        let mut h = r.health();
        h.state = ReplicaState::Up;
        h.models = models
            .iter()
            .map(|m| UpstreamModel {
                name: m.to_string(),
                ..UpstreamModel::default()
            })
            .collect();
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let max = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(u32::MAX, max).as_secs(), 30);
    }

    #[test]
    fn names_carry_the_prefix_and_the_allow_list_filters() {
        let u = upstreams(
            &["lab=openai:http://a:1/v1", "gpu=ollama:http://b:2"],
            &["gpu/llama*", "gpu/qwen:7b", "lab/*"],
        );
        assert!(u.owns("lab/anything"));
        assert!(!u.owns("other/x"));
        assert!(!u.owns("smollm2:135m"));
        serve(&u, 0, &["m1", "m2"]);
        let r = &u.inner.groups[1].replicas[0];
        r.health().state = ReplicaState::Up;
        r.health().models = ["llama3:8b", "qwen:7b", "qwen:14b"]
            .iter()
            .map(|m| UpstreamModel {
                name: m.to_string(),
                context_length: Some(8192),
                ..UpstreamModel::default()
            })
            .collect();
        let names: Vec<String> = u.models().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["lab/m1", "lab/m2", "gpu/llama3:8b", "gpu/qwen:7b"]);
        // Without `lab/*`, nothing of lab's.
        let strict = upstreams(&["lab=openai:http://a:1/v1"], &["gpu/*"]);
        serve(&strict, 0, &["m1"]);
        assert!(strict.models().is_empty());
        let m = u.model("gpu/llama3:8b").unwrap();
        assert_eq!(m.context_length, 8192);
        assert_eq!(m.upstream.as_deref(), Some("gpu"));
        assert_eq!(u.model("lab/m1").unwrap().context_length, 2048);
        assert!(matches!(
            u.model("gpu/qwen:14b"),
            Err(EngineError::UnknownModel(_))
        ));
    }

    #[test]
    fn a_bare_name_finds_latest_and_an_unreachable_upstream_says_so() {
        let u = upstreams(&["lab=ollama:http://a:1"], &[]);
        match u.model("lab/m") {
            Err(EngineError::Upstream { kind, message }) => {
                assert_eq!(kind, UpstreamFailure::Unreachable);
                assert!(
                    message.contains("upstream `lab` cannot be reached"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        serve(&u, 0, &["m:latest"]);
        assert_eq!(u.model("lab/m").unwrap().name, "lab/m:latest");
        let r = &u.inner.groups[0].replicas[0];
        r.health().state = ReplicaState::Refused;
        r.health().last_error = Some("refused kinko's key".into());
        r.health().models.clear();
        assert!(matches!(
            u.model("lab/m"),
            Err(EngineError::Upstream {
                kind: UpstreamFailure::Refused,
                ..
            })
        ));
    }

    #[test]
    fn the_least_busy_replica_in_service_is_picked() {
        let u = upstreams(
            &[
                "lab=openai:http://a:1/v1",
                "lab=openai:http://b:1/v1",
                "lab=openai:http://c:1/v1",
            ],
            &[],
        );
        for i in 0..3 {
            serve(&u, i, &["m"]);
        }
        let g = &u.inner.groups[0];
        g.replicas[0].in_flight.store(2, Ordering::SeqCst);
        g.replicas[1].in_flight.store(1, Ordering::SeqCst);
        g.replicas[2].in_flight.store(3, Ordering::SeqCst);
        assert_eq!(u.pick(g, "m", &[]).unwrap().0, 1);
        // Tried already: the next least busy.
        assert_eq!(u.pick(g, "m", &[1]).unwrap().0, 0);
        // Out of service: skipped while a replica is in service.
        g.replicas[1].health().state = ReplicaState::Down;
        g.replicas[1].health().next_check = Instant::now();
        assert_eq!(u.pick(g, "m", &[]).unwrap().0, 0);
        // Ties are taken in turn.
        for r in &g.replicas {
            r.in_flight.store(0, Ordering::SeqCst);
            r.health().state = ReplicaState::Up;
        }
        let picked: std::collections::HashSet<usize> =
            (0..6).map(|_| u.pick(g, "m", &[]).unwrap().0).collect();
        assert_eq!(picked.len(), 3);
        // A model only one replica serves goes there.
        serve(&u, 2, &["m", "only-c"]);
        assert_eq!(u.pick(g, "only-c", &[]).unwrap().0, 2);
        assert!(u.pick(g, "only-c", &[2]).is_none());
        // Every replica out of service: one whose retry time has come.
        for r in &g.replicas {
            let mut h = r.health();
            h.state = ReplicaState::Down;
            h.next_check = Instant::now() + Duration::from_secs(60);
        }
        assert!(u.pick(g, "m", &[]).is_none());
        g.replicas[2].health().next_check = Instant::now();
        assert_eq!(u.pick(g, "m", &[]).unwrap().0, 2);
    }

    #[test]
    fn request_bodies_carry_the_guard_rails_and_only_what_was_set() {
        let req = EngineRequest {
            model: "lab/m".into(),
            messages: vec![
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "Hi"),
            ],
            sampling: super::super::Sampling {
                stop: vec!["END".into()],
                ..super::super::Sampling::greedy(64)
            },
            prompt_tokens: 10,
            explicit: ChatOptions {
                temperature: Some(0.2),
                repeat_penalty: Some(1.2),
                ..ChatOptions::default()
            },
        };
        let o = openai_body("m", &req);
        assert_eq!(o["model"], "m");
        assert_eq!(o["max_tokens"], 64);
        assert_eq!(o["stop"], json!(["END"]));
        assert_eq!(o["stream"], true);
        assert_eq!(o["temperature"], 0.2);
        assert!(o.get("top_p").is_none());
        assert!(o["repetition_penalty"].as_f64().is_some());
        assert_eq!(
            o["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        let l = ollama_body("m", &req, 4096);
        assert_eq!(l["options"]["num_predict"], 64);
        assert_eq!(l["options"]["num_ctx"], 4096);
        assert_eq!(l["options"]["stop"], json!(["END"]));
        assert!(l["options"].get("top_k").is_none());
        assert_eq!(l["messages"][1]["content"], "Hi");
    }

    #[test]
    fn the_token_estimate_is_on_the_high_side() {
        let english = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let n = estimate_tokens(&[ChatMessage::new(Role::User, english.clone())]);
        // About 200 tokens for a real tokenizer.
        assert!(n > 250 && n < 450, "{n}");
        let japanese = estimate_tokens(&[ChatMessage::new(Role::User, "日本語の文章です。")]);
        assert!(japanese >= 9, "{japanese}");
    }
}

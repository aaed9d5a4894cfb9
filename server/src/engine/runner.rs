//! The server's side of an engine process (`kinko engine-worker`, see
//! [`super::worker`]): start it, relay counts and generations over its
//! stdin and stdout, and stop it when it is stuck on work nobody wants.
//!
//! mistral.rs notices a cancelled sequence only when it hands out that
//! sequence's next token, so a cancelled request whose prompt is being
//! processed keeps the engine busy until the whole prompt is done: minutes,
//! for a long history on a small CPU, with every other request of the model
//! waiting behind it. The runner watches for exactly that case: the oldest
//! request still waiting for its first token has been cancelled, and the
//! engine has been silent for longer than a decode step could explain. Then
//! it kills the engine process and starts a new one. Requests that had not
//! started yet are sent to the new process as if nothing happened; answers
//! already streaming cannot be resumed and end with an error.

use super::prompt_speed::PromptSpeed;
use super::worker::{write_json_lines, FromWorker, ToWorker};
use super::{EngineError, EngineEvent, Sampling, TokenStream};
use crate::metrics::Metrics;
use app::api::ChatMessage;
use futures::Stream;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The shortest silence taken as "stuck in a prompt nobody wants".
const STUCK_AFTER_MIN: Duration = Duration::from_millis(500);
/// How often the watch looks.
const WATCH_TICK: Duration = Duration::from_millis(50);
/// A cancelled prompt expected to finish within this long is left to
/// finish: starting the engine again costs more.
const FINISH_WAIT_SECS: f64 = 1.0;

/// How to start engine processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// The `kinko` binary.
    pub program: PathBuf,
    /// Compute threads (`--threads`), if set.
    pub threads: Option<usize>,
    /// Whether the compute threads float (`--no-pin`).
    pub no_pin: bool,
    /// Sequences one engine serves at once.
    pub max_num_seqs: usize,
}

impl WorkerSpec {
    /// Engine processes started from `program` with the default settings.
    pub fn program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            threads: None,
            no_pin: false,
            max_num_seqs: 16,
        }
    }
}

impl Default for WorkerSpec {
    /// This very binary.
    fn default() -> Self {
        Self::program(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kinko")))
    }
}

/// A request sent to the engine process and not finished yet.
enum Pending {
    Count {
        messages: Vec<ChatMessage>,
        reply: oneshot::Sender<Result<usize, EngineError>>,
    },
    Generate {
        messages: Vec<ChatMessage>,
        sampling: Sampling,
        tx: mpsc::UnboundedSender<Result<EngineEvent, EngineError>>,
        prompt_tokens: usize,
        submitted: Instant,
        /// A token has come out: the prompt is done.
        started: bool,
        /// The consumer is gone.
        cancelled: bool,
        /// Tokens counted so far (the final usage settles the rest).
        counted: usize,
        last_token: Option<Instant>,
    },
}

struct State {
    /// Bumped at every restart; lines from an older process are ignored.
    generation: u64,
    outbox: Option<mpsc::UnboundedSender<ToWorker>>,
    child: Option<Child>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    last_output: Instant,
    /// Typical time between two tokens of one answer (moving average).
    step: Duration,
    watching: bool,
    dead: Option<String>,
}

impl State {
    fn send(&self, message: ToWorker) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(message);
        }
    }

    /// Silence longer than this, while a cancelled prompt is the oldest
    /// waiting, means the engine is working on that prompt.
    fn stuck_after(&self) -> Duration {
        (self.step * 4).max(STUCK_AFTER_MIN)
    }

    /// Send every request that has not started to the (new) process.
    fn resend_unstarted(&self) {
        let mut pending: Vec<(&u64, &Pending)> = self.pending.iter().collect();
        pending.sort_by_key(|(id, _)| **id);
        for (id, p) in pending {
            match p {
                Pending::Count { messages, .. } => self.send(ToWorker::Count {
                    id: *id,
                    messages: messages.clone(),
                }),
                Pending::Generate {
                    messages,
                    sampling,
                    started: false,
                    cancelled: false,
                    ..
                } => self.send(ToWorker::Generate {
                    id: *id,
                    messages: messages.clone(),
                    sampling: sampling.clone(),
                }),
                Pending::Generate { .. } => {}
            }
        }
    }

    /// End every pending request with `why`.
    fn fail_all(&mut self, why: &str) {
        for (_, p) in self.pending.drain() {
            match p {
                Pending::Count { reply, .. } => {
                    let _ = reply.send(Err(EngineError::Generation(why.to_string())));
                }
                Pending::Generate { tx, .. } => {
                    let _ = tx.send(Err(EngineError::Generation(why.to_string())));
                }
            }
        }
    }
}

/// A running engine process for one model.
pub struct Runner {
    model: String,
    dir: PathBuf,
    file: String,
    spec: WorkerSpec,
    metrics: Metrics,
    speed: Arc<Mutex<PromptSpeed>>,
    state: Mutex<State>,
    restarting: tokio::sync::Mutex<()>,
}

/// A started engine process whose first line said `Ready`.
struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<ChildStdout>>,
}

impl Runner {
    /// Start an engine process for `model` (the GGUF `file` in `dir`) and
    /// wait until it has loaded the model. Prompt timings go to `speed`.
    pub async fn start(
        model: &str,
        dir: PathBuf,
        file: String,
        spec: WorkerSpec,
        metrics: Metrics,
        speed: Arc<Mutex<PromptSpeed>>,
    ) -> Result<Arc<Self>, EngineError> {
        let runner = Arc::new(Self {
            model: model.to_string(),
            dir,
            file,
            spec,
            metrics,
            speed,
            state: Mutex::new(State {
                generation: 0,
                outbox: None,
                child: None,
                pending: HashMap::new(),
                next_id: 1,
                last_output: Instant::now(),
                step: Duration::ZERO,
                watching: false,
                dead: None,
            }),
            restarting: tokio::sync::Mutex::new(()),
        });
        let process = runner.spawn_process().await?;
        runner.install(process);
        Ok(runner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine process's id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().and_then(|c| c.id())
    }

    /// Why the engine process is gone for good, if it is.
    pub fn dead(&self) -> Option<String> {
        self.lock().dead.clone()
    }

    async fn spawn_process(&self) -> Result<Process, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            model: self.model.clone(),
            reason,
        };
        let mut cmd = tokio::process::Command::new(&self.spec.program);
        if let Some(threads) = self.spec.threads {
            cmd.arg("--threads").arg(threads.to_string());
        }
        if self.spec.no_pin {
            cmd.arg("--no-pin");
        }
        cmd.arg("engine-worker")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--file")
            .arg(&self.file)
            .arg("--max-seqs")
            .arg(self.spec.max_num_seqs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| load_err(format!("cannot start the engine process: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(load_err("the engine process has no pipes".into()));
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        // mistral.rs prints the model's settings to stdout while it loads:
        // the first protocol line is the answer.
        let first = loop {
            match lines.next_line().await {
                Ok(Some(line)) if !line.starts_with('{') => {
                    tracing::debug!(model = %self.model, "engine process: {line}");
                }
                other => break other,
            }
        };
        match first.map(|l| l.map(|l| serde_json::from_str::<FromWorker>(&l))) {
            Ok(Some(Ok(FromWorker::Ready { load_ms }))) => {
                tracing::info!(model = %self.model, pid = child.id(), load_ms = load_ms as u64, "engine process ready");
                Ok(Process {
                    child,
                    stdin,
                    lines,
                })
            }
            Ok(Some(Ok(FromWorker::LoadFailed { message }))) => Err(load_err(message)),
            _ => {
                let status = child.wait().await;
                Err(load_err(match status {
                    Ok(s) => format!("the engine process exited while loading ({s})"),
                    Err(e) => format!("the engine process failed while loading: {e}"),
                }))
            }
        }
    }

    /// Make `process` the current engine process; requests not started yet
    /// go to it.
    fn install(self: &Arc<Self>, process: Process) {
        let Process {
            child,
            stdin,
            lines,
        } = process;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let mut s = self.lock();
        let generation = s.generation;
        s.child = Some(child);
        s.outbox = Some(outbox);
        s.last_output = Instant::now();
        s.resend_unstarted();
        drop(s);
        tokio::spawn(async move {
            // A failed write means the process is gone; its output's end says so.
            let _ = write_json_lines(stdin, outbox_rx).await;
        });
        tokio::spawn(read_replies(Arc::downgrade(self), generation, lines));
    }

    /// Tokens the prompt takes with the model's chat template applied.
    pub async fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut s = self.lock();
            if let Some(why) = &s.dead {
                return Err(EngineError::Generation(why.clone()));
            }
            let id = s.next_id;
            s.next_id += 1;
            s.pending.insert(
                id,
                Pending::Count {
                    messages: messages.to_vec(),
                    reply,
                },
            );
            s.send(ToWorker::Count {
                id,
                messages: messages.to_vec(),
            });
        }
        answer
            .await
            .map_err(|_| EngineError::Generation("the engine process went away".into()))?
    }

    /// Start generating (a prompt of `prompt_tokens` tokens); dropping the
    /// stream cancels it.
    pub fn stream(
        self: &Arc<Self>,
        messages: Vec<ChatMessage>,
        sampling: Sampling,
        prompt_tokens: usize,
    ) -> Result<TokenStream, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut s = self.lock();
            if let Some(why) = &s.dead {
                return Err(EngineError::Generation(why.clone()));
            }
            let id = s.next_id;
            s.next_id += 1;
            s.send(ToWorker::Generate {
                id,
                messages: messages.clone(),
                sampling: sampling.clone(),
            });
            s.pending.insert(
                id,
                Pending::Generate {
                    messages,
                    sampling,
                    tx,
                    prompt_tokens,
                    submitted: Instant::now(),
                    started: false,
                    cancelled: false,
                    counted: 0,
                    last_token: None,
                },
            );
            id
        };
        Ok(Box::pin(Answer {
            events: UnboundedReceiverStream::new(rx),
            runner: self.clone(),
            id,
        }))
    }

    /// The consumer of answer `id` is gone.
    fn cancel(self: &Arc<Self>, id: u64) {
        let watch = {
            let mut s = self.lock();
            let waiting = match s.pending.get_mut(&id) {
                Some(Pending::Generate {
                    cancelled, started, ..
                }) => {
                    *cancelled = true;
                    !*started
                }
                _ => return,
            };
            s.send(ToWorker::Cancel { id });
            let watch = waiting && !s.watching;
            s.watching |= watch;
            watch
        };
        if watch {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.clone().watch());
            } else {
                self.lock().watching = false;
            }
        }
    }

    /// While a cancelled request waits for its prompt: kill the engine
    /// process when that prompt is what it is working on.
    async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_TICK).await;
            let stuck = {
                let mut s = self.lock();
                let waiting = s
                    .pending
                    .iter()
                    .filter_map(|(id, p)| match p {
                        Pending::Generate {
                            started: false,
                            cancelled,
                            submitted,
                            prompt_tokens,
                            ..
                        } => Some((*id, *cancelled, *submitted, *prompt_tokens)),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if !waiting.iter().any(|w| w.1) {
                    s.watching = false;
                    return;
                }
                // The engine takes prompts in the order they came.
                match waiting.iter().min_by_key(|w| w.0) {
                    Some(&(_, true, submitted, tokens)) => {
                        let silent_since = s.last_output.max(submitted);
                        let ran = silent_since.elapsed();
                        let secs = ran.as_secs_f64();
                        // By the measured prompt speed, about to finish?
                        let finishing = lock_speed(&self.speed).estimate().is_some_and(|c| {
                            let total = c.seconds(tokens);
                            total - secs <= FINISH_WAIT_SECS && secs <= total * 1.5 + 0.25
                        });
                        (ran >= s.stuck_after() && !finishing).then_some((tokens, ran))
                    }
                    _ => None,
                }
            };
            if let Some((tokens, ran)) = stuck {
                // That prompt takes longer than it had run: worth knowing
                // when the next long history comes.
                lock_speed(&self.speed).record_unfinished(tokens, ran.as_secs_f64());
                self.restart().await;
            }
        }
    }

    /// Kill the engine process and start another; unstarted requests move
    /// over, answers already streaming end with an error.
    async fn restart(self: &Arc<Self>) {
        let _one = self.restarting.lock().await;
        let (old, cut) = {
            let mut s = self.lock();
            s.generation += 1;
            self.metrics.engine_restarted();
            s.outbox = None;
            let mut cut = Vec::new();
            s.pending.retain(|_, p| match p {
                Pending::Generate {
                    cancelled: true, ..
                } => false,
                Pending::Generate {
                    started: true, tx, ..
                } => {
                    cut.push(tx.clone());
                    false
                }
                _ => true,
            });
            (s.child.take(), cut)
        };
        if let Some(mut child) = old {
            let pid = child.id();
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            tracing::info!(model = %self.model, pid, "stopped the engine process: it was working on a prompt whose client is gone");
        }
        for tx in cut {
            let _ = tx.send(Err(EngineError::Generation(
                "the engine was restarted to drop another request's abandoned prompt; this answer was cut short".into(),
            )));
        }
        match self.spawn_process().await {
            Ok(process) => self.install(process),
            Err(e) => {
                let why = e.to_string();
                let mut s = self.lock();
                s.dead = Some(why.clone());
                s.fail_all(&why);
            }
        }
    }

    /// One line from the engine process of `generation`.
    fn on_reply(&self, generation: u64, reply: FromWorker) {
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        let now = Instant::now();
        s.last_output = now;
        match reply {
            FromWorker::Ready { .. } | FromWorker::LoadFailed { .. } => {}
            FromWorker::Counted { id, tokens } => {
                if let Some(Pending::Count { reply, .. }) = s.pending.remove(&id) {
                    let _ = reply.send(tokens.map_err(EngineError::Generation));
                }
            }
            FromWorker::Token { id, count, text } => {
                let mut gap = None;
                if let Some(Pending::Generate {
                    tx,
                    started,
                    cancelled,
                    counted,
                    last_token,
                    ..
                }) = s.pending.get_mut(&id)
                {
                    self.metrics.tokens_generated(count as u64);
                    *counted += count;
                    *started = true;
                    gap = last_token.replace(now).map(|t| now - t);
                    if !*cancelled && !text.is_empty() {
                        let _ = tx.send(Ok(EngineEvent::Delta(text)));
                    }
                }
                if let Some(gap) = gap.filter(|g| *g < Duration::from_secs(5)) {
                    s.step = (s.step * 4 + gap) / 5;
                }
            }
            FromWorker::Done {
                id,
                reason,
                usage,
                prompt_secs,
                tool_calls,
            } => {
                if let Some(secs) = prompt_secs {
                    lock_speed(&self.speed).record(usage.prompt_tokens, secs);
                }
                if let Some(Pending::Generate {
                    tx,
                    counted,
                    prompt_tokens,
                    ..
                }) = s.pending.remove(&id)
                {
                    let mut usage = usage;
                    if usage.prompt_tokens == 0 {
                        usage.prompt_tokens = prompt_tokens;
                    }
                    let missing = usage.completion_tokens.saturating_sub(counted);
                    self.metrics.tokens_generated(missing as u64);
                    if !tool_calls.is_empty() {
                        let _ = tx.send(Ok(EngineEvent::ToolCalls(tool_calls)));
                    }
                    let _ = tx.send(Ok(EngineEvent::Done { reason, usage }));
                }
            }
            FromWorker::Failed { id, message } => match s.pending.remove(&id) {
                Some(Pending::Generate { tx, .. }) => {
                    let _ = tx.send(Err(EngineError::Generation(message)));
                }
                Some(Pending::Count { reply, .. }) => {
                    let _ = reply.send(Err(EngineError::Generation(message)));
                }
                None => {}
            },
            FromWorker::Ended { id } => {
                s.pending.remove(&id);
            }
        }
    }

    /// The engine process of `generation` closed its output.
    fn on_exit(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        let status = s
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|st| format!(" ({st})"))
            .unwrap_or_default();
        let why = format!(
            "the engine process for {} exited unexpectedly{status}",
            self.model
        );
        tracing::error!("{why}");
        s.outbox = None;
        s.dead = Some(why.clone());
        s.fail_all(&why);
    }
}

fn lock_speed(speed: &Mutex<PromptSpeed>) -> std::sync::MutexGuard<'_, PromptSpeed> {
    speed.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands each line of the engine process to its runner, then reports the
/// end of the output.
async fn read_replies(
    runner: Weak<Runner>,
    generation: u64,
    mut lines: tokio::io::Lines<tokio::io::BufReader<ChildStdout>>,
) {
    loop {
        let line = lines.next_line().await;
        let Some(runner) = runner.upgrade() else {
            return;
        };
        match line {
            Ok(Some(line)) => match serde_json::from_str::<FromWorker>(&line) {
                Ok(reply) => runner.on_reply(generation, reply),
                Err(_) => tracing::debug!("engine process: {line}"),
            },
            _ => {
                runner.on_exit(generation);
                return;
            }
        }
    }
}

/// An answer's events; dropping it cancels the answer.
struct Answer {
    events: UnboundedReceiverStream<Result<EngineEvent, EngineError>>,
    runner: Arc<Runner>,
    id: u64,
}

impl Stream for Answer {
    type Item = Result<EngineEvent, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events).poll_next(cx)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.runner.cancel(self.id);
    }
}

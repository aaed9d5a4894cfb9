//! The engine process, `kinko engine-worker`: one model in mistral.rs, driven
//! by the server over stdin and stdout, one JSON object per line.
//!
//! Why a process of its own: mistral.rs 0.8.1 cannot stop a prompt midway.
//! A long history is one forward pass that, on a small CPU, runs for minutes
//! and holds every other request of that model behind it, even after its
//! client is gone. A process can be stopped at once, so the server
//! ([`super::runner`]) kills the engine process when an abandoned prompt
//! holds it, and starts it again. The same isolation means a model that
//! crashes or aborts takes down its engine process, not the server.
//!
//! The worker exits when its stdin closes (the server is gone).

use super::local::LocalModel;
use super::{EngineEvent, Sampling};
use app::api::{ChatMessage, FinishReason, Usage};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// What the server asks of an engine process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToWorker {
    /// Count the prompt tokens of `messages` (chat template applied).
    Count {
        /// Request id, unique per engine process.
        id: u64,
        /// The conversation.
        messages: Vec<ChatMessage>,
    },
    /// Generate an answer to `messages`.
    Generate {
        /// Request id, unique per engine process.
        id: u64,
        /// The conversation, already trimmed.
        messages: Vec<ChatMessage>,
        /// How to sample.
        sampling: Sampling,
    },
    /// Stop request `id`.
    Cancel {
        /// The request.
        id: u64,
    },
}

/// What an engine process tells the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// The model is loaded; requests are welcome. Always the first line.
    Ready {
        /// Milliseconds the load took.
        load_ms: f64,
    },
    /// The model could not be loaded; the process exits.
    LoadFailed {
        /// Why.
        message: String,
    },
    /// The answer to a `Count`.
    Counted {
        /// The request.
        id: u64,
        /// Tokens, or why counting failed.
        tokens: Result<usize, String>,
    },
    /// Generated tokens (`text` may be empty while a UTF-8 character is
    /// incomplete).
    Token {
        /// The request.
        id: u64,
        /// How many engine tokens this covers.
        count: usize,
        /// Their text.
        text: String,
    },
    /// The answer ended by itself.
    Done {
        /// The request.
        id: u64,
        /// Why.
        reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Seconds the engine spent reading the prompt.
        #[serde(default)]
        prompt_secs: Option<f64>,
        /// The tools the model called.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<app::api::ToolCall>,
    },
    /// The answer failed.
    Failed {
        /// The request.
        id: u64,
        /// Why.
        message: String,
    },
    /// A cancelled request has left the engine: if it was waiting for its
    /// prompt, the prompt has now been processed.
    Ended {
        /// The request.
        id: u64,
    },
}

/// Load the model, say `Ready`, then serve requests from stdin until it
/// closes.
pub async fn run(dir: PathBuf, file: String, max_num_seqs: usize) -> anyhow::Result<()> {
    let (out, out_rx) = mpsc::unbounded_channel::<FromWorker>();
    let writer = tokio::spawn(write_lines(out_rx));
    let started = std::time::Instant::now();
    let model = match LocalModel::load(&dir, &file, max_num_seqs).await {
        Ok(model) => model,
        Err(message) => {
            let _ = out.send(FromWorker::LoadFailed {
                message: message.clone(),
            });
            drop(out);
            let _ = writer.await;
            anyhow::bail!("could not load {}: {message}", dir.join(&file).display());
        }
    };
    let _ = out.send(FromWorker::Ready {
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    let cancels: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request = match serde_json::from_str::<ToWorker>(&line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("engine process: ignoring a line it cannot read: {e}");
                continue;
            }
        };
        match request {
            ToWorker::Count { id, messages } => {
                let (model, out) = (model.clone(), out.clone());
                tokio::spawn(async move {
                    let tokens = model
                        .count_tokens(&messages)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = out.send(FromWorker::Counted { id, tokens });
                });
            }
            ToWorker::Generate {
                id,
                messages,
                sampling,
            } => {
                let (cancel_tx, cancel_rx) = oneshot::channel();
                lock(&cancels).insert(id, cancel_tx);
                let (model, out, cancels) = (model.clone(), out.clone(), cancels.clone());
                tokio::spawn(async move {
                    generate(&model, id, &messages, &sampling, cancel_rx, &out).await;
                    lock(&cancels).remove(&id);
                });
            }
            ToWorker::Cancel { id } => {
                if let Some(cancel) = lock(&cancels).remove(&id) {
                    let _ = cancel.send(());
                }
            }
        }
    }
    // The server is gone (or closed our stdin): nothing is left to answer.
    std::process::exit(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One generation, forwarded as `Token`…, then `Done` or `Failed`; or, when
/// cancelled, `Ended` once the engine has let go of it.
async fn generate(
    model: &LocalModel,
    id: u64,
    messages: &[ChatMessage],
    sampling: &Sampling,
    mut cancel: oneshot::Receiver<()>,
    out: &mpsc::UnboundedSender<FromWorker>,
) {
    let (mut stream, prompt_secs) = match model.stream_timed(messages, sampling).await {
        Ok(s) => s,
        Err(e) => {
            let _ = out.send(FromWorker::Failed {
                id,
                message: e.to_string(),
            });
            return;
        }
    };
    let mut started = false;
    let mut tool_calls = Vec::new();
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = &mut cancel => {
                // A sequence still in its prompt is cancelled only when its
                // first token comes out: wait for that, so the server knows
                // when the prompt work is over. After that, dropping the
                // stream stops the sequence at its next token.
                if !started {
                    let _ = stream.next().await;
                }
                drop(stream);
                let _ = out.send(FromWorker::Ended { id });
                return;
            }
        };
        let message = match event {
            Some(Ok(EngineEvent::Delta(text))) => {
                started = true;
                FromWorker::Token { id, count: 1, text }
            }
            // mistral.rs's own times are not passed on.
            Some(Ok(EngineEvent::Timings(_))) => continue,
            Some(Ok(EngineEvent::ToolCalls(calls))) => {
                tool_calls.extend(calls);
                continue;
            }
            Some(Ok(EngineEvent::Done { reason, usage })) => {
                let _ = out.send(FromWorker::Done {
                    id,
                    reason,
                    usage,
                    prompt_secs: prompt_secs.get().copied(),
                    tool_calls,
                });
                return;
            }
            Some(Err(e)) => FromWorker::Failed {
                id,
                message: e.to_string(),
            },
            None => FromWorker::Failed {
                id,
                message: "the engine ended the stream without finishing".into(),
            },
        };
        let last = matches!(message, FromWorker::Failed { .. });
        if out.send(message).is_err() || last {
            return;
        }
    }
}

/// Writes each message to stdout; when the server is gone, exits.
async fn write_lines(rx: mpsc::UnboundedReceiver<FromWorker>) {
    if write_json_lines(tokio::io::stdout(), rx).await.is_err() {
        std::process::exit(0);
    }
}

/// Both ends of the pipe: writes each message as one JSON line, messages
/// already queued in one write, until the channel closes or a write fails.
pub(crate) async fn write_json_lines<T: Serialize, W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::UnboundedReceiver<T>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(message) = next {
            if serde_json::to_writer(&mut buf, &message).is_ok() {
                buf.push(b'\n');
            }
            next = rx.try_recv().ok();
        }
        out.write_all(&buf).await?;
        out.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::api::Role;

    #[test]
    fn protocol_lines_round_trip() {
        let to = ToWorker::Generate {
            id: 7,
            messages: vec![ChatMessage::new(Role::User, "hi")],
            sampling: Sampling::greedy(5),
        };
        let line = serde_json::to_string(&to).unwrap();
        assert!(line.starts_with(r#"{"op":"generate","id":7,"#), "{line}");
        assert!(matches!(
            serde_json::from_str::<ToWorker>(&line).unwrap(),
            ToWorker::Generate { id: 7, .. }
        ));
        for from in [
            FromWorker::Ready { load_ms: 1.5 },
            FromWorker::Counted {
                id: 1,
                tokens: Ok(12),
            },
            FromWorker::Counted {
                id: 2,
                tokens: Err("no".into()),
            },
            FromWorker::Token {
                id: 3,
                count: 1,
                text: "é".into(),
            },
            FromWorker::Done {
                id: 3,
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 4,
                    completion_tokens: 5,
                },
                prompt_secs: Some(0.25),
                tool_calls: Vec::new(),
            },
            FromWorker::Done {
                id: 4,
                reason: FinishReason::Stop,
                usage: Usage::default(),
                prompt_secs: None,
                tool_calls: vec![app::api::ToolCall {
                    id: "call-1".into(),
                    name: "get_weather".into(),
                    arguments: serde_json::json!({"city": "Paris"}),
                }],
            },
            FromWorker::Ended { id: 9 },
        ] {
            let line = serde_json::to_string(&from).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<FromWorker>(&line).unwrap(), from);
        }
    }
}

//! Turning an engine token stream into the SSE events of the chat protocol
//! (`meta`, `delta`…, then `done` or `error`), with the three timeouts. The
//! relay owns the engine stream: when the client goes away the relay is
//! dropped, the engine stream with it, and the generation stops.

use crate::engine::{EngineEvent, TokenStream};
use crate::metrics::StreamGuard;
use app::api::{DeltaEvent, DoneEvent, ErrorDetail, FinishReason, MetaEvent, Timings, Usage};
use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The three time limits of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the first token.
    pub first_token: Duration,
    /// Between two tokens.
    pub between_tokens: Duration,
    /// For the whole answer.
    pub answer: Duration,
}

/// One SSE event of the chat protocol, before framing.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// Sent first.
    Meta(MetaEvent),
    /// A piece of text.
    Delta(DeltaEvent),
    /// The end.
    Done(DoneEvent),
    /// A failure; the stream ends after it.
    Error(ErrorDetail),
}

impl ChatEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ChatEvent::Meta(_) => "meta",
            ChatEvent::Delta(_) => "delta",
            ChatEvent::Done(_) => "done",
            ChatEvent::Error(_) => "error",
        }
    }

    /// Framed as an axum SSE event with JSON data.
    pub fn to_sse(&self) -> Event {
        fn data<T: Serialize>(name: &str, value: &T) -> Event {
            match serde_json::to_string(value) {
                Ok(json) => Event::default().event(name).data(json),
                Err(_) => Event::default()
                    .event("error")
                    .data(r#"{"code":"internal","message":"could not encode an event"}"#),
            }
        }
        match self {
            ChatEvent::Meta(m) => data(self.name(), m),
            ChatEvent::Delta(d) => data(self.name(), d),
            ChatEvent::Done(d) => data(self.name(), d),
            ChatEvent::Error(e) => data(self.name(), e),
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> ChatEvent {
    ChatEvent::Error(ErrorDetail {
        code: code.into(),
        message: message.into(),
    })
}

/// The events of one answer: `meta`, then the engine's text as `delta`s,
/// then `done` (or `error`, then `done` with reason `timeout` for a timeout).
/// `started` is when the request arrived (time to first token counts from it).
/// When `shutdown` turns true the answer ends at once with an `error`
/// (`shutting_down`) and a `done` (`cancelled`).
pub fn relay(
    meta: MetaEvent,
    mut tokens: TokenStream,
    mut guard: StreamGuard,
    timeouts: Timeouts,
    started: Instant,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = ChatEvent> + Send + 'static {
    async_stream::stream! {
        let prompt_tokens = meta.prompt_tokens;
        yield ChatEvent::Meta(meta);
        let deadline = started + timeouts.answer;
        let mut first_token_at: Option<Instant> = None;
        let mut deltas = 0usize;
        loop {
            let (limit, what) = match first_token_at {
                None => (timeouts.first_token, "the first token"),
                Some(_) => (timeouts.between_tokens, "the next token"),
            };
            let now = Instant::now();
            let until = (now + limit).min(deadline);
            let what = if until == deadline { "the whole answer" } else { what };
            let next = tokio::select! {
                next = tokio::time::timeout_at(until, tokens.next()) => next,
                _ = shutting_down(&mut shutdown) => {
                    drop(std::mem::replace(&mut tokens, Box::pin(futures::stream::empty())));
                    guard.finish(FinishReason::Cancelled);
                    yield error("shutting_down", "the server is shutting down");
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: FinishReason::Cancelled,
                        usage: Usage { prompt_tokens, completion_tokens: deltas },
                        timings: timings(started, first_token_at, deltas),
                    });
                    break;
                }
            };
            match next {
                Ok(Some(Ok(EngineEvent::Delta(text)))) => {
                    if first_token_at.is_none() {
                        first_token_at = Some(Instant::now());
                    }
                    deltas += 1;
                    yield ChatEvent::Delta(DeltaEvent { text });
                }
                Ok(Some(Ok(EngineEvent::Done { reason, usage }))) => {
                    guard.finish(reason);
                    let usage = if usage.completion_tokens == 0 && deltas > 0 {
                        Usage { prompt_tokens, completion_tokens: deltas }
                    } else {
                        usage
                    };
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: reason,
                        usage,
                        timings: timings(started, first_token_at, usage.completion_tokens),
                    });
                    break;
                }
                Ok(Some(Err(err))) => {
                    guard.finish(FinishReason::Error);
                    yield error("engine_error", err.to_string());
                    break;
                }
                Ok(None) => {
                    guard.finish(FinishReason::Error);
                    yield error("engine_error", "the engine ended the answer without finishing it");
                    break;
                }
                Err(_elapsed) => {
                    // Drop the engine stream first: generation stops now.
                    drop(std::mem::replace(&mut tokens, Box::pin(futures::stream::empty())));
                    guard.finish(FinishReason::Timeout);
                    let waited = match what {
                        "the whole answer" => timeouts.answer,
                        "the first token" => timeouts.first_token,
                        _ => timeouts.between_tokens,
                    };
                    yield error(
                        "timeout",
                        format!("timed out after {:.1} s waiting for {what}", waited.as_secs_f64()),
                    );
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: FinishReason::Timeout,
                        usage: Usage { prompt_tokens, completion_tokens: deltas },
                        timings: timings(started, first_token_at, deltas),
                    });
                    break;
                }
            }
        }
    }
}

/// Resolves once `shutdown` turns true (never, if its sender is gone).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// SSE framing of [`relay`].
pub fn sse_events(
    events: impl Stream<Item = ChatEvent> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    events.map(|e| Ok(e.to_sse()))
}

fn timings(started: Instant, first: Option<Instant>, completion_tokens: usize) -> Timings {
    let Some(first) = first else {
        return Timings::default();
    };
    let ttft = first.duration_since(started).as_secs_f64() * 1000.0;
    let decode = Instant::now().duration_since(first).as_secs_f64();
    let tokens_per_second = if completion_tokens > 1 && decode > 0.0 {
        (completion_tokens - 1) as f64 / decode
    } else {
        0.0
    };
    Timings {
        ttft_ms: ttft,
        tokens_per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::metrics::Metrics;

    fn meta() -> MetaEvent {
        MetaEvent {
            model: "m".into(),
            context_window: 100,
            prompt_tokens: 7,
            trimmed_messages: 0,
            max_tokens: 10,
        }
    }

    fn timeouts(ms: u64) -> Timeouts {
        Timeouts {
            first_token: Duration::from_millis(ms),
            between_tokens: Duration::from_millis(ms),
            answer: Duration::from_secs(60),
        }
    }

    async fn run(items: Vec<Result<EngineEvent, EngineError>>) -> (Vec<ChatEvent>, Metrics) {
        let metrics = Metrics::new();
        let tokens: TokenStream = Box::pin(futures::stream::iter(items));
        let (_tx, rx) = watch::channel(false);
        let events = relay(meta(), tokens, metrics.stream_started(), timeouts(1000), Instant::now(), rx)
            .collect()
            .await;
        (events, metrics)
    }

    #[tokio::test]
    async fn meta_deltas_done_in_order() {
        let (events, metrics) = run(vec![
            Ok(EngineEvent::Delta("Hel".into())),
            Ok(EngineEvent::Delta("lo".into())),
            Ok(EngineEvent::Done {
                reason: FinishReason::Stop,
                usage: Usage { prompt_tokens: 7, completion_tokens: 2 },
            }),
        ])
        .await;
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names, ["meta", "delta", "delta", "done"]);
        assert_eq!(metrics.finished_total(FinishReason::Stop), 1);
        assert_eq!(metrics.active_streams(), 0);
    }

    #[tokio::test]
    async fn engine_error_becomes_an_error_event() {
        let (events, metrics) = run(vec![
            Ok(EngineEvent::Delta("a".into())),
            Err(EngineError::Generation("boom".into())),
        ])
        .await;
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names, ["meta", "delta", "error"]);
        assert_eq!(metrics.finished_total(FinishReason::Error), 1);
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_an_error() {
        let (events, _) = run(vec![Ok(EngineEvent::Delta("a".into()))]).await;
        assert!(matches!(events.last(), Some(ChatEvent::Error(e)) if e.code == "engine_error"));
    }

    #[tokio::test]
    async fn a_silent_engine_times_out() {
        let metrics = Metrics::new();
        let tokens: TokenStream = Box::pin(futures::stream::pending());
        let (_tx, rx) = watch::channel(false);
        let events: Vec<_> =
            relay(meta(), tokens, metrics.stream_started(), timeouts(50), Instant::now(), rx)
                .collect()
                .await;
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names, ["meta", "error", "done"]);
        assert!(matches!(&events[1], ChatEvent::Error(e) if e.code == "timeout"));
        assert!(matches!(&events[2], ChatEvent::Done(d) if d.finish_reason == FinishReason::Timeout));
        assert_eq!(metrics.finished_total(FinishReason::Timeout), 1);
    }

    #[tokio::test]
    async fn shutdown_ends_open_answers_with_a_final_event() {
        let metrics = Metrics::new();
        let tokens: TokenStream = Box::pin(futures::stream::pending());
        let (tx, rx) = watch::channel(false);
        let events = tokio::spawn(
            relay(meta(), tokens, metrics.stream_started(), timeouts(60_000), Instant::now(), rx)
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(true).unwrap();
        let events = events.await.unwrap();
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names, ["meta", "error", "done"]);
        assert!(matches!(&events[1], ChatEvent::Error(e) if e.code == "shutting_down"));
        assert_eq!(metrics.finished_total(FinishReason::Cancelled), 1);
    }
}

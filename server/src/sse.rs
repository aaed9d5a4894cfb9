//! Turning an engine token stream into the SSE events of the chat protocol
//! (`meta`, `delta`…, then `done` or `error`), with the three timeouts. The
//! relay owns the engine stream: when the client goes away the relay is
//! dropped, the engine stream with it, and the generation stops.

use crate::engine::{EngineError, EngineEvent, TokenStream};
use crate::metrics::StreamGuard;
use app::api::{DeltaEvent, DoneEvent, ErrorDetail, FinishReason, MetaEvent, Timings, Usage};
use axum::response::sse::Event;
use futures::{FutureExt, Stream, StreamExt};
use kinko_parse::upstream::UpstreamTimings;
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

/// Stop strings, applied to the text as it streams: the answer ends at the
/// first one, which is never shown. Text that might be the start of a stop
/// string is held back until the next piece decides.
#[derive(Debug, Clone, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Add `text`; returns what may be shown now, and whether a stop string
    /// was reached (then nothing after it may be shown).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.pending), false);
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let shown = self.pending[..at].to_string();
            self.pending.clear();
            return (shown, true);
        }
        // Hold back the longest tail that begins some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.pending.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.pending.len() - keep;
        let shown = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (shown, false)
    }

    /// The held-back text, once the answer has ended without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
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

/// An `error` event; the client sees [`crate::error::public_message`] of
/// `message`.
fn error(code: &str, message: impl Into<String>) -> ChatEvent {
    let message = message.into();
    let shown = crate::error::public_message(&message);
    if shown != message {
        tracing::warn!(code, message, "answer failed");
    }
    ChatEvent::Error(ErrorDetail {
        code: code.into(),
        message: shown,
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
    mut stop: StopFilter,
) -> impl Stream<Item = ChatEvent> + Send + 'static {
    async_stream::stream! {
        let prompt_tokens = meta.prompt_tokens;
        yield ChatEvent::Meta(meta);
        let deadline = started + timeouts.answer;
        let mut first_token_at: Option<Instant> = None;
        let mut deltas = 0usize;
        // What the engine sent after a burst of queued deltas; handled next.
        let mut carried: Option<Option<Result<EngineEvent, EngineError>>> = None;
        // The engine's own times, if it sends them before `Done`.
        let mut own_timings: Option<UpstreamTimings> = None;
        // Tools the model called; they go out with `done`.
        let mut tool_calls: Vec<app::api::ToolCall> = Vec::new();
        loop {
            let (limit, what) = match first_token_at {
                None => (timeouts.first_token, "the first token"),
                Some(_) => (timeouts.between_tokens, "the next token"),
            };
            let (until, limit, what) = if Instant::now() + limit >= deadline {
                (deadline, timeouts.answer, "the whole answer")
            } else {
                (Instant::now() + limit, limit, what)
            };
            let next = match carried.take() {
                Some(event) => Ok(event),
                None => tokio::select! {
                    next = tokio::time::timeout_at(until, tokens.next()) => next,
                    _ = shutting_down(&mut shutdown) => {
                        drop(std::mem::replace(&mut tokens, Box::pin(futures::stream::empty())));
                        guard.finish(FinishReason::Cancelled);
                        yield error("shutting_down", "the server is shutting down");
                        yield ChatEvent::Done(DoneEvent {
                            finish_reason: FinishReason::Cancelled,
                            usage: Usage { prompt_tokens, completion_tokens: deltas },
                            timings: timings(started, first_token_at, deltas),
                            tool_calls: Vec::new(),
                        });
                        break;
                    }
                },
            };
            match next {
                Ok(Some(Ok(EngineEvent::Delta(text)))) => {
                    if first_token_at.is_none() {
                        first_token_at = Some(Instant::now());
                    }
                    deltas += 1;
                    let (mut shown, mut stopped) = stop.push(&text);
                    // Deltas already waiting mean the client fell behind:
                    // they go out as one event. A client that keeps up gets
                    // every token on its own.
                    while !stopped {
                        match tokens.next().now_or_never() {
                            Some(Some(Ok(EngineEvent::Delta(more)))) => {
                                deltas += 1;
                                let (more_shown, more_stopped) = stop.push(&more);
                                shown.push_str(&more_shown);
                                stopped = more_stopped;
                            }
                            Some(other) => {
                                carried = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    if !shown.is_empty() {
                        yield ChatEvent::Delta(DeltaEvent { text: shown });
                    }
                    if stopped {
                        // A stop string: the answer ends here; the engine
                        // stream is dropped, so generation stops too.
                        drop(std::mem::replace(&mut tokens, Box::pin(futures::stream::empty())));
                        guard.finish(FinishReason::Stop);
                        yield ChatEvent::Done(DoneEvent {
                            finish_reason: FinishReason::Stop,
                            usage: Usage { prompt_tokens, completion_tokens: deltas },
                            timings: timings(started, first_token_at, deltas),
                            tool_calls: Vec::new(),
                        });
                        break;
                    }
                }
                Ok(Some(Ok(EngineEvent::Timings(t)))) => {
                    own_timings = Some(t);
                }
                Ok(Some(Ok(EngineEvent::ToolCalls(calls)))) => {
                    tool_calls.extend(calls);
                }
                Ok(Some(Ok(EngineEvent::Done { reason, usage }))) => {
                    let rest = stop.finish();
                    if !rest.is_empty() {
                        yield ChatEvent::Delta(DeltaEvent { text: rest });
                    }
                    guard.finish(reason);
                    let usage = if usage.completion_tokens == 0 && deltas > 0 {
                        Usage { prompt_tokens, completion_tokens: deltas }
                    } else {
                        usage
                    };
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: reason,
                        usage,
                        timings: measured_timings(
                            started,
                            first_token_at,
                            usage.completion_tokens,
                            own_timings,
                        ),
                        tool_calls: std::mem::take(&mut tool_calls),
                    });
                    break;
                }
                Ok(Some(Err(err @ EngineError::Upstream { .. }))) => {
                    // An upstream that fails (mid-answer, or on every
                    // replica before it) ends the answer with an error and
                    // a `done`: what came before it stays.
                    let rest = stop.finish();
                    if !rest.is_empty() {
                        yield ChatEvent::Delta(DeltaEvent { text: rest });
                    }
                    guard.finish(FinishReason::Error);
                    yield error("upstream", err.to_string());
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: FinishReason::Error,
                        usage: Usage { prompt_tokens, completion_tokens: deltas },
                        timings: timings(started, first_token_at, deltas),
                        tool_calls: Vec::new(),
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
                    yield error(
                        "timeout",
                        format!("timed out after {:.1} s waiting for {what}", limit.as_secs_f64()),
                    );
                    yield ChatEvent::Done(DoneEvent {
                        finish_reason: FinishReason::Timeout,
                        usage: Usage { prompt_tokens, completion_tokens: deltas },
                        timings: timings(started, first_token_at, deltas),
                        tool_calls: Vec::new(),
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
    measured_timings(started, first, completion_tokens, None)
}

/// [`timings`], with the engine's own figures where it gave them: its
/// decode time sets the speed (tokens over decode time, as Ollama counts).
fn measured_timings(
    started: Instant,
    first: Option<Instant>,
    completion_tokens: usize,
    own: Option<UpstreamTimings>,
) -> Timings {
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
    let own = own.unwrap_or_default();
    let tokens_per_second = match own.decode_ms {
        Some(ms) if ms > 0.0 && completion_tokens > 0 => completion_tokens as f64 / (ms / 1000.0),
        _ => tokens_per_second,
    };
    Timings {
        ttft_ms: ttft,
        tokens_per_second,
        prompt_ms: own.prompt_ms,
        decode_ms: own.decode_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn meta() -> MetaEvent {
        MetaEvent {
            model: "m".into(),
            context_window: 100,
            model_context_window: 100,
            prompt_tokens: 7,
            trimmed_messages: 0,
            trimmed_for_time: false,
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

    /// Relays `items`, all available at once.
    async fn run(items: Vec<Result<EngineEvent, EngineError>>) -> (Vec<ChatEvent>, Metrics) {
        relay_all(Box::pin(futures::stream::iter(items))).await
    }

    /// Relays a whole engine stream.
    async fn relay_all(tokens: TokenStream) -> (Vec<ChatEvent>, Metrics) {
        let metrics = Metrics::new();
        let (_tx, rx) = watch::channel(false);
        let events = relay(
            meta(),
            tokens,
            metrics.stream_started(),
            timeouts(1000),
            Instant::now(),
            rx,
            StopFilter::default(),
        )
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
                usage: Usage {
                    prompt_tokens: 7,
                    completion_tokens: 2,
                },
            }),
        ])
        .await;
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        // Both deltas were waiting at once: one event carries them.
        assert_eq!(names, ["meta", "delta", "done"]);
        assert!(matches!(&events[1], ChatEvent::Delta(d) if d.text == "Hello"));
        assert!(matches!(&events[2], ChatEvent::Done(d) if d.usage.completion_tokens == 2));
        assert_eq!(metrics.finished_total(FinishReason::Stop), 1);
        assert_eq!(metrics.active_streams(), 0);
    }

    #[tokio::test]
    async fn a_client_that_keeps_up_gets_every_token_on_its_own() {
        let items: Vec<Result<EngineEvent, EngineError>> = vec![
            Ok(EngineEvent::Delta("Hel".into())),
            Ok(EngineEvent::Delta("lo".into())),
            Ok(EngineEvent::Delta("!".into())),
            Ok(EngineEvent::Done {
                reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 7,
                    completion_tokens: 3,
                },
            }),
        ];
        // Each event comes a little after the last, as from a real engine.
        let tokens: TokenStream = Box::pin(futures::stream::iter(items).then(|item| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            item
        }));
        let (events, _) = relay_all(tokens).await;
        let texts: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ChatEvent::Delta(d) => Some(d.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["Hel", "lo", "!"]);
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
        let events: Vec<_> = relay(
            meta(),
            tokens,
            metrics.stream_started(),
            timeouts(50),
            Instant::now(),
            rx,
            StopFilter::default(),
        )
        .collect()
        .await;
        let names: Vec<_> = events.iter().map(ChatEvent::name).collect();
        assert_eq!(names, ["meta", "error", "done"]);
        assert!(matches!(&events[1], ChatEvent::Error(e) if e.code == "timeout"));
        assert!(
            matches!(&events[2], ChatEvent::Done(d) if d.finish_reason == FinishReason::Timeout)
        );
        assert_eq!(metrics.finished_total(FinishReason::Timeout), 1);
    }

    #[tokio::test]
    async fn shutdown_ends_open_answers_with_a_final_event() {
        let metrics = Metrics::new();
        let tokens: TokenStream = Box::pin(futures::stream::pending());
        let (tx, rx) = watch::channel(false);
        let events = tokio::spawn(
            relay(
                meta(),
                tokens,
                metrics.stream_started(),
                timeouts(60_000),
                Instant::now(),
                rx,
                StopFilter::default(),
            )
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

    #[test]
    fn stop_strings_end_the_text_and_are_never_shown() {
        let mut f = StopFilter::new(vec!["<|end|>".into(), "User:".into()]);
        assert_eq!(f.push("Hello"), ("Hello".into(), false));
        assert_eq!(
            f.push(" wor<|e"),
            (" wor".into(), false),
            "a possible start is held back"
        );
        assert_eq!(f.push("nd|> tail"), (String::new(), true));
        let mut f = StopFilter::new(vec!["User:".into()]);
        assert_eq!(f.push("a Us"), ("a ".into(), false));
        assert_eq!(
            f.push("e the"),
            ("Use the".into(), false),
            "not a stop after all"
        );
        assert_eq!(f.push(" end U"), (" end ".into(), false));
        assert_eq!(f.finish(), "U");
        let mut none = StopFilter::new(vec![]);
        assert_eq!(none.push("x"), ("x".into(), false));
    }
}

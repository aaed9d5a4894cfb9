//! Prometheus metrics: streams started, finished by reason, active now,
//! tokens generated, and engine processes stopped because they held a
//! prompt nobody wanted any more. They let anyone check cancellation from
//! outside.

use app::api::FinishReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Label of the finished-streams counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The server's counters; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    started: Counter,
    finished: Family<ReasonLabel, Counter>,
    active: Gauge,
    tokens: Counter,
    engine_restarts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh counters, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kinko");
        let started = Counter::default();
        let finished = Family::<ReasonLabel, Counter>::default();
        let active = Gauge::default();
        let tokens = Counter::default();
        let engine_restarts = Counter::default();
        registry.register(
            "engine_restarts",
            "Engine processes stopped (and started again) to drop a prompt whose client was gone",
            engine_restarts.clone(),
        );
        registry.register("streams_started", "Chat streams started", started.clone());
        registry.register(
            "streams_finished",
            "Chat streams finished, by reason",
            finished.clone(),
        );
        registry.register("streams_active", "Chat streams open now", active.clone());
        registry.register(
            "tokens_generated",
            "Tokens produced by the engines",
            tokens.clone(),
        );
        for reason in FinishReason::ALL {
            // Touch every label so the exposition shows zeros.
            let _ = finished.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                started,
                finished,
                active,
                tokens,
                engine_restarts,
            }),
        }
    }

    /// A stream opened; the returned guard counts it as active until it is
    /// finished or dropped (a drop without `finish` counts as cancelled).
    pub fn stream_started(&self) -> StreamGuard {
        self.inner.started.inc();
        self.inner.active.inc();
        StreamGuard {
            metrics: self.clone(),
            finished: false,
        }
    }

    /// The engine produced `n` tokens.
    pub fn tokens_generated(&self, n: u64) {
        self.inner.tokens.inc_by(n);
    }

    /// An engine process was stopped to drop an abandoned prompt.
    pub fn engine_restarted(&self) {
        self.inner.engine_restarts.inc();
    }

    /// Engine processes stopped so far to drop abandoned prompts.
    pub fn engine_restarts(&self) -> u64 {
        self.inner.engine_restarts.get()
    }

    /// Total tokens generated so far.
    pub fn tokens_total(&self) -> u64 {
        self.inner.tokens.get()
    }

    /// Streams open now.
    pub fn active_streams(&self) -> i64 {
        self.inner.active.get()
    }

    /// Streams that ended with `reason` so far.
    pub fn finished_total(&self, reason: FinishReason) -> u64 {
        self.inner
            .finished
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Keeps one stream counted as active; records how it finished.
pub struct StreamGuard {
    metrics: Metrics,
    finished: bool,
}

impl StreamGuard {
    /// Record the end of the stream (once; later calls do nothing).
    pub fn finish(&mut self, reason: FinishReason) {
        if self.finished {
            return;
        }
        self.finished = true;
        let inner = &self.metrics.inner;
        inner.active.dec();
        inner
            .finished
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.finish(FinishReason::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_stream_counts_as_cancelled() {
        let m = Metrics::new();
        {
            let _g = m.stream_started();
            assert_eq!(m.active_streams(), 1);
        }
        assert_eq!(m.active_streams(), 0);
        assert_eq!(m.finished_total(FinishReason::Cancelled), 1);
        let mut g = m.stream_started();
        g.finish(FinishReason::Stop);
        g.finish(FinishReason::Error);
        drop(g);
        assert_eq!(m.finished_total(FinishReason::Stop), 1);
        assert_eq!(m.finished_total(FinishReason::Error), 0);
        assert_eq!(m.finished_total(FinishReason::Cancelled), 1);
        let text = m.render();
        assert!(text.contains("kinko_streams_started_total 2"), "{text}");
        assert!(
            text.contains("kinko_streams_finished_total{reason=\"timeout\"} 0"),
            "{text}"
        );
        assert!(text.contains("kinko_streams_active 0"), "{text}");
    }
}

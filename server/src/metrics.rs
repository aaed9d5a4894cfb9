//! Prometheus metrics: streams started, finished by reason, active now,
//! tokens generated, and engine processes stopped because they held a
//! prompt nobody wanted any more. They let anyone check cancellation from
//! outside.

use app::api::FinishReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Label of the finished-streams counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Labels of the per-upstream metrics: the upstream's prefix and the
/// replica's host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// The prefix its models are listed under.
    pub upstream: String,
    /// The replica's `host:port`.
    pub replica: String,
}

/// Labels of the per-upstream error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabel {
    upstream: String,
    replica: String,
    kind: &'static str,
}

/// The kinds of upstream errors counted.
pub const UPSTREAM_ERROR_KINDS: [&str; 5] = ["connect", "status", "key", "stream", "midstream"];

fn ttft_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
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
    upstream_requests: Family<UpstreamLabel, Counter>,
    upstream_errors: Family<UpstreamErrorLabel, Counter>,
    upstream_in_flight: Family<UpstreamLabel, Gauge>,
    upstream_up: Family<UpstreamLabel, Gauge>,
    upstream_ttft: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    embed_requests: Counter,
    embed_inputs: Counter,
    embed_tokens: Counter,
    embed_seconds: Histogram,
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
        let upstream_requests = Family::<UpstreamLabel, Counter>::default();
        let upstream_errors = Family::<UpstreamErrorLabel, Counter>::default();
        let upstream_in_flight = Family::<UpstreamLabel, Gauge>::default();
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        let upstream_ttft =
            Family::<UpstreamLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                ttft_histogram,
            );
        registry.register(
            "upstream_requests",
            "Requests sent to upstream engines, per replica",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures, per replica and kind (connect, status, key, stream: before the first token, midstream: after it)",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "Requests open at each upstream replica now",
            upstream_in_flight.clone(),
        );
        registry.register(
            "upstream_up",
            "Whether each upstream replica passed its last check (1) or is taken out (0)",
            upstream_up.clone(),
        );
        registry.register(
            "upstream_time_to_first_token_seconds",
            "Seconds from sending a request to an upstream replica to its first token",
            upstream_ttft.clone(),
        );
        let embed_requests = Counter::default();
        let embed_inputs = Counter::default();
        let embed_tokens = Counter::default();
        let embed_seconds = ttft_histogram();
        registry.register(
            "embed_requests",
            "Embedding requests answered",
            embed_requests.clone(),
        );
        registry.register(
            "embed_inputs",
            "Texts turned into vectors",
            embed_inputs.clone(),
        );
        registry.register(
            "embed_tokens",
            "Tokens read by the embedding models",
            embed_tokens.clone(),
        );
        registry.register(
            "embed_seconds",
            "Seconds an embedding request computed (loading left out)",
            embed_seconds.clone(),
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
                upstream_requests,
                upstream_errors,
                upstream_in_flight,
                upstream_up,
                upstream_ttft,
                embed_requests,
                embed_inputs,
                embed_tokens,
                embed_seconds,
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

    /// An embedding request turned `inputs` texts of `tokens` tokens into
    /// vectors in `took`.
    pub fn record_embeddings(&self, inputs: usize, tokens: usize, took: std::time::Duration) {
        self.inner.embed_requests.inc();
        self.inner.embed_inputs.inc_by(inputs as u64);
        self.inner.embed_tokens.inc_by(tokens as u64);
        self.inner.embed_seconds.observe(took.as_secs_f64());
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

    /// Show an upstream replica in the metrics (all counters at zero).
    pub fn upstream_known(&self, replica: &UpstreamLabel) {
        let i = &self.inner;
        let _ = i.upstream_requests.get_or_create(replica);
        let _ = i.upstream_in_flight.get_or_create(replica);
        let _ = i.upstream_up.get_or_create(replica);
        let _ = i.upstream_ttft.get_or_create(replica);
        for kind in UPSTREAM_ERROR_KINDS {
            let _ = i.upstream_errors.get_or_create(&UpstreamErrorLabel {
                upstream: replica.upstream.clone(),
                replica: replica.replica.clone(),
                kind,
            });
        }
    }

    /// A request went to an upstream replica.
    pub fn upstream_request(&self, replica: &UpstreamLabel) {
        self.inner.upstream_requests.get_or_create(replica).inc();
    }

    /// Requests sent to an upstream replica so far.
    pub fn upstream_requests(&self, replica: &UpstreamLabel) -> u64 {
        self.inner.upstream_requests.get_or_create(replica).get()
    }

    /// An upstream replica failed (`kind`: one of [`UPSTREAM_ERROR_KINDS`]).
    pub fn upstream_error(&self, replica: &UpstreamLabel, kind: &'static str) {
        self.inner
            .upstream_errors
            .get_or_create(&UpstreamErrorLabel {
                upstream: replica.upstream.clone(),
                replica: replica.replica.clone(),
                kind,
            })
            .inc();
    }

    /// Requests open at an upstream replica: one more (`+1`) or one fewer (`-1`).
    pub fn upstream_in_flight(&self, replica: &UpstreamLabel, change: i64) {
        self.inner
            .upstream_in_flight
            .get_or_create(replica)
            .inc_by(change);
    }

    /// Whether an upstream replica is in service.
    pub fn upstream_up(&self, replica: &UpstreamLabel, up: bool) {
        self.inner
            .upstream_up
            .get_or_create(replica)
            .set(i64::from(up));
    }

    /// An upstream replica's time to first token.
    pub fn upstream_first_token(&self, replica: &UpstreamLabel, secs: f64) {
        self.inner
            .upstream_ttft
            .get_or_create(replica)
            .observe(secs);
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

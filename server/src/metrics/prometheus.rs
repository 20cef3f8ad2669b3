//! Prometheus (`kinto.plugins.prometheus`): `GET /v1/__metrics__` in the text format.
//!
//! Requests are counted and timed by endpoint (Kinto's route names: `record-object`,
//! `collection-plural`, `batch`…), method and status; the engine reports each group commit and
//! flush (histograms); the log head, listener lag and the live streams are read when scraped.

use std::sync::atomic::{AtomicI64, Ordering};

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tidemark_engine::Engine;

use super::{STREAM_CONNECTIONS, STREAM_ERRORS, STREAM_HUB_LAGGED, STREAM_QUEUE_DEEPEST, STREAM_QUEUE_FULL};

pub struct Prometheus {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    commit_events: Histogram,
    commit_seconds: Histogram,
    flush_seconds: Histogram,
    head_seq: IntGauge,
    view_lag: IntGauge,
    listener_lag: IntGaugeVec,
    gauges: Vec<(&'static AtomicI64, IntGauge)>,
}

impl Prometheus {
    pub fn new() -> Result<Prometheus, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tidemark_requests_total", "HTTP requests answered"),
            &["endpoint", "method", "status"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new("tidemark_request_duration_seconds", "Time to answer an HTTP request"),
            &["endpoint", "method"],
        )?;
        let commit_events = Histogram::with_opts(
            HistogramOpts::new("tidemark_commit_events", "Events written by one group commit (one storage batch)")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new("tidemark_commit_apply_seconds", "Time to apply one group commit to the storage")
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16)?),
        )?;
        let flush_seconds = Histogram::with_opts(
            HistogramOpts::new("tidemark_flush_seconds", "Time to make applied commits durable (one flush)")
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16)?),
        )?;
        let head_seq = IntGauge::new("tidemark_log_head_seq", "Seq of the newest event in the log")?;
        let view_lag = IntGauge::new("tidemark_view_lag_events", "Events in the log the views have not applied")?;
        let listener_lag = IntGaugeVec::new(
            Opts::new("tidemark_listener_lag_events", "Events in the log a listener has not handled yet"),
            &["listener"],
        )?;
        let gauges = vec![
            (&STREAM_CONNECTIONS, IntGauge::new("tidemark_stream_connections", "Live WebSocket and SSE connections")?),
            (
                &STREAM_ERRORS,
                IntGauge::new("tidemark_stream_errors_total", "Changes streams could not build or read from the log")?,
            ),
            (
                &STREAM_HUB_LAGGED,
                IntGauge::new("tidemark_stream_hub_lagged_total", "Times the stream hub read the log to catch up")?,
            ),
            (
                &STREAM_QUEUE_FULL,
                IntGauge::new(
                    "tidemark_stream_queue_full_total",
                    "Times a subscriber's queue was full (it is then fed from the log)",
                )?,
            ),
            (
                &STREAM_QUEUE_DEEPEST,
                IntGauge::new(
                    "tidemark_stream_queue_deepest_frames",
                    "Deepest subscriber queue seen since the previous scrape",
                )?,
            ),
        ];
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(commit_events.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(flush_seconds.clone()))?;
        registry.register(Box::new(head_seq.clone()))?;
        registry.register(Box::new(view_lag.clone()))?;
        registry.register(Box::new(listener_lag.clone()))?;
        for (_, gauge) in &gauges {
            registry.register(Box::new(gauge.clone()))?;
        }
        Ok(Prometheus {
            registry,
            requests,
            durations,
            commit_events,
            commit_seconds,
            flush_seconds,
            head_seq,
            view_lag,
            listener_lag,
            gauges,
        })
    }

    pub fn observe(&self, endpoint: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests.with_label_values(&[endpoint, method, &status.to_string()]).inc();
        self.durations.with_label_values(&[endpoint, method]).observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, engine: &Engine) -> Result<Vec<u8>, tidemark_engine::EngineError> {
        let health = engine.health()?;
        let head = health.last_seq;
        self.head_seq.set(i64::try_from(head).unwrap_or(i64::MAX));
        self.view_lag.set(i64::try_from(head.saturating_sub(health.views_seq)).unwrap_or(i64::MAX));
        for (name, cursor) in engine.listener_cursors()? {
            let lag = i64::try_from(head.saturating_sub(cursor)).unwrap_or(i64::MAX);
            self.listener_lag.with_label_values(&[name.as_str()]).set(lag);
        }
        for (source, gauge) in &self.gauges {
            gauge.set(source.load(Ordering::Relaxed));
        }
        STREAM_QUEUE_DEEPEST.store(0, Ordering::Relaxed);
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "metrics not encoded");
        }
        Ok(out)
    }
}

/// The engine's write path, as histograms.
impl tidemark_engine::Observer for Prometheus {
    fn applied(&self, events: usize, took: Duration) {
        self.commit_events.observe(events as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    fn flushed(&self, took: Duration) {
        self.flush_seconds.observe(took.as_secs_f64());
    }
}

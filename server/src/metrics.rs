//! Prometheus metrics (`kinto.plugins.prometheus`): `GET /v1/__metrics__` in the text format.
//!
//! Requests are counted and timed by endpoint (Kinto's route names: `record-object`,
//! `collection-plural`, `batch`…), method and status; the engine's log head and the live
//! stream connections are read when scraped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Live WebSocket and SSE connections.
pub static STREAM_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
/// Changes a stream could not build or read from the log (logged as they happen).
pub static STREAM_ERRORS: AtomicI64 = AtomicI64::new(0);

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    head_seq: IntGauge,
    streams: IntGauge,
    stream_errors: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tidemark_requests_total", "HTTP requests answered"),
            &["endpoint", "method", "status"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new("tidemark_request_duration_seconds", "Time to answer an HTTP request"),
            &["endpoint", "method"],
        )?;
        let head_seq = IntGauge::new("tidemark_log_head_seq", "Seq of the newest event in the log")?;
        let streams = IntGauge::new("tidemark_stream_connections", "Live WebSocket and SSE connections")?;
        let stream_errors =
            IntGauge::new("tidemark_stream_errors_total", "Changes streams could not build or read from the log")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(head_seq.clone()))?;
        registry.register(Box::new(streams.clone()))?;
        registry.register(Box::new(stream_errors.clone()))?;
        Ok(Metrics { registry, requests, durations, head_seq, streams, stream_errors })
    }

    pub fn observe(&self, endpoint: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests.with_label_values(&[endpoint, method, &status.to_string()]).inc();
        self.durations.with_label_values(&[endpoint, method]).observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, head_seq: u64) -> Vec<u8> {
        self.head_seq.set(i64::try_from(head_seq).unwrap_or(i64::MAX));
        self.streams.set(STREAM_CONNECTIONS.load(Ordering::Relaxed));
        self.stream_errors.set(STREAM_ERRORS.load(Ordering::Relaxed));
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "metrics not encoded");
        }
        out
    }
}

/// Counts a stream connection while it lives, in the process's gauge and in its server's own
/// count (which shutdown waits on).
pub struct StreamConnection(std::sync::Arc<AtomicI64>);

impl StreamConnection {
    pub fn open(server: &std::sync::Arc<AtomicI64>) -> StreamConnection {
        STREAM_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        server.fetch_add(1, Ordering::AcqRel);
        StreamConnection(std::sync::Arc::clone(server))
    }
}

impl Drop for StreamConnection {
    fn drop(&mut self) {
        STREAM_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

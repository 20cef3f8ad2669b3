//! Metrics: what the server and its engine measure, exported to Prometheus (scraped at
//! `/__metrics__`) and/or pushed to StatsD (`statsd_url`).

mod prometheus;
mod statsd;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tidemark_engine::Engine;

use crate::settings::{Plugin, Settings};

/// Live WebSocket and SSE connections.
pub static STREAM_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
/// Changes a stream could not build or read from the log (logged as they happen).
pub static STREAM_ERRORS: AtomicI64 = AtomicI64::new(0);
/// Times the stream hub fell behind the engine's bus and read the log to catch up.
pub static STREAM_HUB_LAGGED: AtomicI64 = AtomicI64::new(0);
/// Times a socket's queue was full: its subscriptions are fed from the log until they catch up.
pub static STREAM_QUEUE_FULL: AtomicI64 = AtomicI64::new(0);
/// The deepest socket queue (frames waiting) seen since the last scrape.
pub static STREAM_QUEUE_DEEPEST: AtomicI64 = AtomicI64::new(0);

/// The exporters the settings turn on; `None` from [`Metrics::from_settings`] when neither is.
pub struct Metrics {
    prometheus: Option<prometheus::Prometheus>,
    statsd: Option<statsd::Statsd>,
}

impl Metrics {
    pub fn from_settings(settings: &Settings) -> Result<Option<Metrics>, String> {
        let prometheus = match settings.plugins.contains(&Plugin::Prometheus) {
            true => Some(prometheus::Prometheus::new().map_err(|e| format!("metrics not started: {e}"))?),
            false => None,
        };
        let statsd = match &settings.statsd_url {
            Some(url) => Some(statsd::Statsd::connect(url, &settings.statsd_prefix)?),
            None => None,
        };
        Ok((prometheus.is_some() || statsd.is_some()).then_some(Metrics { prometheus, statsd }))
    }

    /// One answered request, by endpoint (Kinto's route name), method and status.
    pub fn observe(&self, endpoint: &str, method: &str, status: u16, elapsed: Duration) {
        if let Some(prometheus) = &self.prometheus {
            prometheus.observe(endpoint, method, status, elapsed);
        }
        if let Some(statsd) = &self.statsd {
            statsd.observe(endpoint, method, status, elapsed);
        }
    }

    /// Prometheus' text exposition (empty without the plugin).
    pub fn render(&self, engine: &Engine) -> Result<Vec<u8>, tidemark_engine::EngineError> {
        match &self.prometheus {
            Some(prometheus) => prometheus.render(engine),
            None => Ok(Vec::new()),
        }
    }
}

impl tidemark_engine::Observer for Metrics {
    fn applied(&self, events: usize, took: Duration) {
        if let Some(prometheus) = &self.prometheus {
            prometheus.applied(events, took);
        }
        if let Some(statsd) = &self.statsd {
            statsd.applied(events, took);
        }
    }

    fn flushed(&self, took: Duration) {
        if let Some(prometheus) = &self.prometheus {
            prometheus.flushed(took);
        }
        if let Some(statsd) = &self.statsd {
            statsd.flushed(took);
        }
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

//! How an embedding application watches the write path: an [`Observer`] told of every group
//! commit and flush, and the latest figures kept for health checks ([`Engine::health`]).
//!
//! [`Engine::health`]: crate::Engine::health

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Called on the writer and flusher threads: implementations must be quick and never block
/// (a metrics histogram, an atomic).
pub trait Observer: Send + Sync {
    /// A group of writes was applied to the storage as one atomic batch.
    fn applied(&self, _events: usize, _took: Duration) {}
    /// A flush made every applied batch durable.
    fn flushed(&self, _took: Duration) {}
}

/// What a health check wants to know about the engine.
#[derive(Debug, Clone)]
pub struct Health {
    /// Why writes are refused (fail-stop after a storage error), if they are.
    pub failure: Option<String>,
    /// The newest seq in the log.
    pub last_seq: u64,
    /// The lowest seq every view has applied: `last_seq` minus this is the views' lag (0 but
    /// while a crash's tail is being replayed: views are written in the log's own batch).
    pub views_seq: u64,
    /// How long the latest flush took, once one has run.
    pub last_flush: Option<Duration>,
}

/// The engine's side of observation: the application's observer, once it sets one, and the
/// gauges.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    observer: Arc<OnceLock<Arc<dyn Observer>>>,
    /// Microseconds of the latest flush, plus one (0: none yet).
    last_flush: Arc<AtomicU64>,
}

impl Probe {
    /// Sets the observer; false if one was set already.
    pub fn observe(&self, observer: Arc<dyn Observer>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Runs a storage apply of `events` events, timing it.
    pub fn apply<T>(&self, events: usize, apply: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = apply();
        if let Some(observer) = self.observer.get() {
            observer.applied(events, started.elapsed());
        }
        out
    }

    /// Runs a flush, timing it.
    pub fn flush<T>(&self, flush: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = flush();
        let took = started.elapsed();
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        self.last_flush.store(micros + 1, Ordering::Relaxed);
        if let Some(observer) = self.observer.get() {
            observer.flushed(took);
        }
        out
    }

    pub fn last_flush(&self) -> Option<Duration> {
        match self.last_flush.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_micros(n - 1)),
        }
    }
}

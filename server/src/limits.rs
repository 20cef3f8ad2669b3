//! Protection against overload: a bound on requests served at once (load shedding, 503) and a
//! token bucket per principal (rate limiting, 429), both off unless configured. The buckets are
//! in the cache backend: with Redis, a principal's rate holds across the servers sharing it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::Cache;

pub struct Limits {
    concurrency: Option<Arc<Semaphore>>,
    rate: f64,
    burst: f64,
    cache: Arc<dyn Cache>,
}

impl Limits {
    pub fn new(settings: &crate::settings::Settings, cache: Arc<dyn Cache>) -> Limits {
        Limits {
            concurrency: (settings.max_concurrent_requests > 0)
                .then(|| Arc::new(Semaphore::new(settings.max_concurrent_requests))),
            rate: settings.rate_limit_per_second,
            burst: settings.rate_limit_burst,
            cache,
        }
    }

    /// A place among the requests served at once: `Err(())` when they are all taken.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.concurrency {
            None => Ok(None),
            Some(semaphore) => Arc::clone(semaphore).try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }

    /// Takes a token from `principal`'s bucket; `Err(seconds)` until the next one when empty. A
    /// cache that cannot be reached limits nobody (it is logged): rate limiting is protection,
    /// not a reason to refuse service.
    pub fn take(&self, principal: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        match self.cache.take_token(&format!("ratelimit:{principal}"), self.rate, self.burst) {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(error = %err, "rate limit not applied");
                Ok(())
            }
        }
    }
}

/// Kinto's answer to a client over its limit: 429 errno 999, with when to retry.
pub fn too_many_requests(wait_seconds: u64, message: &str) -> tidemark_protocol::ApiError {
    let mut err = tidemark_protocol::ApiError::new(429, tidemark_protocol::Errno::Undefined, Some(message.into()))
        .with_header("Retry-After", wait_seconds.max(1).to_string());
    err.error = "Too Many Requests".into();
    err
}

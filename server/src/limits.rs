//! Protection against overload: a bound on requests served at once (load shedding, 503) and a
//! token bucket per principal (rate limiting, 429), both off unless configured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Principals remembered at most; beyond it idle buckets (full again) are forgotten.
const MAX_BUCKETS: usize = 100_000;

pub struct Limits {
    concurrency: Option<Arc<Semaphore>>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limits {
    pub fn new(settings: &crate::settings::Settings) -> Limits {
        Limits {
            concurrency: (settings.max_concurrent_requests > 0)
                .then(|| Arc::new(Semaphore::new(settings.max_concurrent_requests))),
            rate: settings.rate_limit_per_second,
            burst: settings.rate_limit_burst,
            buckets: Mutex::default(),
        }
    }

    /// A place among the requests served at once: `Err(())` when they are all taken.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.concurrency {
            None => Ok(None),
            Some(semaphore) => Arc::clone(semaphore).try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }

    /// Takes a token from `principal`'s bucket; `Err(seconds)` until the next one when empty.
    pub fn take(&self, principal: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(principal.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

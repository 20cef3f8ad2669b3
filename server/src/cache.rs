//! The cache backend (Kinto's `cache_backend`): short-lived values the servers of one service
//! share — verified account logins, rate-limit buckets, the nonces of plural DELETEs'
//! `Next-Page` tokens. In memory for one server (the default), in Redis for several, so that a
//! token one server hands out works on another and a rate limit holds across them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The cache could not be reached or answered nonsense.
#[derive(Debug)]
pub struct CacheError(pub String);

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache backend: {}", self.0)
    }
}

/// A cache failure is the backend's: 503 errno 201 with `Retry-After`, as for the storage.
pub fn cache_error(err: CacheError) -> tidemark_protocol::ApiError {
    tracing::error!(error = %err, "cache failure");
    tidemark_protocol::ApiError::backend_unavailable(crate::error::RETRY_AFTER_SECONDS)
}

/// Called from request handlers: each call is one round trip at most.
pub trait Cache: Send + Sync {
    /// Keeps `value` under `key` for `ttl`.
    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Removes `key` and returns what it held: of two takers, one gets the value.
    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Takes a token from the bucket `key`, refilled at `rate` a second up to `burst` (full at
    /// first): `Ok(Err(seconds))` until the next token when it is empty.
    fn take_token(&self, key: &str, rate: f64, burst: f64) -> Result<Result<(), u64>, CacheError>;
    /// Whether the cache answers (the heartbeat's `cache`).
    fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// The cache the settings name. Redis is reached lazily: a server starts while Redis is down,
/// its heartbeat says so, and requests that need the cache get 503 until it is back.
pub fn from_settings(settings: &crate::settings::Settings) -> Result<std::sync::Arc<dyn Cache>, CacheError> {
    Ok(match settings.cache_backend {
        crate::settings::CacheBackend::Memory => std::sync::Arc::new(MemoryCache::default()),
        crate::settings::CacheBackend::Redis => {
            let url = settings.cache_url.as_deref().unwrap_or_default();
            std::sync::Arc::new(RedisCache::open(url, &settings.cache_prefix)?)
        }
    })
}

/// Entries (values and buckets) a memory cache keeps at most; past it, expired values and
/// full buckets are forgotten, then the soonest to expire.
const MAX_ENTRIES: usize = 100_000;

/// One server's cache.
#[derive(Default)]
pub struct MemoryCache {
    values: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Cache for MemoryCache {
    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut values = self.values.lock();
        if values.len() >= MAX_ENTRIES {
            values.retain(|_, (_, expiry)| *expiry > now);
        }
        if values.len() >= MAX_ENTRIES {
            if let Some(soonest) = values.iter().min_by_key(|(_, (_, expiry))| *expiry).map(|(k, _)| k.clone()) {
                values.remove(&soonest);
            }
        }
        values.insert(key.to_owned(), (value.to_vec(), now + ttl));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let values = self.values.lock();
        Ok(values.get(key).filter(|(_, expiry)| *expiry > Instant::now()).map(|(value, _)| value.clone()))
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let taken = self.values.lock().remove(key);
        Ok(taken.filter(|(_, expiry)| *expiry > Instant::now()).map(|(value, _)| value))
    }

    fn take_token(&self, key: &str, rate: f64, burst: f64) -> Result<Result<(), u64>, CacheError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_ENTRIES {
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(Ok(()));
        }
        Ok(Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64))
    }
}

/// The token bucket, atomically in Redis on Redis's clock: the bucket's tokens and time are a
/// hash that expires once it would be full again. Returns "" when a token was taken, else the
/// seconds until the next one.
const TAKE_TOKEN: &str = r#"
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or burst
local at = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = ''
if tokens >= 1 then tokens = tokens - 1 else wait = tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return wait
"#;

/// Connections kept for reuse.
const IDLE_CONNECTIONS: usize = 8;

/// Several servers' cache, in Redis (`cache_url = redis://host:port/db`). Keys carry
/// `cache_prefix`. A connection is opened when none is idle and dropped after an error.
pub struct RedisCache {
    client: redis::Client,
    prefix: String,
    idle: Mutex<Vec<redis::Connection>>,
    take_token: redis::Script,
}

impl RedisCache {
    /// The cache at `url`; nothing is connected yet.
    pub fn open(url: &str, prefix: &str) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError(format!("cache_url: {e}")))?;
        let take_token = redis::Script::new(TAKE_TOKEN);
        Ok(RedisCache { client, prefix: prefix.to_owned(), idle: Mutex::default(), take_token })
    }

    fn with<T>(&self, work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, CacheError> {
        let idle = self.idle.lock().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self
                .client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(|e| CacheError(e.to_string()))?,
        };
        let outcome = work(&mut connection).map_err(|e| CacheError(e.to_string()))?;
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
        Ok(outcome)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl Cache for RedisCache {
    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.with(|c| redis::cmd("SET").arg(self.key(key)).arg(value).arg("PX").arg(millis).query::<()>(c))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.with(|c| redis::cmd("GET").arg(self.key(key)).query(c))
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.with(|c| redis::cmd("GETDEL").arg(self.key(key)).query(c))
    }

    fn take_token(&self, key: &str, rate: f64, burst: f64) -> Result<Result<(), u64>, CacheError> {
        let wait: String = self.with(|c| self.take_token.key(self.key(key)).arg(rate).arg(burst).invoke(c))?;
        if wait.is_empty() {
            return Ok(Ok(()));
        }
        let seconds: f64 = wait.parse().map_err(|_| CacheError(format!("rate limit script answered {wait:?}")))?;
        Ok(Err(seconds.ceil().max(1.0) as u64))
    }

    fn ping(&self) -> Result<(), CacheError> {
        self.with(|c| redis::cmd("PING").query::<String>(c)).map(|_| ())
    }
}

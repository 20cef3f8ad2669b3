//! kinto.plugins.accounts' policy: `user:password` checked against the account's bcrypt hash.
//!
//! What a login costs, and who pays it:
//! - a user who is not an account is declined at once, as Kinto does, so the next policy of
//!   the chain (Basic Auth) costs its users nothing;
//! - a verified login is remembered for `account_cache_ttl_seconds` (one bcrypt per TTL);
//! - every other check is a bcrypt (a quarter of a second of CPU at Kinto's cost 12), so they
//!   run `account_password_checks` at once at most, the rest waiting up to
//!   [`CHECK_WAIT`] before 503 with `Retry-After`;
//! - failed logins are limited per account and client address
//!   (`account_login_failures_per_minute`) and per client address
//!   (`client_login_failures_per_minute`): past the limit, 429 without any hash
//!   work until the next is allowed, answered after [`LOCKED_ANSWER_DELAY`], so a flood of bad
//!   passwords cannot take the CPU from valid users (whose verified logins are remembered and
//!   need no check).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidemark_engine::Engine;
use tidemark_protocol::ApiError;
use tokio::sync::Semaphore;

use super::{hmac_hex, parse_basic, Identified, Policy, BASIC_CHALLENGE};
use crate::cache::{cache_error, Cache};
use crate::error::{from_engine, RETRY_AFTER_SECONDS};
use crate::kinto::accounts::ACCOUNTS;
use crate::toolkit::BoxFuture;

/// How long a login refused for too many failures waits before its 429.
pub const LOCKED_ANSWER_DELAY: Duration = Duration::from_secs(1);

/// How long a password check waits for a place among those running before 503.
pub const CHECK_WAIT: Duration = Duration::from_secs(2);

/// How an account login is checked and limited.
pub struct AccountLimits {
    /// How long a verified login is remembered.
    pub cache_ttl: Duration,
    /// Failed logins allowed per minute (in a burst of as many) for one account, and for one
    /// client address, before 429 until the next is allowed; 0: no limit.
    pub account_failures_per_minute: u64,
    pub client_failures_per_minute: u64,
    /// Password checks running at once at most.
    pub concurrent_checks: usize,
}

/// A verified account login is remembered in the cache backend as `<account> <last_modified>`
/// (so any change to the account invalidates it); the failure buckets and locks live there too,
/// so limits hold across the servers sharing it.
pub struct AccountPolicy {
    name: String,
    hmac_secret: String,
    limits: AccountLimits,
    cache: Arc<dyn Cache>,
    checks: Arc<Semaphore>,
}

/// Whole seconds since the epoch.
fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A refusal for too many failures, answered late: a flood over its limit then costs a
/// sleeping task per connection, not a request's CPU per round trip.
async fn answer_late<T>(locked: ApiError) -> Result<T, ApiError> {
    tokio::time::sleep(LOCKED_ANSWER_DELAY).await;
    Err(locked)
}

impl AccountPolicy {
    pub fn new(name: &str, hmac_secret: String, limits: AccountLimits, cache: Arc<dyn Cache>) -> AccountPolicy {
        let checks = Arc::new(Semaphore::new(limits.concurrent_checks.max(1)));
        AccountPolicy { name: name.to_owned(), hmac_secret, limits, cache, checks }
    }

    /// The failure buckets a login counts against, with their limits: its account's as tried
    /// from its client address (so a flood from one address does not lock the account's owner
    /// out everywhere), and its client address's.
    fn failure_buckets(&self, user: &str, client: Option<IpAddr>) -> Vec<(String, u64)> {
        let mut buckets = Vec::new();
        if self.limits.account_failures_per_minute > 0 {
            let account = hmac_hex(&self.hmac_secret, user);
            let from = client.map_or_else(String::new, |ip| format!(":{ip}"));
            buckets.push((format!("account:{account}{from}"), self.limits.account_failures_per_minute));
        }
        if let Some(ip) = client.filter(|_| self.limits.client_failures_per_minute > 0) {
            buckets.push((format!("client:{ip}"), self.limits.client_failures_per_minute));
        }
        buckets
    }

    /// Refuses (429) a login whose account or client is locked, before any hash work.
    fn check_not_locked(&self, buckets: &[(String, u64)]) -> Result<(), ApiError> {
        let now = now_seconds();
        for (key, _) in buckets {
            let until = self.cache.get(&format!("login-locked:{key}")).map_err(cache_error)?;
            let until = until.and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok());
            if let Some(until) = until.filter(|until| *until > now) {
                return Err(crate::limits::too_many_requests(until - now, "Too many failed logins, retry later."));
            }
        }
        Ok(())
    }

    /// Counts a failed check. Each bucket holds one token fewer than its limit, so the failure
    /// that finds it empty is the limit's last: it locks the key until the next token.
    fn record_failure(&self, buckets: &[(String, u64)]) {
        for (key, per_minute) in buckets {
            let rate = *per_minute as f64 / 60.0;
            let taken = self.cache.take_token(&format!("login-failures:{key}"), rate, *per_minute as f64 - 1.0);
            match taken {
                Ok(Ok(())) => {}
                Ok(Err(wait)) => {
                    let wait = wait.max(1);
                    let until = (now_seconds() + wait).to_string();
                    let locked =
                        self.cache.set(&format!("login-locked:{key}"), until.as_bytes(), Duration::from_secs(wait));
                    if let Err(err) = locked {
                        tracing::error!(error = %err, "failed login not limited");
                    }
                }
                Err(err) => tracing::error!(error = %err, "failed login not counted"),
            }
        }
    }

    async fn verify(
        &self,
        engine: &Engine,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<String>, ApiError> {
        // A storage failure is a 503, never "unknown user". Not an account: the next policy's.
        let Some(account) = engine.get("", ACCOUNTS, user).map_err(from_engine)?.filter(|a| !a.deleted) else {
            return Ok(None);
        };
        // The cache key is an HMAC, so the cache never holds a password.
        let key = format!("account-login:{}", hmac_hex(&self.hmac_secret, &format!("{user}:{password}")));
        let remembered = format!("{user} {}", account.last_modified);
        if self.cache.get(&key).map_err(cache_error)?.is_some_and(|v| v == remembered.as_bytes()) {
            return Ok(Some(user.to_owned()));
        }
        let Some(hash) = account.data.get("password").and_then(|p| p.as_str()).map(str::to_owned) else {
            return Ok(None);
        };
        let buckets = self.failure_buckets(user, client);
        if let Err(locked) = self.check_not_locked(&buckets) {
            return answer_late(locked).await;
        }
        // bcrypt is slow on purpose: off the async workers, and a bounded number at once.
        let permit = match tokio::time::timeout(CHECK_WAIT, Arc::clone(&self.checks).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                let mut err = ApiError::backend_unavailable(RETRY_AFTER_SECONDS);
                err.message = Some("Too many logins being checked, please retry later.".into());
                return Err(err);
            }
        };
        // Failures counted while this one waited may have locked it out: its place goes to the
        // next at once.
        if let Err(locked) = self.check_not_locked(&buckets) {
            drop(permit);
            return answer_late(locked).await;
        }
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(password, &hash).unwrap_or(false);
            drop(permit);
            ok
        })
        .await
        .unwrap_or(false);
        if !ok {
            self.record_failure(&buckets);
            return Ok(None);
        }
        self.cache.set(&key, remembered.as_bytes(), self.limits.cache_ttl).map_err(cache_error)?;
        Ok(Some(user.to_owned()))
    }
}

impl Policy for AccountPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn identify<'a>(
        &'a self,
        engine: &'a Engine,
        authorization: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>> {
        self.identify_from(engine, authorization, None)
    }

    fn identify_from<'a>(
        &'a self,
        engine: &'a Engine,
        authorization: &'a str,
        client: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>> {
        Box::pin(async move {
            let Some((user, password)) = parse_basic(authorization) else { return Ok(None) };
            Ok(self
                .verify(engine, &user, &password, client)
                .await?
                .map(|account| Identified { user_id: format!("account:{account}"), profile: None }))
        })
    }

    fn challenge(&self) -> Option<String> {
        Some(BASIC_CHALLENGE.to_owned())
    }
}

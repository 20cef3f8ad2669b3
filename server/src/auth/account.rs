//! kinto.plugins.accounts' policy: `user:password` checked against the account's bcrypt hash.

use std::sync::Arc;
use std::time::Duration;

use tidemark_engine::Engine;
use tidemark_protocol::ApiError;

use super::{dummy_hash, hmac_hex, parse_basic, Identified, Policy, BASIC_CHALLENGE};
use crate::cache::{cache_error, Cache};
use crate::error::from_engine;
use crate::kinto::accounts::ACCOUNTS;
use crate::toolkit::BoxFuture;

/// A verified account login is remembered in the cache backend for `account_cache_ttl_seconds`
/// (so bcrypt runs once per TTL, on whichever server), as `<account> <last_modified>`: any
/// change to the account invalidates it.
pub struct AccountPolicy {
    name: String,
    hmac_secret: String,
    cache_ttl: Duration,
    cache: Arc<dyn Cache>,
}

impl AccountPolicy {
    pub fn new(name: &str, hmac_secret: String, cache_ttl: Duration, cache: Arc<dyn Cache>) -> AccountPolicy {
        AccountPolicy { name: name.to_owned(), hmac_secret, cache_ttl, cache }
    }

    async fn verify(&self, engine: &Engine, user: &str, password: &str) -> Result<Option<String>, ApiError> {
        // A storage failure is a 503, never "unknown user".
        let stored = engine.get("", ACCOUNTS, user).map_err(from_engine)?.filter(|a| !a.deleted);
        // The cache key is an HMAC, so the cache never holds a password.
        let key = format!("account-login:{}", hmac_hex(&self.hmac_secret, &format!("{user}:{password}")));
        if let Some(account) = &stored {
            let remembered = self.cache.get(&key).map_err(cache_error)?;
            if remembered.is_some_and(|v| v == format!("{user} {}", account.last_modified).as_bytes()) {
                return Ok(Some(user.to_owned()));
            }
        }
        let hash = stored.as_ref().and_then(|a| a.data.get("password")).and_then(|p| p.as_str()).map(str::to_owned);
        let password = password.to_owned();
        // bcrypt is slow on purpose: keep it off the async workers. An unknown user still pays
        // one verification so its timing matches a wrong password.
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => bcrypt::verify(password, &hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, dummy_hash());
                false
            }
        })
        .await
        .unwrap_or(false);
        let Some(account) = stored.filter(|_| ok) else { return Ok(None) };
        let remembered = format!("{user} {}", account.last_modified);
        self.cache.set(&key, remembered.as_bytes(), self.cache_ttl).map_err(cache_error)?;
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
        Box::pin(async move {
            let Some((user, password)) = parse_basic(authorization) else { return Ok(None) };
            Ok(self
                .verify(engine, &user, &password)
                .await?
                .map(|account| Identified { user_id: format!("account:{account}"), profile: None }))
        })
    }

    fn challenge(&self) -> Option<String> {
        Some(BASIC_CHALLENGE.to_owned())
    }
}

//! kinto.plugins.accounts' policy: `user:password` checked against the account's bcrypt hash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidemark_engine::Engine;
use tidemark_protocol::ApiError;

use super::{dummy_hash, hmac_hex, parse_basic, Identified, Policy, BASIC_CHALLENGE};
use crate::error::from_engine;
use crate::kinto::accounts::ACCOUNTS;
use crate::toolkit::BoxFuture;

/// A verified account login, remembered for a short while so bcrypt runs once per TTL.
struct Verified {
    account: String,
    /// The account's `last_modified` when verified: any change to the account invalidates.
    version: u64,
    expires: Instant,
}

pub struct AccountPolicy {
    name: String,
    hmac_secret: String,
    cache_ttl: Duration,
    verified: Arc<Mutex<HashMap<String, Verified>>>,
}

impl AccountPolicy {
    pub fn new(name: &str, hmac_secret: String, cache_ttl: Duration) -> AccountPolicy {
        AccountPolicy { name: name.to_owned(), hmac_secret, cache_ttl, verified: Arc::default() }
    }

    async fn verify(&self, engine: &Engine, user: &str, password: &str) -> Result<Option<String>, ApiError> {
        // A storage failure is a 503, never "unknown user".
        let stored = engine.get("", ACCOUNTS, user).map_err(from_engine)?.filter(|a| !a.deleted);
        // The cache key is an HMAC, so the cache never holds a password.
        let key = hmac_hex(&self.hmac_secret, &format!("{user}:{password}"));
        if let Some(account) = &stored {
            let cached =
                self.verified.lock().get(&key).is_some_and(|v| {
                    v.account == user && v.version == account.last_modified && v.expires > Instant::now()
                });
            if cached {
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
        let mut verified = self.verified.lock();
        let now = Instant::now();
        verified.retain(|_, v| v.expires > now);
        verified.insert(
            key,
            Verified { account: user.to_owned(), version: account.last_modified, expires: now + self.cache_ttl },
        );
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

//! Authentication: who is calling, as a user id and a set of principals.
//!
//! The policy chain comes from `multiauth.policies`; the first policy that identifies the
//! request wins, and a request nobody identifies is anonymous (`system.Everyone` only). Failed
//! credentials are not an error by themselves (Kinto): only a permission denial becomes a 401.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tidemark_engine::Engine;

pub const EVERYONE: &str = "system.Everyone";
pub const AUTHENTICATED: &str = "system.Authenticated";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The prefixed user id (`basicauth:…`, `account:bob`), `None` when anonymous.
    pub user_id: Option<String>,
    /// The user id first, then `system.Everyone`, `system.Authenticated`, groups…
    pub principals: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity { user_id: None, principals: vec![EVERYONE.to_owned()] }
    }

    pub fn user(user_id: String) -> Self {
        Identity {
            principals: vec![user_id.clone(), EVERYONE.to_owned(), AUTHENTICATED.to_owned()],
            user_id: Some(user_id),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.user_id.is_some()
    }

    /// The principal added to `write` on objects this caller creates.
    pub fn writer_principal(&self) -> &str {
        self.user_id.as_deref().unwrap_or(EVERYONE)
    }

    /// The account name when authenticated through the accounts policy.
    pub fn account(&self) -> Option<&str> {
        self.user_id.as_deref().and_then(|id| id.strip_prefix("account:"))
    }
}

/// An authentication policy of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Kinto's `basicauth`: any user:password pair is an identity, `basicauth:<hmac>`.
    Basic,
    /// kinto.plugins.accounts: user:password checked against the account's bcrypt hash.
    Account,
}

/// A verified account login, remembered for a short while so bcrypt runs once per TTL.
struct Verified {
    account: String,
    /// The account's `last_modified` when verified: any change to the account invalidates.
    version: u64,
    expires: Instant,
}

#[derive(Clone)]
pub struct Authenticator {
    policies: Vec<Policy>,
    hmac_secret: String,
    cache_ttl: Duration,
    verified: Arc<Mutex<HashMap<String, Verified>>>,
}

impl Authenticator {
    pub fn new(policies: Vec<Policy>, hmac_secret: String, cache_ttl: Duration) -> Self {
        Authenticator { policies, hmac_secret, cache_ttl, verified: Arc::default() }
    }

    pub fn has(&self, policy: Policy) -> bool {
        self.policies.contains(&policy)
    }

    /// Identifies a request from its `Authorization` header (users' principals without groups).
    pub async fn authenticate(&self, engine: &Engine, authorization: Option<&[u8]>) -> Identity {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Identity::anonymous();
        };
        for policy in &self.policies {
            match policy {
                Policy::Account => {
                    if let Some(account) = self.verify_account(engine, &user, &password).await {
                        return Identity::user(format!("account:{account}"));
                    }
                }
                Policy::Basic => {
                    if !user.is_empty() {
                        return Identity::user(format!("basicauth:{}", self.hmac_hex(&format!("{user}:{password}"))));
                    }
                }
            }
        }
        Identity::anonymous()
    }

    async fn verify_account(&self, engine: &Engine, user: &str, password: &str) -> Option<String> {
        let stored = engine.get("", crate::kinto::accounts::ACCOUNTS, user).ok().flatten().filter(|a| !a.deleted);
        // The cache key is an HMAC, so the cache never holds a password.
        let key = self.hmac_hex(&format!("{user}:{password}"));
        if let Some(account) = &stored {
            let cached =
                self.verified.lock().get(&key).is_some_and(|v| {
                    v.account == user && v.version == account.last_modified && v.expires > Instant::now()
                });
            if cached {
                return Some(user.to_owned());
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
        let account = stored.filter(|_| ok)?;
        let mut verified = self.verified.lock();
        let now = Instant::now();
        verified.retain(|_, v| v.expires > now);
        verified.insert(
            key,
            Verified { account: user.to_owned(), version: account.last_modified, expires: now + self.cache_ttl },
        );
        Some(user.to_owned())
    }

    /// Lower-case hex HMAC-SHA256 keyed with `userid_hmac_secret`.
    pub fn hmac_hex(&self, message: &str) -> String {
        hmac_hex(&self.hmac_secret, message)
    }
}

/// A bcrypt hash of nothing anyone knows, for the unknown-user path.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        bcrypt::hash(secret, bcrypt::DEFAULT_COST).unwrap_or_default()
    })
}

/// Hashes an account password as Kinto does (`$2b$`, cost 12), off the async workers.
pub async fn hash_password(password: String) -> Option<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, bcrypt::DEFAULT_COST).ok()).await.ok().flatten()
}

pub fn hmac_hex(key: &str, message: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty tag would never match.
    match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// `Basic base64(user:password)` → (user, password). Anything malformed → `None` (anonymous).
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    // Not UTF-8: read as latin-1, as Kinto does.
    let decoded =
        String::from_utf8(decoded).unwrap_or_else(|e| e.into_bytes().iter().map(|b| char::from(*b)).collect());
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::EngineConfig;

    fn engine() -> Engine {
        Engine::open_memory(EngineConfig::default()).expect("engine")
    }

    #[tokio::test]
    async fn basicauth_user_id_matches_kintos_hmac() {
        let auth = Authenticator::new(vec![Policy::Basic], "some-secret".into(), Duration::from_secs(30));
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:secret"));
        let identity = auth.authenticate(&engine(), Some(header.as_bytes())).await;
        assert_eq!(
            identity.user_id.as_deref(),
            Some("basicauth:2381f1d3ad5dc94b906b5bbcdb1fba17c37cd7f3947bf9451be8cd3f071bf0b7")
        );
        assert!(identity.principals.contains(&AUTHENTICATED.to_string()));
    }

    #[tokio::test]
    async fn malformed_headers_are_anonymous() {
        let auth = Authenticator::new(vec![Policy::Basic], "s".into(), Duration::from_secs(30));
        let empty_user = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(":pw"));
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon"));
        let engine = engine();
        for header in
            [&b"Basic !!!"[..], b"Bearer x", b"Basic", empty_user.as_bytes(), no_colon.as_bytes(), b"\xff\xfe"]
        {
            assert_eq!(auth.authenticate(&engine, Some(header)).await, Identity::anonymous());
        }
    }
}

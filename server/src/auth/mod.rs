//! Authentication: who is calling, as a user id and a set of principals.
//!
//! The policy chain comes from `multiauth.policies`; the first policy that identifies the
//! request wins, and a request nobody identifies is anonymous (`system.Everyone` only). Failed
//! credentials are not an error by themselves (Kinto): only a permission denial becomes a 401.

mod account;
mod basic;
pub mod openid;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tidemark_engine::Engine;
use tidemark_protocol::ApiError;

pub use account::{AccountLimits, AccountPolicy};
pub use basic::BasicPolicy;

use crate::toolkit::BoxFuture;

pub const EVERYONE: &str = "system.Everyone";
pub const AUTHENTICATED: &str = "system.Authenticated";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The prefixed user id (`basicauth:…`, `account:bob`), `None` when anonymous.
    pub user_id: Option<String>,
    /// The user id first, then `system.Everyone`, `system.Authenticated`, groups…
    pub principals: Vec<String>,
    /// What the identity provider says of the user (OpenID), shown in `GET /v1/`.
    pub profile: Option<serde_json::Value>,
    /// The application namespace the request acts in (`""`: the default; see `namespace`).
    pub namespace: String,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity { user_id: None, principals: vec![EVERYONE.to_owned()], profile: None, namespace: String::new() }
    }

    pub fn user(user_id: String) -> Self {
        Identity {
            principals: vec![user_id.clone(), EVERYONE.to_owned(), AUTHENTICATED.to_owned()],
            user_id: Some(user_id),
            profile: None,
            namespace: String::new(),
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

/// What a policy found in a request: the prefixed user id, and (OpenID) the user's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Identified {
    pub user_id: String,
    pub profile: Option<serde_json::Value>,
}

/// One authentication policy of the chain (`multiauth.policies`): Basic Auth, accounts,
/// OpenID Connect, or one a service brings.
pub trait Policy: Send + Sync {
    /// The policy's name in `multiauth.policies`, the prefix of the user ids it gives.
    fn name(&self) -> &str;

    /// The user the `Authorization` header names, if this policy recognises it; `Ok(None)` lets
    /// the next policy try. Only a failure to check (storage, provider) is an error.
    fn identify<'a>(
        &'a self,
        engine: &'a Engine,
        authorization: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>>;

    /// [`Policy::identify`], knowing the client's address: a policy that limits failed logins
    /// per client uses it.
    fn identify_from<'a>(
        &'a self,
        engine: &'a Engine,
        authorization: &'a str,
        client: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>> {
        let _ = client;
        self.identify(engine, authorization)
    }

    /// The `WWW-Authenticate` challenge a 401 carries for this policy.
    fn challenge(&self) -> Option<String> {
        None
    }

    /// The capability `GET /v1/` shows for this policy, as (name, description).
    fn capability(&self) -> Option<(String, serde_json::Value)> {
        None
    }
}

/// The policy chain: the first policy that identifies the request wins.
#[derive(Clone, Default)]
pub struct Authenticator {
    policies: Vec<Arc<dyn Policy>>,
}

impl Authenticator {
    pub fn new(policies: Vec<Arc<dyn Policy>>) -> Self {
        Authenticator { policies }
    }

    /// Adds a policy at the end of the chain.
    pub fn push(&mut self, policy: Arc<dyn Policy>) {
        self.policies.push(policy);
    }

    pub fn policies(&self) -> &[Arc<dyn Policy>] {
        &self.policies
    }

    /// Identifies a request from its `Authorization` header (users' principals without groups),
    /// sent from `client` when known.
    pub async fn authenticate(
        &self,
        engine: &Engine,
        authorization: Option<&[u8]>,
        client: Option<IpAddr>,
    ) -> Result<Identity, ApiError> {
        // A header that is not text names nobody (Kinto reads latin-1 only inside Basic).
        let Some(header) = authorization.map(|h| String::from_utf8_lossy(h).into_owned()) else {
            return Ok(Identity::anonymous());
        };
        for policy in &self.policies {
            if let Some(found) = policy.identify_from(engine, &header, client).await? {
                let mut identity = Identity::user(found.user_id);
                identity.profile = found.profile;
                return Ok(identity);
            }
        }
        Ok(Identity::anonymous())
    }

    /// The challenges of a 401, one per policy that has one (Basic when none has).
    pub fn challenges(&self) -> Vec<String> {
        // One per policy, as Kinto's multiauth sends them (accounts and Basic Auth both say
        // `Basic realm="Realm"`).
        let challenges: Vec<String> = self.policies.iter().filter_map(|p| p.challenge()).collect();
        if challenges.is_empty() {
            vec![BASIC_CHALLENGE.to_owned()]
        } else {
            challenges
        }
    }
}

/// Kinto's Basic challenge.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"Realm\"";

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
fn parse_basic(header: &str) -> Option<(String, String)> {
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

    fn basic_only(secret: &str) -> Authenticator {
        Authenticator::new(vec![Arc::new(BasicPolicy::new("basicauth", secret.into()))])
    }

    #[tokio::test]
    async fn basicauth_user_id_matches_kintos_hmac() {
        let auth = basic_only("some-secret");
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:secret"));
        let identity = auth.authenticate(&engine(), Some(header.as_bytes()), None).await.expect("identity");
        assert_eq!(
            identity.user_id.as_deref(),
            Some("basicauth:2381f1d3ad5dc94b906b5bbcdb1fba17c37cd7f3947bf9451be8cd3f071bf0b7")
        );
        assert!(identity.principals.contains(&AUTHENTICATED.to_string()));
    }

    #[tokio::test]
    async fn malformed_headers_are_anonymous() {
        let auth = basic_only("s");
        let empty_user = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(":pw"));
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon"));
        let engine = engine();
        for header in
            [&b"Basic !!!"[..], b"Bearer x", b"Basic", empty_user.as_bytes(), no_colon.as_bytes(), b"\xff\xfe"]
        {
            assert_eq!(auth.authenticate(&engine, Some(header), None).await.expect("identity"), Identity::anonymous());
        }
    }
}

//! Authentication: who is calling, as a user id and a set of principals.
//!
//! The policy chain comes from `multiauth.policies`; the first policy that identifies the
//! request wins, and a request nobody identifies is anonymous (`system.Everyone` only). Failed
//! credentials are not an error by themselves (Kinto): only a permission denial becomes a 401.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const EVERYONE: &str = "system.Everyone";
pub const AUTHENTICATED: &str = "system.Authenticated";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The prefixed user id (`basicauth:…`), `None` when anonymous.
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
}

/// An authentication policy of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Kinto's `basicauth`: any user:password pair is an identity, `basicauth:<hmac>`.
    Basic,
}

#[derive(Clone)]
pub struct Authenticator {
    policies: Vec<Policy>,
    hmac_secret: String,
}

impl Authenticator {
    pub fn new(policies: Vec<Policy>, hmac_secret: String) -> Self {
        Authenticator { policies, hmac_secret }
    }

    pub fn has_basic(&self) -> bool {
        self.policies.contains(&Policy::Basic)
    }

    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Identity {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Identity::anonymous();
        };
        for policy in &self.policies {
            match policy {
                Policy::Basic => {
                    if !user.is_empty() {
                        return Identity::user(format!("basicauth:{}", self.hmac_hex(&format!("{user}:{password}"))));
                    }
                }
            }
        }
        Identity::anonymous()
    }

    /// Lower-case hex HMAC-SHA256 keyed with `userid_hmac_secret`.
    pub fn hmac_hex(&self, message: &str) -> String {
        hmac_hex(&self.hmac_secret, message)
    }
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
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basicauth_user_id_matches_kintos_hmac() {
        let auth = Authenticator::new(vec![Policy::Basic], "some-secret".into());
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:secret"));
        let identity = auth.authenticate(Some(header.as_bytes()));
        assert_eq!(
            identity.user_id.as_deref(),
            Some("basicauth:2381f1d3ad5dc94b906b5bbcdb1fba17c37cd7f3947bf9451be8cd3f071bf0b7")
        );
        assert!(identity.principals.contains(&AUTHENTICATED.to_string()));
    }

    #[test]
    fn malformed_headers_are_anonymous() {
        let auth = Authenticator::new(vec![Policy::Basic], "s".into());
        let empty_user = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(":pw"));
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon"));
        for header in
            [&b"Basic !!!"[..], b"Bearer x", b"Basic", empty_user.as_bytes(), no_colon.as_bytes(), b"\xff\xfe"]
        {
            assert_eq!(auth.authenticate(Some(header)), Identity::anonymous());
        }
    }
}

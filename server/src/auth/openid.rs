//! OpenID Connect (Kinto's `kinto.plugins.openid`): bearer tokens from an identity provider.
//!
//! A request carrying `Authorization: Bearer <JWT>` is identified when the token's signature
//! checks against the provider's published keys (JWKS), its issuer is the provider, it has not
//! expired, and (if configured) its audience matches; the user id is `<policy>:<claim>`, the
//! claim named by `userid_field` (`sub`). Unlike Kinto, which asks the provider's userinfo
//! endpoint about every new token, the token itself is the proof: no round trip per login.
//! Keys are fetched once and again when a token names a key not seen yet (key rotation).
//!
//! `GET /v1/openid/<name>/login` and `…/token` run the authorization-code flow for browser
//! clients, as Kinto does.
//!
//! Pending logins and verified tokens live in the cache backend (`cache_backend`), so a login
//! begun on one server ends on another, and a token verified once is trusted by every server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tidemark_engine::Engine;
use tidemark_protocol::{ApiError, Location};

use super::{hmac_hex, Identified, Policy};
use crate::cache::{cache_error, Cache};
use crate::toolkit::BoxFuture;

/// How long provider metadata and keys are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A token naming an unknown key refetches the keys at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// One provider's settings (`multiauth.policy.<name>.*`).
#[derive(Debug, Clone)]
pub struct OpenIdConfig {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub audience: Option<String>,
    pub header_type: String,
    pub userid_field: String,
    /// Where the keys are; by default the provider's discovery document says.
    pub jwks_uri: Option<String>,
    pub verification_ttl: Duration,
    pub state_ttl: Duration,
    /// Shell-style patterns a login's callback must match (empty: any).
    pub trusted_callback_urls: Vec<String>,
}

impl OpenIdConfig {
    /// The provider named `name`, from the raw settings.
    pub fn from_settings(name: &str, raw: &std::collections::BTreeMap<String, String>) -> Result<OpenIdConfig, String> {
        let get = |key: &str| raw.get(&format!("multiauth.policy.{name}.{key}")).map(|v| v.trim().to_owned());
        let required = |key: &str| {
            get(key).filter(|v| !v.is_empty()).ok_or_else(|| format!("multiauth.policy.{name}.{key} is required"))
        };
        let seconds = |key: &str, default: u64| -> Result<Duration, String> {
            match get(key) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("multiauth.policy.{name}.{key}: expected a number of seconds, got {v:?}")),
            }
        };
        Ok(OpenIdConfig {
            name: name.to_owned(),
            issuer: required("issuer")?.trim_end_matches('/').to_owned(),
            client_id: required("client_id")?,
            client_secret: get("client_secret").unwrap_or_default(),
            audience: get("audience").filter(|v| !v.is_empty()),
            header_type: get("header_type").filter(|v| !v.is_empty()).unwrap_or_else(|| "Bearer".into()),
            userid_field: get("userid_field").filter(|v| !v.is_empty()).unwrap_or_else(|| "sub".into()),
            jwks_uri: get("jwks_uri").filter(|v| !v.is_empty()),
            verification_ttl: seconds("verification_ttl_seconds", 86_400)?,
            state_ttl: seconds("state_ttl_seconds", 3_600)?,
            trusted_callback_urls: get("trusted_callback_urls")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

/// What the provider's discovery document says (the parts used here).
#[derive(Debug, Clone, Default)]
struct Metadata {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

pub struct OpenIdPolicy {
    config: OpenIdConfig,
    /// Kept for cache keys: tokens are never stored in the clear.
    hmac_secret: String,
    http: reqwest::Client,
    metadata: Mutex<Option<(Metadata, Instant)>>,
    keys: Mutex<Option<Keys>>,
    /// Verified tokens (by HMAC) and pending logins (by state), with their expiry.
    cache: Arc<dyn Cache>,
}

/// A failure to reach the provider: 503, as for any backend the server depends on.
fn unavailable(what: &str, err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "OpenID provider: {what}");
    ApiError::backend_unavailable(crate::error::RETRY_AFTER_SECONDS)
}

impl OpenIdPolicy {
    pub fn new(config: OpenIdConfig, hmac_secret: String, cache: Arc<dyn Cache>) -> OpenIdPolicy {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        OpenIdPolicy { config, hmac_secret, http, metadata: Mutex::new(None), keys: Mutex::new(None), cache }
    }

    /// The cache key of a pending login.
    fn state_key(&self, state: &str) -> String {
        format!("openid:{}:state:{state}", self.config.name)
    }

    pub fn config(&self) -> &OpenIdConfig {
        &self.config
    }

    async fn get_json(&self, url: &str) -> Result<Value, ApiError> {
        let response = self.http.get(url).send().await.map_err(|e| unavailable(url, e))?;
        if !response.status().is_success() {
            return Err(unavailable(url, response.status()));
        }
        response.json().await.map_err(|e| unavailable(url, e))
    }

    /// The discovery document (`<issuer>/.well-known/openid-configuration`), cached.
    async fn metadata(&self) -> Result<Metadata, ApiError> {
        if let Some((metadata, fetched)) = self.metadata.lock().as_ref() {
            if fetched.elapsed() < METADATA_TTL {
                return Ok(metadata.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        let document = self.get_json(&url).await?;
        let field = |name: &str| document.get(name).and_then(Value::as_str).map(str::to_owned);
        let metadata = Metadata {
            authorization_endpoint: field("authorization_endpoint"),
            token_endpoint: field("token_endpoint"),
            userinfo_endpoint: field("userinfo_endpoint"),
            jwks_uri: field("jwks_uri"),
        };
        *self.metadata.lock() = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// The key a token names (or the only one), fetching the key set when it is missing, old,
    /// or lacks that key (rotation; at most every [`REFETCH_INTERVAL`]).
    async fn key_for(&self, kid: Option<&str>) -> Result<Option<jsonwebtoken::jwk::Jwk>, ApiError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let refetch = match self.keys.lock().as_ref() {
            Some(keys) => match find(&keys.set) {
                Some(key) if keys.fetched.elapsed() < METADATA_TTL => return Ok(Some(key)),
                Some(_) => true,
                None => keys.fetched.elapsed() >= REFETCH_INTERVAL,
            },
            None => true,
        };
        if refetch {
            let uri = match &self.config.jwks_uri {
                Some(uri) => uri.clone(),
                None => {
                    self.metadata().await?.jwks_uri.ok_or_else(|| unavailable("no jwks_uri", &self.config.issuer))?
                }
            };
            let document = self.get_json(&uri).await?;
            let set: JwkSet = serde_json::from_value(document).map_err(|e| unavailable("malformed JWKS", e))?;
            *self.keys.lock() = Some(Keys { set, fetched: Instant::now() });
        }
        Ok(self.keys.lock().as_ref().and_then(|keys| find(&keys.set)))
    }

    /// The identity a signed token proves, or `None` (bad signature, issuer, audience, expired).
    async fn verify(&self, token: &str) -> Result<Option<Identified>, ApiError> {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
        let Some(jwk) = self.key_for(header.kid.as_deref()).await? else { return Ok(None) };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { return Ok(None) };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str(), &format!("{}/", self.config.issuer)]);
        match &self.config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(err) => {
                tracing::debug!(error = %err, provider = %self.config.name, "bearer token refused");
                return Ok(None);
            }
        };
        let user = match claims.get(&self.config.userid_field) {
            Some(Value::String(user)) if !user.is_empty() => user.clone(),
            Some(Value::Number(number)) => number.to_string(),
            _ => return Ok(None),
        };
        Ok(Some(Identified { user_id: format!("{}:{user}", self.config.name), profile: Some(claims) }))
    }

    /// `GET /openid/<name>/login?callback=…&scope=…[&prompt=none]`: where to send the browser.
    pub async fn login_redirect(&self, pairs: &[(String, String)], token_url: &str) -> Result<String, ApiError> {
        let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let required = |name: &str| {
            param(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ApiError::invalid_one(Location::Querystring, Some(name), format!("{name} in querystring: Required"))
            })
        };
        let callback = required("callback")?;
        let scope = required("scope")?;
        let trusted = &self.config.trusted_callback_urls;
        if !trusted.is_empty() && !trusted.iter().any(|pattern| crate::http::wildcard_match(pattern, &callback)) {
            return Err(ApiError::invalid_one(Location::Querystring, Some("callback"), "callback URL not allowed"));
        }
        let endpoint = self
            .metadata()
            .await?
            .authorization_endpoint
            .ok_or_else(|| unavailable("no authorization_endpoint", &self.config.issuer))?;
        let state = hmac_hex(&self.hmac_secret, &tidemark_protocol::ids::uuid4(rand::random()));
        self.cache.set(&self.state_key(&state), callback.as_bytes(), self.config.state_ttl).map_err(cache_error)?;
        let mut query = vec![
            ("client_id", self.config.client_id.clone()),
            ("response_type", "code".to_owned()),
            ("scope", scope),
            ("redirect_uri", token_url.to_owned()),
            ("state", state),
        ];
        if let Some(prompt) = param("prompt").filter(|p| p == "none") {
            query.push(("prompt", prompt));
        }
        let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{endpoint}{separator}{}", encoded.join("&")))
    }

    /// `GET /openid/<name>/token?code=…&state=…`: exchanges the code, and sends the browser back
    /// to the login's callback with the provider's token JSON (URL-quoted base64) appended.
    pub async fn token_redirect(&self, pairs: &[(String, String)], token_url: &str) -> Result<String, ApiError> {
        let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let invalid = |name: &str, why: &str| ApiError::invalid_one(Location::Querystring, Some(name), why.to_owned());
        let state = param("state").ok_or_else(|| invalid("state", "state in querystring: Required"))?;
        let pending = self.cache.take(&self.state_key(&state)).map_err(cache_error)?;
        let Some(callback) = pending.and_then(|bytes| String::from_utf8(bytes).ok()) else {
            return Err(invalid("state", "Invalid state"));
        };
        if let Some(error) = param("error") {
            let description = param("error_description").unwrap_or_default();
            return Err(invalid("code", &format!("{error}: {description}")));
        }
        let code = param("code").ok_or_else(|| invalid("code", "code in querystring: Required"))?;
        let endpoint = self
            .metadata()
            .await?
            .token_endpoint
            .ok_or_else(|| unavailable("no token_endpoint", &self.config.issuer))?;
        let form = [
            ("code", code.as_str()),
            ("client_id", &self.config.client_id),
            ("client_secret", &self.config.client_secret),
            ("redirect_uri", token_url),
            ("grant_type", "authorization_code"),
        ];
        let body: String = form.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&");
        let response = self
            .http
            .post(&endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("token endpoint", e))?;
        let tokens: Value = response.json().await.map_err(|e| unavailable("token endpoint", e))?;
        if tokens.get("access_token").is_none() {
            let error = tokens.get("error").and_then(Value::as_str).unwrap_or("invalid_grant");
            let description = tokens.get("error_description").and_then(Value::as_str).unwrap_or_default();
            return Err(invalid("code", &format!("{error}: {description}")));
        }
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(tokens.to_string());
        Ok(format!("{callback}{}", percent_encode(&encoded)))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

impl Policy for OpenIdPolicy {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn identify<'a>(
        &'a self,
        _: &'a Engine,
        authorization: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>> {
        Box::pin(async move {
            let Some((scheme, token)) = authorization.trim().split_once(' ') else { return Ok(None) };
            if !scheme.eq_ignore_ascii_case(&self.config.header_type) {
                return Ok(None);
            }
            let token = token.trim();
            let key = format!("openid:{}:token:{}", self.config.name, hmac_hex(&self.hmac_secret, token));
            let remembered = self.cache.get(&key).map_err(cache_error)?;
            if let Some(identified) = remembered.and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) {
                if let Some(user_id) = identified.get("user_id").and_then(Value::as_str) {
                    let profile = identified.get("profile").filter(|p| !p.is_null()).cloned();
                    return Ok(Some(Identified { user_id: user_id.to_owned(), profile }));
                }
            }
            let Some(identified) = self.verify(token).await? else { return Ok(None) };
            // Never trusted past the token's own expiry.
            let expires_in = identified
                .profile
                .as_ref()
                .and_then(|claims| claims.get("exp"))
                .and_then(Value::as_u64)
                .map(|exp| Duration::from_secs(exp.saturating_sub(crate::state::now_ms() / 1000)));
            let ttl = expires_in.map_or(self.config.verification_ttl, |left| left.min(self.config.verification_ttl));
            let remembered = json!({"user_id": identified.user_id, "profile": identified.profile});
            self.cache.set(&key, remembered.to_string().as_bytes(), ttl).map_err(cache_error)?;
            Ok(Some(identified))
        })
    }

    fn challenge(&self) -> Option<String> {
        Some(format!("{} realm=\"Realm\"", self.config.header_type))
    }

    fn capability(&self) -> Option<(String, Value)> {
        let userinfo = self.metadata.lock().as_ref().and_then(|(m, _)| m.userinfo_endpoint.clone());
        Some((
            "openid".into(),
            json!({
                "description": "OpenID connect support.",
                "url": "http://kinto.readthedocs.io/en/stable/configuration/settings.html#openid-connect",
                "providers": [{
                    "name": self.config.name,
                    "issuer": self.config.issuer,
                    "auth_path": format!("/openid/{}/login", self.config.name),
                    "client_id": self.config.client_id,
                    "audience": self.config.audience,
                    "header_type": self.config.header_type,
                    "userinfo_endpoint": userinfo,
                }],
            }),
        ))
    }
}

/// The OpenID policies of a chain, by name (for the login and token endpoints).
pub type Providers = HashMap<String, Arc<OpenIdPolicy>>;

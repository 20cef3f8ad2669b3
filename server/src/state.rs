//! What every request shares: the engine, the settings, and the pieces derived from them once.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_engine::{Command, Context, Engine, EngineError, Event};
use tidemark_protocol::ApiError;

use crate::auth::openid::{OpenIdConfig, OpenIdPolicy, Providers};
use crate::auth::{AccountLimits, AccountPolicy, Authenticator, BasicPolicy, Identity, Policy, AUTHENTICATED};
use crate::authz::{Authz, SettingsGrants};
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::routes::Endpoints;
use crate::settings::{AuthPolicyKind, Plugin, Settings};
use crate::stream::Hub;
use crate::toolkit::Registry;

/// Principal → (membership version, group URIs).
type GroupCache = HashMap<String, (u64, Vec<String>)>;

/// Cloned per request (axum hands each handler its own): one reference count, whatever the
/// state holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    pub engine: Engine,
    pub settings: Arc<Settings>,
    /// The resources served.
    pub registry: Arc<Registry>,
    /// The version prefix every endpoint lives under (`/v1`).
    pub prefix: Arc<str>,
    pub authenticator: Authenticator,
    /// The OpenID Connect policies of the chain, by name (login and token endpoints).
    pub openid: Arc<Providers>,
    pub grants: Arc<SettingsGrants>,
    pub explicit_permissions: bool,
    pub delete_tokens: Arc<crate::toolkit::lists::DeleteTokens>,
    /// Compiled JSON schemas of collections and buckets.
    pub validators: Arc<crate::kinto::validation::ValidatorCache>,
    /// Kinto's cache backend: values the servers of one service share.
    pub cache: Arc<dyn crate::cache::Cache>,
    /// Load shedding and rate limiting.
    pub limits: Arc<crate::limits::Limits>,
    /// Stream connections open on this server (shutdown waits for their goodbyes).
    pub stream_connections: Arc<std::sync::atomic::AtomicI64>,
    /// Set once the server is shutting down: streams close with their cursor.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The Kinto Admin app, with kinto.plugins.admin.
    pub admin: Option<Arc<crate::admin::Admin>>,
    /// Request and engine metrics, with kinto.plugins.prometheus.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The live-stream hub, started with the first stream connection.
    hub: Arc<std::sync::OnceLock<Arc<Hub>>>,
    /// Principal → group URIs, valid while the engine's membership version is unchanged.
    groups: Arc<parking_lot::Mutex<GroupCache>>,
}

impl AppState {
    /// Kinto's service: its resources (accounts with their plugin) under `/v1`. `hmac_secret` is
    /// `userid_hmac_secret`, resolved by the caller (generated if unset).
    pub fn new(engine: Engine, settings: Settings, hmac_secret: String) -> AppState {
        let registry = crate::kinto::registry(settings.plugins.contains(&Plugin::Accounts));
        AppState::with_registry(engine, settings, hmac_secret, registry, "/v1")
    }

    /// A service serving `registry` under `prefix` (e.g. `/v0`).
    pub fn with_registry(
        engine: Engine,
        settings: Settings,
        hmac_secret: String,
        registry: Registry,
        prefix: &str,
    ) -> AppState {
        let cache_ttl = settings.account_cache_ttl_seconds;
        // The settings checked the URL: only a client that cannot be built lands here.
        let cache = crate::cache::from_settings(&settings).unwrap_or_else(|err| {
            tracing::error!(error = %err, "cache backend not started: values kept in memory");
            Arc::new(crate::cache::MemoryCache::default())
        });
        let mut policies: Vec<Arc<dyn Policy>> = Vec::new();
        let mut openid = Providers::new();
        for policy in &settings.auth_policies {
            match &policy.kind {
                AuthPolicyKind::Basic => policies.push(Arc::new(BasicPolicy::new(&policy.name, hmac_secret.clone()))),
                AuthPolicyKind::Account => {
                    let limits = AccountLimits {
                        cache_ttl: std::time::Duration::from_secs(cache_ttl),
                        account_failures_per_minute: settings.account_login_failures_per_minute,
                        client_failures_per_minute: settings.client_login_failures_per_minute,
                        concurrent_checks: settings.account_password_checks_at_once,
                    };
                    policies.push(Arc::new(AccountPolicy::new(
                        &policy.name,
                        hmac_secret.clone(),
                        limits,
                        Arc::clone(&cache),
                    )))
                }
                // Checked when the settings were loaded.
                AuthPolicyKind::OpenId => match OpenIdConfig::from_settings(&policy.name, &settings.raw) {
                    Ok(config) => {
                        let provider = Arc::new(OpenIdPolicy::new(config, hmac_secret.clone(), Arc::clone(&cache)));
                        openid.insert(policy.name.clone(), Arc::clone(&provider));
                        policies.push(provider);
                    }
                    Err(err) => tracing::error!(error = %err, "OpenID policy not started"),
                },
                AuthPolicyKind::Unknown(_) => {}
            }
        }
        let mut grants: HashMap<String, Vec<String>> = HashMap::new();
        for (key, principals) in &settings.permission_principals {
            if let Some(name) = key.strip_suffix("_principals") {
                grants.insert(name.to_owned(), principals.clone());
            }
        }
        grants.insert("bucket_create".into(), settings.bucket_create_principals.clone());
        // Metrics are no reason to refuse service: a collector that cannot be reached is logged.
        let metrics = crate::metrics::Metrics::from_settings(&settings)
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "metrics not started");
                None
            })
            .map(Arc::new);
        if let Some(metrics) = &metrics {
            engine.observe(Arc::clone(metrics) as Arc<dyn tidemark_engine::Observer>);
        }
        let admin = settings
            .plugins
            .contains(&Plugin::Admin)
            .then(|| Arc::new(crate::admin::Admin::new(settings.admin_assets_path.clone())));
        AppState(Arc::new(Shared {
            admin,
            engine,
            registry: Arc::new(registry),
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
            stream_connections: Arc::default(),
            limits: Arc::new(crate::limits::Limits::new(&settings, Arc::clone(&cache))),
            metrics,
            prefix: Arc::from(prefix),
            explicit_permissions: settings.explicit_permissions,
            delete_tokens: Arc::new(crate::toolkit::lists::DeleteTokens::from_settings(&settings, Arc::clone(&cache))),
            cache,
            validators: Arc::default(),
            authenticator: Authenticator::new(policies),
            openid: Arc::new(openid),
            grants: Arc::new(SettingsGrants(grants)),
            hub: Arc::default(),
            groups: Arc::default(),
            settings: Arc::new(settings),
        }))
    }

    /// The same state over another engine (a batch's transaction fork).
    pub fn with_engine(&self, engine: Engine) -> AppState {
        AppState(Arc::new(Shared { engine, ..Shared::clone(&self.0) }))
    }

    /// The state while nothing else holds it yet (before serving), to finish setting it up.
    pub fn get_mut(&mut self) -> Option<&mut Shared> {
        Arc::get_mut(&mut self.0)
    }
}

impl Shared {
    /// The stream hub (must be called within the runtime: it starts a task the first time).
    pub fn hub(&self) -> Arc<Hub> {
        let queue = self.settings.streams.queue_size;
        Arc::clone(self.hub.get_or_init(|| Hub::start(self.engine.clone(), Arc::clone(&self.registry), queue)))
    }

    pub fn authz<'a>(&'a self, identity: &'a Identity) -> Authz<'a> {
        Authz { engine: &self.engine, registry: &self.registry, grants: &self.grants, identity }
    }

    pub fn plugin(&self, plugin: Plugin) -> bool {
        self.settings.plugins.contains(&plugin)
    }

    /// The optional endpoints these settings enable.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            flush: self.plugin(Plugin::Flush),
            metrics: self.metrics.is_some(),
            history: self.plugin(Plugin::History),
            openid: !self.openid.is_empty(),
            permissions: self.settings.experimental_permissions_endpoint || self.plugin(Plugin::Admin),
        }
    }

    /// Who is calling: the policy chain's user, plus the groups that name them (or name
    /// `system.Authenticated`) as members.
    /// Who is calling, from the request's headers, in the application namespace they name. A
    /// storage or provider failure is an error (503), never a wrong identity.
    pub async fn identify_request(
        &self,
        headers: &axum::http::HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<Identity, ApiError> {
        let namespace = crate::namespace::of(headers, &self.settings)?;
        let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let mut identity = self.identify(authorization, client).await?;
        identity.namespace = namespace;
        Ok(identity)
    }

    /// A storage or provider failure is an error (503), never a wrong identity.
    pub async fn identify(
        &self,
        authorization: Option<&[u8]>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Identity, ApiError> {
        let mut identity = self.authenticator.authenticate(&self.engine, authorization, client).await?;
        if let Some(user_id) = identity.user_id.clone() {
            for member in [user_id.as_str(), AUTHENTICATED] {
                for group in self.groups_of(member)? {
                    if !identity.principals.contains(&group) {
                        identity.principals.push(group);
                    }
                }
            }
        }
        Ok(identity)
    }

    /// The groups naming `member`, from a cache that any group change invalidates.
    fn groups_of(&self, member: &str) -> Result<Vec<String>, ApiError> {
        let version = self.engine.membership_version();
        if let Some((seen, groups)) = self.groups.lock().get(member) {
            if *seen == version {
                return Ok(groups.clone());
            }
        }
        let groups = self.engine.groups_of(member).map_err(from_engine)?;
        let mut cache = self.groups.lock();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(member.to_owned(), (version, groups.clone()));
        Ok(groups)
    }

    /// Submits one command and returns its event.
    pub async fn submit(&self, command: Command) -> Result<Arc<Event>, EngineError> {
        let mut events = self.engine.submit(vec![command]).await?;
        crate::summary::written(&events);
        events.pop().ok_or_else(|| EngineError::InvalidCommand("the writer returned no event".into()))
    }
}

/// Who made a change, for the event's context.
pub fn context(req: &ApiRequest) -> Context {
    Context {
        user_id: req.identity.user_id.clone(),
        app_id: req.header("kinto-app-id").map(str::to_owned),
        app_env: req.header("kinto-app-env").map(str::to_owned),
        session_id: req.header("kinto-session-id").map(str::to_owned),
        request_id: req.header("x-request-id").map(str::to_owned),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

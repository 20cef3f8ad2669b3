//! What every request shares: the engine, the settings, and the pieces derived from them once.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_engine::{Command, Context, Engine, EngineError, Event};

use crate::auth::{Authenticator, Identity, Policy};
use crate::authz::{Authz, SettingsGrants};
use crate::request::ApiRequest;
use crate::settings::{AuthPolicyKind, Plugin, Settings};

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub settings: Arc<Settings>,
    pub authenticator: Authenticator,
    pub grants: Arc<SettingsGrants>,
    pub explicit_permissions: bool,
}

impl AppState {
    /// `hmac_secret` is `userid_hmac_secret`, resolved by the caller (generated if unset).
    pub fn new(engine: Engine, settings: Settings, hmac_secret: String) -> AppState {
        let policies = settings
            .auth_policies
            .iter()
            .filter_map(|p| match p.kind {
                AuthPolicyKind::Basic => Some(Policy::Basic),
                _ => None,
            })
            .collect();
        let mut grants: HashMap<String, Vec<String>> = HashMap::new();
        for (key, principals) in &settings.permission_principals {
            if let Some(name) = key.strip_suffix("_principals") {
                grants.insert(name.to_owned(), principals.clone());
            }
        }
        grants.insert("bucket_create".into(), settings.bucket_create_principals.clone());
        AppState {
            engine,
            explicit_permissions: settings.explicit_permissions,
            authenticator: Authenticator::new(policies, hmac_secret),
            grants: Arc::new(SettingsGrants(grants)),
            settings: Arc::new(settings),
        }
    }

    pub fn authz<'a>(&'a self, identity: &'a Identity) -> Authz<'a> {
        Authz { engine: &self.engine, grants: &self.grants, identity }
    }

    pub fn plugin(&self, plugin: Plugin) -> bool {
        self.settings.plugins.contains(&plugin)
    }

    /// Submits one command and returns its event.
    pub async fn submit(&self, command: Command) -> Result<Arc<Event>, EngineError> {
        let mut events = self.engine.submit(vec![command]).await?;
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

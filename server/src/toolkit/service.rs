//! A service: a name, a version, a URL prefix, settings and resources, turned into a server
//! running on the same engine (log, views, `_since`, streams, listeners) as Kinto's.

use std::path::PathBuf;

use crate::settings::Settings;
use crate::state::AppState;
use crate::toolkit::{Registry, Resource};

/// Builds a service from its resources.
///
/// A per-user `food` resource under `/v0`, served on a free port, and one food created over
/// plain HTTP:
///
/// ```
/// use tidemark_server::toolkit::{Resource, Service};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let state = Service::new("food")
///         .version("1.0.0")
///         .prefix("/v0")
///         .setting("storage_backend", "memory")
///         .setting("multiauth.policies", "basicauth")
///         .resource(Resource::per_user("food", "food"))
///         .state()?;
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let address = listener.local_addr()?;
///     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
///     let server = tokio::spawn(tidemark_server::serve(listener, state, async {
///         let _ = stopped.await;
///     }));
///
///     let body = r#"{"data": {"food": "chocolate"}}"#;
///     let request = format!(
///         "POST /v0/food HTTP/1.1\r\nHost: {address}\r\nAuthorization: Basic dG9rZW46bWthdXI=\r\n\
///          Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
///         body.len()
///     );
///     let mut socket = tokio::net::TcpStream::connect(address).await?;
///     socket.write_all(request.as_bytes()).await?;
///     let mut response = String::new();
///     socket.read_to_string(&mut response).await?;
///     assert!(response.starts_with("HTTP/1.1 201 Created"), "{response}");
///     assert!(response.contains(r#""food":"chocolate""#));
///
///     let _ = stop.send(());
///     server.await??;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
pub struct Service {
    prefix: String,
    registry: Registry,
    ini: Option<PathBuf>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
    defaults: Vec<(String, String)>,
    policies: Vec<std::sync::Arc<dyn crate::auth::Policy>>,
    errors: Vec<String>,
}

impl Service {
    /// A service called `project_name` (shown in `GET /<prefix>/`), under `/v1` by default.
    pub fn new(project_name: &str) -> Service {
        Service {
            prefix: "/v1".into(),
            registry: Registry::default(),
            ini: None,
            env: Vec::new(),
            overrides: vec![("project_name".into(), project_name.into())],
            defaults: Vec::new(),
            policies: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn version(self, version: &str) -> Service {
        self.setting("project_version", version)
    }

    /// The version prefix of every URL, e.g. `/v0`.
    pub fn prefix(mut self, prefix: &str) -> Service {
        self.prefix = format!("/{}", prefix.trim_matches('/'));
        self
    }

    /// The address to listen on (`host:port`); settings given later still win.
    pub fn bind(self, address: &str) -> Service {
        self.setting("bind", address)
    }

    /// One setting, as in a `kinto.ini` (`multiauth.policies`, `storage_backend`…).
    pub fn setting(mut self, key: &str, value: &str) -> Service {
        self.overrides.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A setting the INI file, the environment and [`Service::setting`] may all override.
    pub fn default_setting(mut self, key: &str, value: &str) -> Service {
        self.defaults.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Reads a Kinto-style INI file under the builder's own settings (which still win).
    pub fn ini(mut self, path: impl Into<PathBuf>) -> Service {
        self.ini = Some(path.into());
        self
    }

    /// Lets `KINTO_*` and `TIDEMARK_*` environment variables set settings, as `tidemark serve`.
    pub fn from_environment(mut self) -> Service {
        self.env = std::env::vars().collect();
        self
    }

    /// Adds a resource (its parent first); a bad definition is reported by [`Service::state`].
    pub fn resource(mut self, resource: Resource) -> Service {
        if let Err(err) = self.registry.register(resource) {
            self.errors.push(err);
        }
        self
    }

    /// Adds an authentication policy after those `multiauth.policies` names (a token scheme of
    /// the service's own, say).
    pub fn policy(mut self, policy: std::sync::Arc<dyn crate::auth::Policy>) -> Service {
        self.policies.push(policy);
        self
    }

    /// Adds Kinto's own resources (buckets, collections, groups, records; accounts when
    /// `with_accounts`), so a service can serve them beside its own.
    pub fn kinto_resources(mut self, with_accounts: bool) -> Service {
        for resource in crate::kinto::registry(with_accounts).iter() {
            if let Err(err) = self.registry.register(Resource::clone(resource)) {
                self.errors.push(err);
            }
        }
        self
    }

    /// The settings: the defaults, then the INI file, the environment (if taken), the builder's.
    pub fn settings(&self) -> Result<Settings, String> {
        let load = |overrides: &[(String, String)]| {
            Settings::load(self.ini.as_deref(), &self.env, overrides).map_err(|e| e.to_string())
        };
        let mut settings = load(&self.overrides)?;
        // A default nothing else set may go in with the builder's own settings.
        let unset: Vec<(String, String)> =
            self.defaults.iter().filter(|(key, _)| !settings.raw.contains_key(key)).cloned().collect();
        if !unset.is_empty() {
            settings = load(&[unset, self.overrides.clone()].concat())?;
        }
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        Ok(settings)
    }

    /// Opens the engine the settings name and builds the shared state (`crate::app` serves it).
    pub fn state(self) -> Result<AppState, String> {
        if !self.errors.is_empty() {
            return Err(self.errors.join("; "));
        }
        let settings = self.settings()?;
        let engine = crate::open_engine(&settings)?;
        let secret = crate::hmac_secret(&settings)?;
        let mut state = AppState::with_registry(engine, settings, secret, self.registry, &self.prefix);
        let shared = state.get_mut().ok_or("the state is shared before it is set up")?;
        for policy in self.policies {
            shared.authenticator.push(policy);
        }
        Ok(state)
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn serve(self) -> Result<(), String> {
        let state = self.state()?;
        let bind = state.settings.bind.clone();
        let listener =
            tokio::net::TcpListener::bind(&bind).await.map_err(|e| format!("cannot listen on {bind}: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("{} listening on http://{address}{}/", state.settings.project_name, state.prefix);
        crate::serve(listener, state, shutdown_signal()).await.map_err(|e| e.to_string())
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

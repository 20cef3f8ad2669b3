//! Tidemark's settings, read the way Kinto 26.5 reads them (protocol notes §12), so an existing
//! `kinto.ini` runs unchanged. Three layers, each winning over the one before:
//!
//! 1. the ini file: `[app:main]` keys with or without a `kinto.`/`tidemark.` prefix, and
//!    `[server:main]` `host`/`port` for the bind address;
//! 2. environment variables `KINTO_<KEY>`, then `TIDEMARK_<KEY>`, for any known key;
//! 3. command-line overrides.
//!
//! Invariants: a Kinto setting Tidemark does not use is accepted with one warning; an unknown
//! `tidemark.*` setting (or `TIDEMARK_*` variable, or override) is an error, so a typo never
//! silently falls back to a default. Nothing is logged here: warnings are collected in
//! [`Settings::warnings`] for the caller to log once logging is up.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Port substituted for `%(http_port)s` when neither the caller nor `[server:main]` gives one
/// (what `kinto start` passes by default).
pub const DEFAULT_HTTP_PORT: u16 = 8888;
/// Where Tidemark listens when nothing says otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8888";
/// Override key that sets the `%(http_port)s` interpolation variable (like `kinto start --port`)
/// instead of a setting.
pub const HTTP_PORT_OVERRIDE: &str = "http_port";
/// `KINTO_*`/`TIDEMARK_*` variables that tools and scripts use for other things than settings.
pub const NON_SETTING_ENV: &[&str] = &["INI", "PID", "BASE_URL", "SERVER_URL", "LOG", "LOG_FORMAT"];

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_FLUSH_INTERVAL_MS: u64 = 500;
const MAX_INTERPOLATION_DEPTH: usize = 10;
const BASICAUTH_POLICY: &str = "kinto.core.authentication.BasicAuthAuthenticationPolicy";

/// Kinto settings Tidemark reads into typed fields (unprefixed names).
const TYPED_KEYS: &[&str] = &[
    "project_name",
    "project_version",
    "project_docs",
    "http_scheme",
    "http_host",
    "readonly",
    "batch_max_requests",
    "paginate_by",
    "storage_max_fetch_size",
    "explicit_permissions",
    "experimental_collection_schema_validation",
    "experimental_permissions_endpoint",
    "trailing_slash_redirect_enabled",
    "trailing_slash_redirect_ttl_seconds",
    "version_prefix_redirect_enabled",
    "version_prefix_redirect_ttl_seconds",
    "heartbeat_timeout_seconds",
    "error_info_link",
    "userid_hmac_secret",
    "default_bucket_hmac_secret",
    "multiauth.policies",
    "includes",
    "cors_origins",
    "cors_max_age_seconds",
    "backoff",
    "backoff_percentage",
    "retry_after_seconds",
    "eos",
    "eos_message",
    "eos_url",
    "storage_backend",
    "storage_url",
    "version_json_path",
    // Read from `raw` where they are used.
    "pagination_token_validity_seconds",
    "account_cache_ttl_seconds",
];

/// Tidemark's own settings (no Kinto equivalent).
const TIDEMARK_KEYS: &[&str] = &[
    "data_dir",
    "flush_policy",
    "flush_interval_ms",
    "bind",
    "max_body_bytes",
    // Live streams (read by the stream module from `raw`).
    "stream_queue_size",
    "stream_stall_timeout_seconds",
    "stream_stall_timeout_ms",
    "stream_ping_interval_seconds",
    "stream_coalesce_ms",
    // Connections.
    "header_read_timeout_seconds",
    // Load shedding and rate limiting.
    "max_concurrent_requests",
    "rate_limit_per_second",
    "rate_limit_burst",
    // Application contexts (`Kinto-App-Id`).
    "app_id_required",
    "app_ids",
];

const PRINCIPAL_RESOURCES: &[&str] = &["bucket", "collection", "group", "record", "account", "permissions"];
const PRINCIPAL_PERMS: &[&str] = &["create", "read", "write"];
const USER_DATA_DELETE_PRINCIPALS: &str = "user-data_delete_principals";

const WHY_BACKEND: &str = "Tidemark keeps permissions and its cache in its engine";
const WHY_POOL: &str = "Tidemark's engine has no connection pool";
const WHY_MONITORING: &str = "Tidemark logs through RUST_LOG and has no statsd/Sentry/New Relic hooks";
const WHY_PYTHON: &str = "it configures Kinto's Python/Pyramid internals";
const WHY_FIXED: &str = "Tidemark does not make this configurable";
const WHY_PLUGIN: &str = "Tidemark does not support this plugin's settings";
const WHY_ENDPOINT_SWITCH: &str = "Tidemark cannot disable individual endpoints";

/// Kinto settings that are accepted but do nothing in Tidemark, with the reason shown once.
const IGNORED_KEYS: &[(&str, &str)] = &[
    ("permission_backend", WHY_BACKEND),
    ("permission_url", WHY_BACKEND),
    ("cache_backend", WHY_BACKEND),
    ("cache_url", WHY_BACKEND),
    ("cache_hosts", WHY_BACKEND),
    ("cache_prefix", WHY_BACKEND),
    ("cache_max_size_bytes", WHY_BACKEND),
    ("storage_pool_size", WHY_POOL),
    ("storage_max_overflow", WHY_POOL),
    ("storage_pool_recycle", WHY_POOL),
    ("storage_pool_timeout", WHY_POOL),
    ("storage_max_backlog", WHY_POOL),
    ("permission_pool_size", WHY_POOL),
    ("permission_max_overflow", WHY_POOL),
    ("permission_pool_recycle", WHY_POOL),
    ("permission_pool_timeout", WHY_POOL),
    ("permission_max_backlog", WHY_POOL),
    ("cache_pool_size", WHY_POOL),
    ("cache_max_overflow", WHY_POOL),
    ("cache_pool_recycle", WHY_POOL),
    ("cache_pool_timeout", WHY_POOL),
    ("cache_max_backlog", WHY_POOL),
    ("statsd_url", WHY_MONITORING),
    ("statsd_prefix", WHY_MONITORING),
    ("statsd_backend", WHY_MONITORING),
    ("prometheus_prefix", WHY_MONITORING),
    ("prometheus_created_metrics_enabled", WHY_MONITORING),
    ("prometheus_disabled_metrics", WHY_MONITORING),
    ("prometheus_histogram_buckets", WHY_MONITORING),
    ("metrics_matchdict_fields", WHY_MONITORING),
    ("sentry_dsn", WHY_MONITORING),
    ("sentry_env", WHY_MONITORING),
    ("sentry_breadcrumbs_min_level", WHY_MONITORING),
    ("sentry_events_min_level", WHY_MONITORING),
    ("newrelic_config", WHY_MONITORING),
    ("newrelic_env", WHY_MONITORING),
    ("profiler_enabled", WHY_MONITORING),
    ("profiler_dir", WHY_MONITORING),
    ("json_renderer", WHY_PYTHON),
    ("transaction_per_request", WHY_PYTHON),
    ("tm.annotate_user", WHY_PYTHON),
    ("settings_prefix", WHY_PYTHON),
    ("multiauth.authorization_policy", WHY_PYTHON),
    ("multiauth.groupfinder", WHY_PYTHON),
    ("http_api_version", WHY_FIXED),
    ("id_generator", WHY_FIXED),
    ("bucket_id_generator", WHY_FIXED),
    ("collection_id_generator", WHY_FIXED),
    ("group_id_generator", WHY_FIXED),
    ("record_id_generator", WHY_FIXED),
    ("root_cache_expires_seconds", WHY_FIXED),
    ("admin_assets_path", WHY_FIXED),
];

/// Families of ignored Kinto settings, by prefix.
const IGNORED_PREFIXES: &[(&str, &str)] = &[
    ("pyramid.", WHY_PYTHON),
    ("history.", WHY_PLUGIN),
    ("quotas.", WHY_PLUGIN),
    ("changes.", WHY_PLUGIN),
    ("account_validation", WHY_PLUGIN),
];

/// Where records and the log live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Memory,
    Postgresql,
}

/// When the writer makes acknowledged writes durable (see DESIGN.md "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Flush before every reply: a 2xx means the write is on disk.
    Always,
    /// Let the store flush in the background every N milliseconds.
    IntervalMs(u64),
    /// Never flush explicitly.
    None,
}

/// The implementation behind a `multiauth.policies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicyKind {
    Basic,
    Account,
    /// kinto.plugins.openid: bearer JWTs checked against the provider's keys.
    OpenId,
    /// A dotted path Tidemark does not know; requests it would identify stay anonymous.
    Unknown(String),
}

/// One active authentication policy, in `multiauth.policies` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// The name used as user id prefix (`account:bob`, `basicauth:<hmac>`).
    pub name: String,
    pub kind: AuthPolicyKind,
}

/// Kinto's built-in plugins, as named in `includes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plugin {
    DefaultBucket,
    Accounts,
    History,
    Flush,
    Admin,
    OpenId,
    Quotas,
    Counters,
    Prometheus,
}

impl Plugin {
    pub const ALL: [Plugin; 9] = [
        Plugin::DefaultBucket,
        Plugin::Accounts,
        Plugin::History,
        Plugin::Flush,
        Plugin::Admin,
        Plugin::OpenId,
        Plugin::Quotas,
        Plugin::Counters,
        Plugin::Prometheus,
    ];

    pub fn dotted_name(self) -> &'static str {
        match self {
            Plugin::DefaultBucket => "kinto.plugins.default_bucket",
            Plugin::Accounts => "kinto.plugins.accounts",
            Plugin::History => "kinto.plugins.history",
            Plugin::Flush => "kinto.plugins.flush",
            Plugin::Admin => "kinto.plugins.admin",
            Plugin::OpenId => "kinto.plugins.openid",
            Plugin::Quotas => "kinto.plugins.quotas",
            Plugin::Counters => "kinto.plugins.counters",
            Plugin::Prometheus => "kinto.plugins.prometheus",
        }
    }

    pub fn from_dotted(name: &str) -> Option<Plugin> {
        Plugin::ALL.into_iter().find(|p| p.dotted_name() == name)
    }
}

/// Why settings could not be loaded. Every message names the file, key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", .path.display())]
    Syntax { path: PathBuf, line: usize, message: String },
    #[error("{}: no [app:main] section (Tidemark reads Kinto's settings from it)", .path.display())]
    MissingAppMain { path: PathBuf },
    #[error("{}:{line}: cannot expand [{section}] {key}: {message}", .path.display())]
    Interpolation { path: PathBuf, line: usize, section: String, key: String, message: String },
    #[error("settings {names} are in conflict (define only one of them)")]
    Conflict { path: PathBuf, names: String },
    #[error("invalid value {value:?} for setting '{key}' (from {origin}): expected {expected}")]
    InvalidValue { key: String, value: String, origin: String, expected: String },
    #[error("unknown Tidemark setting '{key}' (from {origin}){hint}")]
    UnknownSetting { key: String, origin: String, hint: String },
    #[error("inconsistent settings: {0}")]
    Inconsistent(String),
}

/// Live-stream settings (`stream_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Frames queued per socket before it counts as lagging (`stream_queue_size`, at least 4).
    pub queue_size: usize,
    /// A socket that drains nothing for this long is closed with its cursor
    /// (`stream_stall_timeout_seconds`, or `stream_stall_timeout_ms`).
    pub stall_timeout: std::time::Duration,
    /// The server pings this often; a peer silent for two intervals is dropped.
    pub ping_interval: std::time::Duration,
    /// A busy socket is written at most once per this window (`stream_coalesce_ms`).
    pub coalesce: std::time::Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            queue_size: 256,
            stall_timeout: std::time::Duration::from_secs(30),
            ping_interval: std::time::Duration::from_secs(20),
            coalesce: std::time::Duration::from_millis(5),
        }
    }
}

/// Tidemark's settings. Build with [`Settings::load`] or [`Settings::defaults`].
#[derive(Clone)]
pub struct Settings {
    pub project_name: String,
    pub project_version: String,
    pub project_docs: String,
    pub http_scheme: Option<String>,
    pub http_host: Option<String>,
    pub readonly: bool,
    pub batch_max_requests: u64,
    /// `None` when unset or 0 (Kinto treats both as "no default page size").
    pub paginate_by: Option<u64>,
    pub storage_max_fetch_size: u64,
    pub explicit_permissions: bool,
    pub experimental_collection_schema_validation: bool,
    pub experimental_permissions_endpoint: bool,
    pub trailing_slash_redirect_enabled: bool,
    pub trailing_slash_redirect_ttl_seconds: i64,
    pub version_prefix_redirect_enabled: bool,
    pub version_prefix_redirect_ttl_seconds: i64,
    pub heartbeat_timeout_seconds: u64,
    pub error_info_link: String,

    pub userid_hmac_secret: Option<String>,
    pub default_bucket_hmac_secret: String,
    /// Same value as `permission_principals["bucket_create_principals"]`.
    pub bucket_create_principals: Vec<String>,
    /// Every `<resource>_<perm>_principals` setting that is set, by setting name. Holds Kinto's
    /// defaults for `bucket_create_principals` and `permissions_read_principals`.
    pub permission_principals: BTreeMap<String, Vec<String>>,
    /// `multiauth.policies`, in order. Empty means no authentication, as in Kinto.
    pub multiauth_policies: Vec<String>,
    /// `multiauth.policy.<name>.use` values by policy name (`basicauth` is pre-set).
    pub multiauth_policy_uses: BTreeMap<String, String>,
    /// `multiauth_policies` resolved to implementations.
    pub auth_policies: Vec<AuthPolicy>,

    /// `includes` as written.
    pub includes: Vec<String>,
    /// The known plugins among `includes`.
    pub plugins: BTreeSet<Plugin>,

    pub cors_origins: Vec<String>,
    /// `None` when set empty (no `Access-Control-Max-Age`).
    pub cors_max_age_seconds: Option<u64>,
    pub backoff: Option<u64>,
    pub backoff_percentage: Option<u8>,
    pub retry_after_seconds: u64,
    pub eos: Option<String>,
    pub eos_message: Option<String>,
    pub eos_url: Option<String>,

    pub storage_backend: Backend,
    pub storage_url: Option<String>,
    pub data_dir: PathBuf,
    pub flush_policy: FlushPolicy,
    /// `host:port` to listen on.
    pub bind: String,
    pub max_body_bytes: usize,
    /// How long a verified account login is remembered (`account_cache_ttl_seconds`).
    pub account_cache_ttl_seconds: u64,
    /// How long a plural DELETE's `Next-Page` token stays usable.
    pub pagination_token_validity_seconds: u64,
    pub streams: StreamSettings,
    /// A client that has not sent a request's headers after this long is disconnected
    /// (`header_read_timeout_seconds`): slow-header attacks cannot hold connections open.
    pub header_read_timeout: std::time::Duration,
    /// Requests served at once; more are refused with 503 and `Retry-After` (0: no limit).
    pub max_concurrent_requests: usize,
    /// Requests per second each principal may make (0: no limit), with bursts of
    /// `rate_limit_burst`; more get 429 and `Retry-After`.
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: f64,
    /// Every request must name its application (`Kinto-App-Id`).
    pub app_id_required: bool,
    /// The applications served (empty: any).
    pub app_ids: Vec<String>,

    /// Every setting given explicitly (ini, env, overrides), by unprefixed key, after
    /// interpolation and JSON-unquoting: for lookups such as per-collection cache settings.
    pub raw: BTreeMap<String, String>,
    /// `version_json_path`: the `version.json` that `/__version__` serves, as given.
    pub version_json_path: Option<String>,
    /// One line per ignored setting, section kind or variable; the caller logs them.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::defaults()
    }
}

impl Settings {
    /// Kinto 26.5's defaults (Tidemark's where it has its own), with no ini and no environment.
    pub fn defaults() -> Settings {
        let bucket_create = vec!["system.Authenticated".to_owned()];
        let mut permission_principals = BTreeMap::new();
        permission_principals.insert("bucket_create_principals".to_owned(), bucket_create.clone());
        permission_principals.insert("permissions_read_principals".to_owned(), vec!["system.Everyone".to_owned()]);
        let mut multiauth_policy_uses = BTreeMap::new();
        multiauth_policy_uses.insert("basicauth".to_owned(), BASICAUTH_POLICY.to_owned());
        Settings {
            project_name: "tidemark".to_owned(),
            project_version: env!("CARGO_PKG_VERSION").to_owned(),
            project_docs: "https://kinto.readthedocs.io/".to_owned(),
            http_scheme: None,
            http_host: None,
            readonly: false,
            batch_max_requests: 25,
            paginate_by: None,
            storage_max_fetch_size: 10_000,
            explicit_permissions: true,
            experimental_collection_schema_validation: false,
            experimental_permissions_endpoint: false,
            trailing_slash_redirect_enabled: true,
            trailing_slash_redirect_ttl_seconds: 3600,
            version_prefix_redirect_enabled: true,
            version_prefix_redirect_ttl_seconds: -1,
            heartbeat_timeout_seconds: 10,
            error_info_link: "https://github.com/Kinto/kinto/issues/".to_owned(),
            userid_hmac_secret: None,
            default_bucket_hmac_secret: String::new(),
            bucket_create_principals: bucket_create,
            permission_principals,
            multiauth_policies: Vec::new(),
            multiauth_policy_uses,
            auth_policies: Vec::new(),
            includes: Vec::new(),
            plugins: BTreeSet::new(),
            cors_origins: vec!["*".to_owned()],
            cors_max_age_seconds: Some(3600),
            backoff: None,
            backoff_percentage: None,
            retry_after_seconds: 3,
            eos: None,
            eos_message: None,
            eos_url: None,
            storage_backend: Backend::Sled,
            storage_url: None,
            version_json_path: None,
            data_dir: PathBuf::from("./tidemark-data"),
            flush_policy: FlushPolicy::Always,
            bind: DEFAULT_BIND.to_owned(),
            max_body_bytes: 2 * 1024 * 1024,
            account_cache_ttl_seconds: 30,
            pagination_token_validity_seconds: 600,
            streams: StreamSettings::default(),
            header_read_timeout: std::time::Duration::from_secs(30),
            max_concurrent_requests: 0,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 0.0,
            app_id_required: false,
            app_ids: Vec::new(),
            raw: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Reads `ini` (if any), then `env` (pass `std::env::vars().collect()`), then `overrides`
    /// (`(key, value)` from the command line; key `http_port` sets `%(http_port)s` instead).
    pub fn load(
        ini: Option<&Path>,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Settings, SettingsError> {
        let mut notes = Notes::default();
        let http_port_override = overrides
            .iter()
            .rev()
            .find(|(key, _)| key.trim() == HTTP_PORT_OVERRIDE)
            .map(|(_, value)| value.trim().to_owned());
        let mut http_port = http_port_override.clone().unwrap_or_else(|| DEFAULT_HTTP_PORT.to_string());

        let mut values = BTreeMap::new();
        let mut server = ServerMain::default();
        let mut ini_file = None;
        if let Some(path) = ini {
            let file = IniFile::read(path)?;
            file.warn_ignored_sections(&mut notes);
            if http_port_override.is_none() {
                if let Some(port) = file.literal_port() {
                    http_port = port;
                }
            }
            values = file.app_settings(&http_port, &mut notes)?;
            server = file.server_main(&http_port)?;
            ini_file = Some(file);
        }

        let leftover_env = overlay_env(&mut values, env);
        apply_overrides(&mut values, overrides)?;
        overlay_policy_env(&mut values, leftover_env, &mut notes)?;
        check_keys(&values, &mut notes)?;

        let mut settings = Settings::defaults();
        let ini_dir = ini_file.as_ref().map(|f| f.dir.as_path());
        settings.apply(&Values(&values), ini_dir, &mut notes)?;
        settings.bind = match Values(&values).entry("bind") {
            Some(entry) if !entry.text.trim().is_empty() => check_bind(entry.text.trim(), entry)?,
            _ => server.bind(&http_port)?,
        };
        settings.raw = values.into_iter().map(|(key, entry)| (key, entry.text)).collect();
        crate::listeners::check(&settings).map_err(SettingsError::Inconsistent)?;
        for policy in settings.auth_policies.iter().filter(|p| p.kind == AuthPolicyKind::OpenId) {
            crate::auth::openid::OpenIdConfig::from_settings(&policy.name, &settings.raw)
                .map_err(SettingsError::Inconsistent)?;
        }
        settings.warnings = notes.0;
        Ok(settings)
    }

    /// Principals granted `perm` on every object of `resource` by settings, e.g.
    /// `("bucket", "create")` → `bucket_create_principals`. Empty when unset.
    pub fn principals(&self, resource: &str, perm: &str) -> &[String] {
        self.permission_principals.get(&format!("{resource}_{perm}_principals")).map_or(&[], Vec::as_slice)
    }

    fn apply(&mut self, v: &Values<'_>, ini_dir: Option<&Path>, notes: &mut Notes) -> Result<(), SettingsError> {
        for (key, field) in [
            ("project_name", &mut self.project_name),
            ("project_version", &mut self.project_version),
            ("project_docs", &mut self.project_docs),
            ("error_info_link", &mut self.error_info_link),
            ("default_bucket_hmac_secret", &mut self.default_bucket_hmac_secret),
        ] {
            if let Some(text) = v.string(key) {
                *field = text;
            }
        }
        for (key, field) in [
            ("http_scheme", &mut self.http_scheme),
            ("http_host", &mut self.http_host),
            ("eos", &mut self.eos),
            ("eos_message", &mut self.eos_message),
            ("eos_url", &mut self.eos_url),
            ("storage_url", &mut self.storage_url),
            ("version_json_path", &mut self.version_json_path),
        ] {
            *field = v.string(key);
        }
        // Only an absent secret may be generated: an explicitly empty one is Kinto's HMAC key
        // as given (its own test configuration does this), and user ids depend on it.
        self.userid_hmac_secret = v.entry("userid_hmac_secret").map(|e| e.text.trim().to_owned());
        if self.userid_hmac_secret.as_deref() == Some("") {
            notes.warn("userid_hmac_secret is empty: user ids are HMACs with an empty key, which anyone can compute (insecure; as Kinto)".into());
        }
        for (key, field) in [
            ("readonly", &mut self.readonly),
            ("explicit_permissions", &mut self.explicit_permissions),
            ("experimental_collection_schema_validation", &mut self.experimental_collection_schema_validation),
            ("experimental_permissions_endpoint", &mut self.experimental_permissions_endpoint),
            ("trailing_slash_redirect_enabled", &mut self.trailing_slash_redirect_enabled),
            ("version_prefix_redirect_enabled", &mut self.version_prefix_redirect_enabled),
        ] {
            if let Some(flag) = v.flag(key)? {
                *field = flag;
            }
        }
        for (key, field) in [
            ("batch_max_requests", &mut self.batch_max_requests),
            ("storage_max_fetch_size", &mut self.storage_max_fetch_size),
            ("heartbeat_timeout_seconds", &mut self.heartbeat_timeout_seconds),
            ("retry_after_seconds", &mut self.retry_after_seconds),
        ] {
            if let Some(n) = v.unsigned(key)? {
                *field = n;
            }
        }
        for (key, field) in [
            ("trailing_slash_redirect_ttl_seconds", &mut self.trailing_slash_redirect_ttl_seconds),
            ("version_prefix_redirect_ttl_seconds", &mut self.version_prefix_redirect_ttl_seconds),
        ] {
            if let Some(n) = v.signed(key)? {
                *field = n;
            }
        }
        self.paginate_by = v.unsigned("paginate_by")?.filter(|n| *n > 0);
        self.backoff = v.unsigned("backoff")?;
        if v.entry("cors_max_age_seconds").is_some() {
            // An explicit empty value disables the header, as in Kinto.
            self.cors_max_age_seconds = v.unsigned("cors_max_age_seconds")?;
        }
        self.backoff_percentage =
            v.parse("backoff_percentage", "a percentage (0 to 100)", |t| t.parse::<u8>().ok().filter(|p| *p <= 100))?;
        if let Some(n) = v.parse("max_body_bytes", "a number of bytes", |t| t.parse().ok())? {
            self.max_body_bytes = n;
        }
        if let Some(list) = v.list("cors_origins") {
            self.cors_origins = list;
        }
        self.apply_numbers(v)?;
        if let Some(n) = v.parse("header_read_timeout_seconds", "a number of seconds (at least 1)", |t| {
            t.parse::<u64>().ok().filter(|n| *n >= 1)
        })? {
            self.header_read_timeout = std::time::Duration::from_secs(n);
        }
        if let Some(n) = v.unsigned("max_concurrent_requests")? {
            self.max_concurrent_requests = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let rate = |key| {
            v.parse(key, "a number of requests (0 or more)", |t| {
                t.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0)
            })
        };
        if let Some(rate) = rate("rate_limit_per_second")? {
            self.rate_limit_per_second = rate;
        }
        self.rate_limit_burst = rate("rate_limit_burst")?.unwrap_or(self.rate_limit_per_second * 2.0).max(1.0);
        if let Some(flag) = v.flag("app_id_required")? {
            self.app_id_required = flag;
        }
        self.app_ids = v.list("app_ids").unwrap_or_default();

        self.apply_principals(v);
        self.apply_plugins(v, notes);
        self.apply_auth(v, notes)?;
        self.check_accounts()?;
        self.storage_backend = storage_backend(v)?;
        self.flush_policy = flush_policy(v, notes)?;
        if let Some(entry) = v.entry("data_dir") {
            let text = entry.text.trim();
            if !text.is_empty() {
                let path = PathBuf::from(text);
                // Relative paths in the ini mean "next to the ini", wherever Tidemark is started.
                self.data_dir = match (&entry.origin, ini_dir) {
                    (Origin::Ini { .. }, Some(dir)) if path.is_relative() => without_dot_components(&dir.join(path)),
                    _ => path,
                };
            }
        }
        Ok(())
    }

    /// Typed once here, so a malformed value stops the server instead of becoming a default.
    fn apply_numbers(&mut self, v: &Values<'_>) -> Result<(), SettingsError> {
        use std::time::Duration;
        if let Some(n) = v.unsigned("account_cache_ttl_seconds")? {
            self.account_cache_ttl_seconds = n;
        }
        if let Some(n) = v.unsigned("pagination_token_validity_seconds")? {
            self.pagination_token_validity_seconds = n;
        }
        let streams = &mut self.streams;
        if let Some(n) = v.parse("stream_queue_size", "a number of frames (at least 4)", |t| {
            t.parse::<usize>().ok().filter(|n| *n >= 4)
        })? {
            streams.queue_size = n;
        }
        if let Some(n) = v.unsigned("stream_stall_timeout_seconds")? {
            streams.stall_timeout = Duration::from_secs(n);
        }
        if let Some(n) = v.unsigned("stream_stall_timeout_ms")? {
            streams.stall_timeout = Duration::from_millis(n);
        }
        if let Some(n) = v.parse("stream_ping_interval_seconds", "a number of seconds (at least 1)", |t| {
            t.parse::<u64>().ok().filter(|n| *n >= 1)
        })? {
            streams.ping_interval = Duration::from_secs(n);
        }
        if let Some(n) = v.unsigned("stream_coalesce_ms")? {
            streams.coalesce = Duration::from_millis(n);
        }
        // Cache expiries are looked up by key at request time (per bucket and collection): each
        // is checked here.
        for key in v.0.keys().filter(|k| k.ends_with("_cache_expires_seconds")) {
            v.signed(key)?;
        }
        Ok(())
    }

    fn apply_principals(&mut self, v: &Values<'_>) {
        for key in v.0.keys().filter(|key| is_principal_key(key)) {
            if let Some(list) = v.list(key) {
                self.permission_principals.insert(key.clone(), list);
            }
        }
        self.bucket_create_principals = self.principals("bucket", "create").to_vec();
    }

    fn apply_plugins(&mut self, v: &Values<'_>, notes: &mut Notes) {
        self.includes = v.list("includes").unwrap_or_default();
        for include in &self.includes {
            match Plugin::from_dotted(include) {
                Some(plugin) => {
                    self.plugins.insert(plugin);
                }
                None => notes.warn(format!("include '{include}' is not a Kinto plugin Tidemark knows; ignored")),
            }
        }
    }

    fn apply_auth(&mut self, v: &Values<'_>, notes: &mut Notes) -> Result<(), SettingsError> {
        // Unlike Kinto (no policy: everyone is anonymous), a server started with no setting at
        // all accepts Basic Auth, so a newcomer's first `curl -u` works. An explicit empty
        // value keeps Kinto's meaning.
        self.multiauth_policies = v.list("multiauth.policies").unwrap_or_else(|| vec!["basicauth".to_owned()]);
        for (key, entry) in v.0 {
            let name = key.strip_prefix("multiauth.policy.").and_then(|rest| rest.strip_suffix(".use"));
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                self.multiauth_policy_uses.insert(name.to_owned(), entry.text.trim().to_owned());
            }
        }
        let mut policies = Vec::new();
        for name in &self.multiauth_policies {
            let Some(dotted) = self.multiauth_policy_uses.get(name) else {
                return Err(SettingsError::Inconsistent(format!(
                    "multiauth.policies lists '{name}' but multiauth.policy.{name}.use is not set"
                )));
            };
            let kind = policy_kind(dotted);
            match &kind {
                AuthPolicyKind::OpenId => {}
                AuthPolicyKind::Unknown(path) => notes.warn(format!(
                    "authentication policy '{name}' uses '{path}', which Tidemark does not know; \
                     its requests stay anonymous"
                )),
                AuthPolicyKind::Basic | AuthPolicyKind::Account => {}
            }
            policies.push(AuthPolicy { name: name.clone(), kind });
        }
        self.auth_policies = policies;
        Ok(())
    }

    /// The start-up checks of Kinto's accounts plugin, so a config Kinto refuses is refused here.
    fn check_accounts(&self) -> Result<(), SettingsError> {
        if !self.plugins.contains(&Plugin::Accounts) {
            return Ok(());
        }
        let has_policy =
            self.multiauth_policy_uses.values().any(|dotted| policy_kind(dotted) == AuthPolicyKind::Account);
        if !has_policy {
            return Err(SettingsError::Inconsistent(
                "kinto.plugins.accounts is included but no multiauth.policy.<name>.use is \
                 kinto.plugins.accounts.AccountsPolicy"
                    .to_owned(),
            ));
        }
        let admins = self.principals("account", "write");
        let stranded: Vec<&str> = self
            .principals("account", "create")
            .iter()
            .filter(|p| p.as_str() != "system.Everyone" && !admins.contains(p))
            .map(String::as_str)
            .collect();
        if !stranded.is_empty() {
            return Err(SettingsError::Inconsistent(format!(
                "account_create_principals has {} which account_write_principals lacks; add them \
                 there so they can create accounts for others",
                stranded.join(", ")
            )));
        }
        let position = |name: &str| self.multiauth_policies.iter().position(|p| p == name);
        if let (Some(basic), Some(account)) = (position("basicauth"), position("account")) {
            if basic < account {
                return Err(SettingsError::Inconsistent(
                    "'basicauth' must come after 'account' in multiauth.policies".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Settings {
    // Hand-written so secrets and credentials in URLs never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        let raw: BTreeMap<&str, &str> = self
            .raw
            .iter()
            .map(|(key, value)| {
                let shown = if is_sensitive(key) { "<redacted>" } else { value.as_str() };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("Settings")
            .field("project_name", &self.project_name)
            .field("project_version", &self.project_version)
            .field("project_docs", &self.project_docs)
            .field("http_scheme", &self.http_scheme)
            .field("http_host", &self.http_host)
            .field("readonly", &self.readonly)
            .field("batch_max_requests", &self.batch_max_requests)
            .field("paginate_by", &self.paginate_by)
            .field("storage_max_fetch_size", &self.storage_max_fetch_size)
            .field("explicit_permissions", &self.explicit_permissions)
            .field("experimental_collection_schema_validation", &self.experimental_collection_schema_validation)
            .field("experimental_permissions_endpoint", &self.experimental_permissions_endpoint)
            .field("trailing_slash_redirect_enabled", &self.trailing_slash_redirect_enabled)
            .field("trailing_slash_redirect_ttl_seconds", &self.trailing_slash_redirect_ttl_seconds)
            .field("version_prefix_redirect_enabled", &self.version_prefix_redirect_enabled)
            .field("version_prefix_redirect_ttl_seconds", &self.version_prefix_redirect_ttl_seconds)
            .field("heartbeat_timeout_seconds", &self.heartbeat_timeout_seconds)
            .field("error_info_link", &self.error_info_link)
            .field("userid_hmac_secret", &hidden(&self.userid_hmac_secret))
            .field("default_bucket_hmac_secret", &(!self.default_bucket_hmac_secret.is_empty()).then_some("<redacted>"))
            .field("bucket_create_principals", &self.bucket_create_principals)
            .field("permission_principals", &self.permission_principals)
            .field("multiauth_policies", &self.multiauth_policies)
            .field("multiauth_policy_uses", &self.multiauth_policy_uses)
            .field("auth_policies", &self.auth_policies)
            .field("includes", &self.includes)
            .field("plugins", &self.plugins)
            .field("cors_origins", &self.cors_origins)
            .field("cors_max_age_seconds", &self.cors_max_age_seconds)
            .field("backoff", &self.backoff)
            .field("backoff_percentage", &self.backoff_percentage)
            .field("retry_after_seconds", &self.retry_after_seconds)
            .field("eos", &self.eos)
            .field("eos_message", &self.eos_message)
            .field("eos_url", &self.eos_url)
            .field("storage_backend", &self.storage_backend)
            .field("storage_url", &hidden(&self.storage_url))
            .field("data_dir", &self.data_dir)
            .field("flush_policy", &self.flush_policy)
            .field("bind", &self.bind)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("raw", &raw)
            .field("warnings", &self.warnings)
            .finish()
    }
}

fn is_sensitive(key: &str) -> bool {
    key.contains("secret")
        || key.contains("password")
        || key.ends_with("_dsn")
        || matches!(key, "storage_url" | "permission_url" | "cache_url")
}

// ---------------------------------------------------------------------------------------------
// Values and where they came from

#[derive(Debug, Clone)]
enum Origin {
    Ini { path: PathBuf, line: usize, key: String },
    Env(String),
    Override(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Ini { path, line, key } => write!(f, "{}:{line} `{key}`", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Override(key) => write!(f, "command-line override `{key}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    text: String,
    origin: Origin,
}

fn invalid(key: &str, entry: &Entry, expected: &str) -> SettingsError {
    SettingsError::InvalidValue {
        key: key.to_owned(),
        value: entry.text.clone(),
        origin: entry.origin.to_string(),
        expected: expected.to_owned(),
    }
}

/// Typed reads of the merged settings; an empty value reads as "not set".
struct Values<'a>(&'a BTreeMap<String, Entry>);

impl<'a> Values<'a> {
    fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.0.get(key)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.entry(key).map(|e| e.text.trim()).filter(|t| !t.is_empty()).map(str::to_owned)
    }

    /// Kinto splits lists on whitespace only: `a,b` is one item.
    fn list(&self, key: &str) -> Option<Vec<String>> {
        self.entry(key).map(|e| e.text.split_whitespace().map(str::to_owned).collect())
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, SettingsError> {
        self.parse(key, "a boolean (true/false, yes/no, on/off, 1/0)", parse_bool)
    }

    fn unsigned(&self, key: &str) -> Result<Option<u64>, SettingsError> {
        self.parse(key, "a non-negative integer", |t| t.parse().ok())
    }

    fn signed(&self, key: &str) -> Result<Option<i64>, SettingsError> {
        self.parse(key, "an integer", |t| t.parse().ok())
    }

    fn parse<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, SettingsError> {
        let Some(entry) = self.entry(key) else {
            return Ok(None);
        };
        let text = entry.text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse(text).map(Some).ok_or_else(|| invalid(key, entry, expected))
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    // Pyramid's asbool truthy set, plus its explicit falsy counterparts; anything else is a typo.
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "t" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// Kinto JSON-decodes every setting (`utils.native_value`): a JSON string loses its quotes, a
/// JSON list becomes a whitespace list, `null` means unset. Everything else stays as written.
fn native_text(text: &str) -> String {
    let trimmed = text.trim();
    let decoded = match trimmed.as_bytes().first() {
        Some(b'"' | b'[' | b'n') => serde_json::from_str::<serde_json::Value>(trimmed).ok(),
        _ => None,
    };
    match decoded {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => trimmed.to_owned(),
    }
}

fn storage_backend(v: &Values<'_>) -> Result<Backend, SettingsError> {
    let Some(entry) = v.entry("storage_backend") else {
        return Ok(Backend::Sled);
    };
    match entry.text.trim() {
        "" | "sled" | "tidemark.sled" => Ok(Backend::Sled),
        "kinto.core.storage.memory" | "memory" | "tidemark.memory" => Ok(Backend::Memory),
        "kinto.core.storage.postgresql" | "postgresql" | "tidemark.postgresql" => Ok(Backend::Postgresql),
        _ => Err(invalid("storage_backend", entry, "kinto.core.storage.memory, kinto.core.storage.postgresql or sled")),
    }
}

fn flush_policy(v: &Values<'_>, notes: &mut Notes) -> Result<FlushPolicy, SettingsError> {
    let interval = v.parse("flush_interval_ms", "a positive number of milliseconds", |t| {
        t.parse::<u64>().ok().filter(|ms| *ms > 0)
    })?;
    let Some(entry) = v.entry("flush_policy").filter(|e| !e.text.trim().is_empty()) else {
        // Setting only the interval is how DESIGN.md names the interval policy.
        return Ok(interval.map_or(FlushPolicy::Always, FlushPolicy::IntervalMs));
    };
    let expected = "always, none, interval or a positive number of milliseconds";
    let written = entry.text.trim().to_ascii_lowercase();
    let policy = match written.as_str() {
        "always" => FlushPolicy::Always,
        "none" => FlushPolicy::None,
        "interval" => FlushPolicy::IntervalMs(interval.unwrap_or(DEFAULT_FLUSH_INTERVAL_MS)),
        other => match other.parse::<u64>() {
            Ok(ms) if ms > 0 => FlushPolicy::IntervalMs(ms),
            _ => return Err(invalid("flush_policy", entry, expected)),
        },
    };
    if interval.is_some() && written != "interval" {
        notes.warn(format!("flush_interval_ms is ignored: flush_policy is '{written}'"));
    }
    Ok(policy)
}

fn policy_kind(dotted: &str) -> AuthPolicyKind {
    match dotted {
        BASICAUTH_POLICY => AuthPolicyKind::Basic,
        "kinto.plugins.accounts.AccountsPolicy"
        | "kinto.plugins.accounts.authentication.AccountsAuthenticationPolicy" => AuthPolicyKind::Account,
        "kinto.plugins.openid.OpenIDConnectPolicy" => AuthPolicyKind::OpenId,
        other => AuthPolicyKind::Unknown(other.to_owned()),
    }
}

/// Checks a `host:port` bind address (`[::1]:8888` for IPv6).
fn check_bind(text: &str, entry: &Entry) -> Result<String, SettingsError> {
    let ok = text.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(text.to_owned())
    } else {
        Err(invalid("bind", entry, "host:port"))
    }
}

fn without_dot_components(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn warn(&mut self, line: String) {
        if !self.0.contains(&line) {
            self.0.push(line);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Which keys exist

enum Known {
    Used,
    Ignored(&'static str),
    Unknown,
}

/// `<resource>_<create|read|write>_principals` for any resource a service declares (Kinto's own,
/// or a toolkit resource such as `food_create_principals`).
fn is_principal_key(key: &str) -> bool {
    if key == USER_DATA_DELETE_PRINCIPALS {
        return true;
    }
    let Some(rest) = key.strip_suffix("_principals") else { return false };
    let Some((resource, perm)) = rest.rsplit_once('_') else { return false };
    PRINCIPAL_PERMS.contains(&perm)
        && !resource.is_empty()
        && resource.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn principal_keys() -> impl Iterator<Item = String> {
    PRINCIPAL_RESOURCES
        .iter()
        .flat_map(|res| PRINCIPAL_PERMS.iter().map(move |perm| format!("{res}_{perm}_principals")))
        .chain(std::iter::once(USER_DATA_DELETE_PRINCIPALS.to_owned()))
}

/// Every exact key name Tidemark knows (used or ignored); the ones env vars can set unasked.
fn exact_known_keys() -> Vec<String> {
    TYPED_KEYS
        .iter()
        .chain(TIDEMARK_KEYS)
        .map(|k| (*k).to_owned())
        .chain(principal_keys())
        .chain(IGNORED_KEYS.iter().map(|(k, _)| (*k).to_owned()))
        .chain(std::iter::once("event_listeners".to_owned()))
        .collect()
}

fn classify(key: &str) -> Known {
    if TYPED_KEYS.contains(&key)
        || TIDEMARK_KEYS.contains(&key)
        || is_principal_key(key)
        || key.starts_with("multiauth.policy.")
        // Read from `raw` by the server's listeners module.
        || key == "event_listeners"
        || key.starts_with("event_listeners.")
    {
        return Known::Used;
    }
    if let Some((_, why)) = IGNORED_KEYS.iter().find(|(k, _)| *k == key) {
        return Known::Ignored(why);
    }
    // Per-resource/bucket/collection cache settings: the server reads them from `raw`.
    if key.ends_with("_cache_expires_seconds") || key.ends_with("cache_maximum_expires_seconds") {
        return Known::Used;
    }
    if let Some((_, why)) = IGNORED_PREFIXES.iter().find(|(p, _)| key.starts_with(p)) {
        return Known::Ignored(why);
    }
    if (key.starts_with("plural_") || key.starts_with("object_")) && key.ends_with("_enabled") {
        return Known::Ignored(WHY_ENDPOINT_SWITCH);
    }
    Known::Unknown
}

fn strip_project_prefix(key: &str) -> &str {
    key.strip_prefix("kinto.").or_else(|| key.strip_prefix("tidemark.")).unwrap_or(key)
}

/// Kinto's env name for a key: upper case, `.` and `-` become `_`.
fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

fn did_you_mean(key: &str) -> String {
    if matches!(key, "host" | "port") {
        return "; set `bind = host:port` (TIDEMARK_BIND) instead".to_owned();
    }
    let best = exact_known_keys().into_iter().map(|known| (edit_distance(key, &known), known)).min();
    match best {
        Some((distance, known)) if distance <= 2 && distance < key.len() => {
            format!("; did you mean '{known}'?")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Layering

struct EnvVar {
    /// 2 for `TIDEMARK_`, 1 for `KINTO_`: the higher wins.
    rank: u8,
    name: String,
    suffix: String,
    value: String,
}

/// Applies `KINTO_*`/`TIDEMARK_*` variables naming a known or ini-defined key; returns the rest.
fn overlay_env(values: &mut BTreeMap<String, Entry>, env: &[(String, String)]) -> Vec<EnvVar> {
    let mut keys_by_env: BTreeMap<String, String> = BTreeMap::new();
    for key in exact_known_keys().into_iter().chain(values.keys().cloned()) {
        keys_by_env.entry(env_name(&key)).or_insert(key);
    }
    let mut chosen: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut leftovers = Vec::new();
    for (name, value) in env {
        let Some(var) = parse_env_var(name, value) else {
            continue;
        };
        match keys_by_env.get(&var.suffix) {
            Some(key) => {
                if chosen.get(key).is_none_or(|old| var.rank >= old.rank) {
                    chosen.insert(key.clone(), var);
                }
            }
            None => leftovers.push(var),
        }
    }
    for (key, var) in chosen {
        values.insert(key, Entry { text: native_text(&var.value), origin: Origin::Env(var.name) });
    }
    leftovers
}

fn parse_env_var(name: &str, value: &str) -> Option<EnvVar> {
    let (rank, suffix) =
        if let Some(suffix) = name.strip_prefix("TIDEMARK_") { (2, suffix) } else { (1, name.strip_prefix("KINTO_")?) };
    if suffix.is_empty() || NON_SETTING_ENV.contains(&suffix) {
        return None;
    }
    Some(EnvVar { rank, name: name.to_owned(), suffix: suffix.to_owned(), value: value.to_owned() })
}

fn apply_overrides(values: &mut BTreeMap<String, Entry>, overrides: &[(String, String)]) -> Result<(), SettingsError> {
    for (written, value) in overrides {
        let written = written.trim();
        if written == HTTP_PORT_OVERRIDE {
            continue;
        }
        let key = strip_project_prefix(written);
        if matches!(classify(key), Known::Unknown) {
            return Err(SettingsError::UnknownSetting {
                key: key.to_owned(),
                origin: format!("command-line override `{written}`"),
                hint: did_you_mean(key),
            });
        }
        values.insert(key.to_owned(), Entry { text: native_text(value), origin: Origin::Override(written.to_owned()) });
    }
    Ok(())
}

/// Second env pass: `*_MULTIAUTH_POLICY_<NAME>_<KEY>` for policies named in `multiauth.policies`,
/// which cannot be listed in advance. What is still unmatched is another tool's variable (or a
/// typo): ignored, all named in one warning.
fn overlay_policy_env(
    values: &mut BTreeMap<String, Entry>,
    mut leftovers: Vec<EnvVar>,
    notes: &mut Notes,
) -> Result<(), SettingsError> {
    let policies: Vec<String> = Values(values).list("multiauth.policies").unwrap_or_default();
    let mut unknown = Vec::new();
    // KINTO_ first so TIDEMARK_ overwrites it.
    leftovers.sort_by_key(|var| var.rank);
    for var in leftovers {
        let key = policies.iter().find_map(|policy| {
            let rest = var.suffix.strip_prefix(&format!("MULTIAUTH_POLICY_{}_", env_name(policy)))?;
            (!rest.is_empty()).then(|| format!("multiauth.policy.{policy}.{}", rest.to_lowercase()))
        });
        if let Some(key) = key {
            let overridden = values.get(&key).is_some_and(|e| matches!(e.origin, Origin::Override(_)));
            if !overridden {
                let entry = Entry { text: native_text(&var.value), origin: Origin::Env(var.name) };
                values.insert(key, entry);
            }
            continue;
        }
        // Kubernetes, Docker images and scripts set `TIDEMARK_PORT`, `TIDEMARK_HOME`…: a variable
        // that names no setting is none of ours. Only the values of known settings are checked.
        // A near miss of a long setting name is likely a typo: say which one.
        let key = var.suffix.to_lowercase();
        let hint = Some(key.as_str())
            .filter(|key| key.len() >= 6)
            .map(did_you_mean)
            .and_then(|hint| hint.strip_prefix("; ").map(|h| format!(" ({h})")))
            .unwrap_or_default();
        unknown.push(format!("{}{hint}", var.name));
    }
    if !unknown.is_empty() {
        unknown.sort();
        notes.warn(format!("environment variables that name no setting are ignored: {}", unknown.join(", ")));
    }
    Ok(())
}

/// One warning per accepted-but-unused setting; errors for unknown `tidemark.` ones.
fn check_keys(values: &BTreeMap<String, Entry>, notes: &mut Notes) -> Result<(), SettingsError> {
    for (key, entry) in values {
        match classify(key) {
            Known::Used => {}
            // An empty value configures nothing (`kinto.cache_url =`), so nothing to warn about.
            Known::Ignored(_) if entry.text.trim().is_empty() => {}
            Known::Ignored(why) => notes.warn(format!("setting '{key}' is ignored: {why}")),
            Known::Unknown => match &entry.origin {
                Origin::Ini { key: written, .. } if written.starts_with("tidemark.") => {
                    return Err(SettingsError::UnknownSetting {
                        key: key.clone(),
                        origin: entry.origin.to_string(),
                        hint: did_you_mean(key),
                    });
                }
                origin => notes.warn(format!("unknown setting '{key}' ({origin}) is ignored{}", did_you_mean(key))),
            },
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The ini file (Python configparser as PasteDeploy configures it)

struct IniEntry {
    key: String,
    /// Lines of the value; continuation lines and blank lines inside the value included.
    lines: Vec<String>,
    line: usize,
}

impl IniEntry {
    /// configparser joins continuation lines with "\n" and drops trailing blank lines.
    fn value(&self) -> String {
        self.lines.join("\n").trim_end().to_owned()
    }
}

struct IniSection {
    name: String,
    entries: Vec<IniEntry>,
}

impl IniSection {
    fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

struct IniFile {
    /// Absolute path: `%(__file__)s`.
    path: PathBuf,
    /// Its directory: `%(here)s`.
    dir: PathBuf,
    sections: Vec<IniSection>,
}

#[derive(Default)]
struct ServerMain {
    host: Option<Entry>,
    port: Option<Entry>,
    listen: Option<Entry>,
}

impl ServerMain {
    fn bind(&self, http_port: &str) -> Result<String, SettingsError> {
        let text = |e: &Option<Entry>| e.as_ref().map(|e| e.text.trim().to_owned()).filter(|t| !t.is_empty());
        if let (None, None, Some(listen)) = (&self.host, &self.port, &self.listen) {
            // waitress `listen = host:port ...`: Tidemark binds the first one.
            let first = listen.text.split_whitespace().next().unwrap_or_default();
            return check_bind(first, listen);
        }
        let host = text(&self.host).unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = text(&self.port).unwrap_or_else(|| http_port.to_owned());
        if port.parse::<u16>().is_err() {
            return Err(SettingsError::InvalidValue {
                key: "port".to_owned(),
                value: port,
                origin: self
                    .port
                    .as_ref()
                    .map_or_else(|| format!("{HTTP_PORT_OVERRIDE} override"), |e| e.origin.to_string()),
                expected: "a port number (0 to 65535)".to_owned(),
            });
        }
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        Ok(format!("{host}:{port}"))
    }
}

impl IniFile {
    fn read(path: &Path) -> Result<IniFile, SettingsError> {
        let read_error = |source| SettingsError::Read { path: path.to_path_buf(), source };
        let path = std::path::absolute(path).map_err(read_error)?;
        let text = std::fs::read_to_string(&path).map_err(read_error)?;
        let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let sections = parse_ini(&path, text.trim_start_matches('\u{feff}'))?;
        Ok(IniFile { path, dir, sections })
    }

    fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// `[server:main] port` when written as a number: what `%(http_port)s` means without a
    /// caller-given port.
    fn literal_port(&self) -> Option<String> {
        let value = self.section("server:main")?.get("port")?.value();
        (!value.contains('%') && !value.trim().is_empty()).then(|| value.trim().to_owned())
    }

    fn expand(&self, section: &IniSection, entry: &IniEntry, http_port: &str) -> Result<String, SettingsError> {
        let interpolator = Interpolator {
            section,
            defaults: self.section("DEFAULT"),
            builtins: [
                ("here", self.dir.to_string_lossy().into_owned()),
                ("__file__", self.path.to_string_lossy().into_owned()),
                (HTTP_PORT_OVERRIDE, http_port.to_owned()),
            ],
        };
        interpolator.expand(&entry.value(), 0).map_err(|message| SettingsError::Interpolation {
            path: self.path.clone(),
            line: entry.line,
            section: section.name.clone(),
            key: entry.key.clone(),
            message,
        })
    }

    fn origin(&self, entry: &IniEntry) -> Origin {
        Origin::Ini { path: self.path.clone(), line: entry.line, key: entry.key.clone() }
    }

    /// `[app:main]`, unprefixed, interpolated and JSON-unquoted.
    fn app_settings(&self, http_port: &str, notes: &mut Notes) -> Result<BTreeMap<String, Entry>, SettingsError> {
        let section =
            self.section("app:main").ok_or_else(|| SettingsError::MissingAppMain { path: self.path.clone() })?;
        let mut values: BTreeMap<String, Entry> = BTreeMap::new();
        for entry in &section.entries {
            if entry.key == "use" {
                let value = entry.value();
                if value.trim() != "egg:kinto" {
                    notes.warn(format!("[app:main] use = {value} is ignored"));
                }
                continue;
            }
            let text = native_text(&self.expand(section, entry, http_port)?);
            let key = strip_project_prefix(&entry.key);
            if let Some(previous) = values.get(key) {
                if previous.text != text {
                    return Err(SettingsError::Conflict {
                        path: self.path.clone(),
                        names: format!("{} and {}", previous.origin, self.origin(entry)),
                    });
                }
                continue;
            }
            let origin = self.origin(entry);
            values.insert(key.to_owned(), Entry { text, origin });
        }
        Ok(values)
    }

    fn server_main(&self, http_port: &str) -> Result<ServerMain, SettingsError> {
        let Some(section) = self.section("server:main") else {
            return Ok(ServerMain::default());
        };
        let read = |key: &str| -> Result<Option<Entry>, SettingsError> {
            section
                .get(key)
                .map(|entry| {
                    let text = self.expand(section, entry, http_port)?;
                    let origin = self.origin(entry);
                    Ok(Entry { text, origin })
                })
                .transpose()
        };
        Ok(ServerMain { host: read("host")?, port: read("port")?, listen: read("listen")? })
    }

    fn warn_ignored_sections(&self, notes: &mut Notes) {
        let mut kinds: Vec<(&str, &str, Vec<String>)> = Vec::new();
        for section in &self.sections {
            let Some((kind, why)) = ignored_section_kind(&section.name) else {
                continue;
            };
            let label = format!("[{}]", section.name);
            match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, _, names)) => names.push(label),
                None => kinds.push((kind, why, vec![label])),
            }
        }
        for (kind, why, names) in kinds {
            notes.warn(format!("ignored {kind} sections {}: {why}", names.join(", ")));
        }
    }
}

fn ignored_section_kind(name: &str) -> Option<(&'static str, &'static str)> {
    let logging = ["loggers", "handlers", "formatters"].contains(&name)
        || ["logger_", "handler_", "formatter_"].iter().any(|p| name.starts_with(p));
    match name {
        "app:main" | "server:main" | "DEFAULT" => None,
        _ if logging => Some(("logging", "use RUST_LOG to configure logging")),
        "uwsgi" => Some(("uwsgi", "Tidemark is its own HTTP server")),
        _ if name.contains(':') => Some(("PasteDeploy", "Tidemark reads only [app:main] and [server:main]")),
        _ => Some(("other", "Tidemark reads only [app:main] and [server:main]")),
    }
}

fn parse_ini(path: &Path, text: &str) -> Result<Vec<IniSection>, SettingsError> {
    let syntax = |line: usize, message: String| SettingsError::Syntax { path: path.to_path_buf(), line, message };
    let mut sections: Vec<IniSection> = Vec::new();
    // Whether the last entry of the last section can still take continuation lines, and the
    // indentation of its key line (continuations must be indented deeper).
    let mut in_value = false;
    let mut key_indent = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        // Full-line comments are skipped even inside a multi-line value, as configparser does.
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let current = sections.last_mut();
        if trimmed.is_empty() {
            // Kept tentatively: blank lines inside a value survive, trailing ones are trimmed.
            if let (true, Some(entry)) = (in_value, current.and_then(|s| s.entries.last_mut())) {
                entry.lines.push(String::new());
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if in_value && indent > key_indent {
            if let Some(entry) = current.and_then(|s| s.entries.last_mut()) {
                entry.lines.push(trimmed.to_owned());
                continue;
            }
        }
        key_indent = indent;
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .rfind(']')
                .map(|end| &rest[..end])
                .filter(|name| !name.is_empty())
                .ok_or_else(|| syntax(number, format!("bad section header {trimmed:?}")))?;
            if sections.iter().any(|s| s.name == name) {
                return Err(syntax(number, format!("section [{name}] is defined twice")));
            }
            sections.push(IniSection { name: name.to_owned(), entries: Vec::new() });
            in_value = false;
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(syntax(number, format!("{trimmed:?} comes before any [section] header")));
        };
        let Some(delimiter) = trimmed.find(['=', ':']) else {
            return Err(syntax(number, format!("expected `key = value` or `key: value`, found {trimmed:?}")));
        };
        let key = trimmed[..delimiter].trim_end();
        if key.is_empty() {
            return Err(syntax(number, format!("missing key before {trimmed:?}")));
        }
        if section.get(key).is_some() {
            return Err(syntax(number, format!("'{key}' is defined twice in [{}]", section.name)));
        }
        section.entries.push(IniEntry {
            key: key.to_owned(),
            lines: vec![trimmed[delimiter + 1..].trim().to_owned()],
            line: number,
        });
        in_value = true;
    }
    Ok(sections)
}

/// configparser's BasicInterpolation: `%(name)s` and `%%`.
struct Interpolator<'a> {
    section: &'a IniSection,
    defaults: Option<&'a IniSection>,
    builtins: [(&'static str, String); 3],
}

impl Interpolator<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.section
            .get(name)
            .or_else(|| self.defaults.and_then(|d| d.get(name)))
            .map(IniEntry::value)
            .or_else(|| self.builtins.iter().find(|(builtin, _)| *builtin == name).map(|(_, value)| value.clone()))
    }

    fn expand(&self, value: &str, depth: usize) -> Result<String, String> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err("too many nested %(...)s references (a reference loop?)".to_owned());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(percent) = rest.find('%') {
            out.push_str(&rest[..percent]);
            let after = &rest[percent + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let name = tail
                    .find(")s")
                    .map(|end| &tail[..end])
                    .filter(|name| !name.is_empty() && !name.contains(')'))
                    .ok_or_else(|| format!("bad reference {:?}: write %(name)s", truncate(&rest[percent..])))?;
                let raw = self.lookup(name).ok_or_else(|| {
                    format!(
                        "nothing to substitute for %({name})s (known: here, __file__, \
                         http_port, keys of the same section and of [DEFAULT])"
                    )
                })?;
                out.push_str(&self.expand(&raw, depth + 1)?);
                rest = &tail[name.len() + 2..];
            } else {
                return Err(format!(
                    "'%' must be followed by '%' or '(' at {:?}; write '%%' for a literal '%'",
                    truncate(&rest[percent..])
                ));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn truncate(text: &str) -> &str {
    text.char_indices().nth(20).map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory per test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("tidemark-settings-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn ini(&self, text: &str) -> PathBuf {
            let path = self.0.join("kinto.ini");
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn load_text(name: &str, text: &str) -> Result<Settings, SettingsError> {
        let scratch = Scratch::new(name);
        Settings::load(Some(&scratch.ini(text)), &[], &[])
    }

    fn shared_file(relative: &str) -> PathBuf {
        let candidates = [
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(relative),
            Path::new("/work/shared").join(relative),
        ];
        candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| panic!("shared/{relative} not found"))
    }

    #[test]
    fn defaults_match_kinto() {
        let s = Settings::defaults();
        assert_eq!(s.project_name, "tidemark");
        assert_eq!(s.batch_max_requests, 25);
        assert_eq!(s.retry_after_seconds, 3);
        assert_eq!(s.version_prefix_redirect_ttl_seconds, -1);
        assert_eq!(s.principals("bucket", "create"), ["system.Authenticated"]);
        assert_eq!(s.principals("permissions", "read"), ["system.Everyone"]);
        assert!(s.principals("record", "read").is_empty());
        assert_eq!(s.bind, DEFAULT_BIND);
        assert_eq!(s.storage_backend, Backend::Sled);
        assert_eq!(s.flush_policy, FlushPolicy::Always);
        assert_eq!(s.max_body_bytes, 2_097_152);
        let loaded = Settings::load(None, &[], &[]).unwrap();
        assert_eq!(loaded.bind, s.bind);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn multi_line_values_are_joined_and_split_on_whitespace_only() {
        let s = load_text(
            "multiline",
            "[app:main]\n\
             kinto.includes = kinto.plugins.flush\n\
             \x20   kinto.plugins.history\n\
             # a comment inside the value is skipped\n\
             \n\
             \x20   kinto.plugins.admin\n\
             kinto.record_read_principals = a,b\n\
             \x20 c\n\
             kinto.eos_message = first line\n\
             \x20 second line\n\n\n",
        )
        .unwrap();
        assert_eq!(s.includes, ["kinto.plugins.flush", "kinto.plugins.history", "kinto.plugins.admin"]);
        assert_eq!(s.plugins.len(), 3);
        assert_eq!(s.principals("record", "read"), ["a,b", "c"]);
        assert_eq!(s.eos_message.as_deref(), Some("first line\nsecond line"));
    }

    #[test]
    fn key_colon_value_and_inline_hash_are_kept() {
        let s = load_text("colon", "[app:main]\nkinto.project_name: my # project\nkinto.http_host = a:b\n").unwrap();
        assert_eq!(s.project_name, "my # project");
        assert_eq!(s.http_host.as_deref(), Some("a:b"));
    }

    #[test]
    fn here_is_the_ini_directory_and_relative_data_dir_follows_the_ini() {
        let scratch = Scratch::new("here");
        let ini = scratch.ini("[app:main]\ntidemark.data_dir = %(here)s/data\n");
        let s = Settings::load(Some(&ini), &[], &[]).unwrap();
        let dir = std::path::absolute(&scratch.0).unwrap();
        assert_eq!(s.data_dir, dir.join("data"));

        let ini = scratch.ini("[app:main]\ndata_dir = ./store\n");
        let s = Settings::load(Some(&ini), &[], &[]).unwrap();
        assert_eq!(s.data_dir, dir.join("store"));

        // From the environment a relative path stays relative to the working directory.
        let env = pairs(&[("TIDEMARK_DATA_DIR", "rel")]);
        let s = Settings::load(Some(&ini), &env, &[]).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("rel"));
    }

    #[test]
    fn http_port_interpolation() {
        let scratch = Scratch::new("http-port");
        let ini = scratch.ini(
            "[server:main]\nhost = 0.0.0.0\nport = %(http_port)s\n\
             [app:main]\nkinto.http_host = localhost:%(http_port)s\n",
        );
        let s = Settings::load(Some(&ini), &[], &[]).unwrap();
        assert_eq!(s.bind, "0.0.0.0:8888");
        assert_eq!(s.http_host.as_deref(), Some("localhost:8888"));

        let port = pairs(&[("http_port", "9123")]);
        let s = Settings::load(Some(&ini), &[], &port).unwrap();
        assert_eq!(s.bind, "0.0.0.0:9123");
        assert_eq!(s.http_host.as_deref(), Some("localhost:9123"));
        assert!(!s.raw.contains_key("http_port"));

        let ini = scratch.ini("[server:main]\nport = 7000\n[app:main]\nkinto.http_host = h:%(http_port)s\n");
        let s = Settings::load(Some(&ini), &[], &[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:7000");
        assert_eq!(s.http_host.as_deref(), Some("h:7000"));

        // Without an ini the port still picks the default bind's port.
        let s = Settings::load(None, &[], &port).unwrap();
        assert_eq!(s.bind, "127.0.0.1:9123");
    }

    #[test]
    fn percent_escapes_and_references() {
        let s = load_text(
            "percent",
            "[DEFAULT]\nroot = /srv\n[app:main]\nname = x\n\
             kinto.eos_message = 100%% of %(name)s in %(root)s\n",
        )
        .unwrap();
        assert_eq!(s.eos_message.as_deref(), Some("100% of x in /srv"));

        let err = load_text("percent-bad", "[app:main]\nkinto.eos_message = 100% sure\n").unwrap_err();
        assert!(matches!(err, SettingsError::Interpolation { line: 2, .. }), "{err}");
        let err = load_text("percent-missing", "[app:main]\nkinto.eos = %(nope)s\n").unwrap_err();
        assert!(err.to_string().contains("%(nope)s"), "{err}");
        let err = load_text("percent-loop", "[app:main]\na = %(b)s\nb = %(a)s\n").unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
    }

    #[test]
    fn logging_sections_are_ignored_with_one_warning_for_the_kind() {
        let s = load_text(
            "logging",
            "[app:main]\n[loggers]\nkeys = root\n[logger_root]\nlevel = WARNING\n\
             [formatter_plain]\nformat = %(asctime)s %(message)s\n[uwsgi]\nx = 1\n",
        )
        .unwrap();
        let logging: Vec<_> = s.warnings.iter().filter(|w| w.contains("logging")).collect();
        assert_eq!(logging.len(), 1, "{:?}", s.warnings);
        assert!(logging[0].contains("[formatter_plain]"));
        assert!(s.warnings.iter().any(|w| w.contains("[uwsgi]")));
    }

    #[test]
    fn prefixes_are_stripped_and_conflicts_rejected() {
        let s = load_text(
            "prefix",
            "[app:main]\nuse = egg:kinto\nkinto.paginate_by = 5\ntidemark.flush_policy = none\n\
             readonly = true\nkinto.readonly = true\nmultiauth.policies = basicauth\n",
        )
        .unwrap();
        assert_eq!(s.paginate_by, Some(5));
        assert_eq!(s.flush_policy, FlushPolicy::None);
        assert!(s.readonly);
        assert_eq!(s.multiauth_policies, ["basicauth"]);
        assert_eq!(s.raw.get("paginate_by").map(String::as_str), Some("5"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        let err = load_text("prefix-conflict", "[app:main]\nkinto.paginate_by = 5\npaginate_by = 6\n").unwrap_err();
        assert!(matches!(err, SettingsError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("kinto.paginate_by"), "{err}");

        let err =
            load_text("prefix-conflict-tidemark", "[app:main]\nkinto.readonly = true\ntidemark.readonly = false\n")
                .unwrap_err();
        assert!(matches!(err, SettingsError::Conflict { .. }), "{err}");
    }

    #[test]
    fn environment_overrides_ini_and_tidemark_wins_over_kinto() {
        let scratch = Scratch::new("env");
        let ini = scratch.ini("[app:main]\nkinto.paginate_by = 5\nkinto.batch_max_requests = 9\n");
        let kinto_only = pairs(&[("KINTO_PAGINATE_BY", "6")]);
        let s = Settings::load(Some(&ini), &kinto_only, &[]).unwrap();
        assert_eq!(s.paginate_by, Some(6));
        assert_eq!(s.batch_max_requests, 9);

        for env in [
            pairs(&[("TIDEMARK_PAGINATE_BY", "7"), ("KINTO_PAGINATE_BY", "6")]),
            pairs(&[("KINTO_PAGINATE_BY", "6"), ("TIDEMARK_PAGINATE_BY", "7")]),
        ] {
            let s = Settings::load(Some(&ini), &env, &[]).unwrap();
            assert_eq!(s.paginate_by, Some(7));
        }

        // Unlike Kinto, a known key need not be in the ini; JSON strings and lists are unwrapped.
        let env = pairs(&[
            ("KINTO_BUCKET_WRITE_PRINCIPALS", r#"["account:a", "account:b"]"#),
            ("KINTO_READONLY", r#""true""#),
            ("KINTO_MULTIAUTH_POLICIES", "account"),
            ("KINTO_MULTIAUTH_POLICY_ACCOUNT_USE", "kinto.plugins.accounts.AccountsPolicy"),
            ("KINTO_USER_DATA_DELETE_PRINCIPALS", "account:admin"),
            ("PATH", "/usr/bin"),
            ("KINTO_INI", "elsewhere.ini"),
        ]);
        let s = Settings::load(None, &env, &[]).unwrap();
        assert_eq!(s.principals("bucket", "write"), ["account:a", "account:b"]);
        assert!(s.readonly);
        assert_eq!(s.principals("user-data", "delete"), ["account:admin"]);
        assert_eq!(s.auth_policies, [AuthPolicy { name: "account".to_owned(), kind: AuthPolicyKind::Account }]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn overrides_win_over_environment_and_ini() {
        let scratch = Scratch::new("overrides");
        let ini = scratch.ini("[app:main]\nkinto.paginate_by = 5\n");
        let env = pairs(&[("TIDEMARK_PAGINATE_BY", "7")]);
        let overrides = pairs(&[("kinto.paginate_by", "8"), ("bind", "0.0.0.0:1234")]);
        let s = Settings::load(Some(&ini), &env, &overrides).unwrap();
        assert_eq!(s.paginate_by, Some(8));
        assert_eq!(s.bind, "0.0.0.0:1234");

        let err = Settings::load(None, &[], &pairs(&[("flush_polcy", "none")])).unwrap_err();
        assert!(matches!(err, SettingsError::UnknownSetting { .. }), "{err}");
        assert!(err.to_string().contains("did you mean 'flush_policy'"), "{err}");
    }

    #[test]
    fn malformed_booleans_and_integers_name_the_key() {
        let err = load_text("bad-bool", "[app:main]\nkinto.readonly = maybe\n").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, SettingsError::InvalidValue { .. }), "{message}");
        assert!(message.contains("'readonly'") && message.contains("maybe"), "{message}");
        assert!(message.contains("kinto.ini:2"), "{message}");

        let env = pairs(&[("KINTO_BATCH_MAX_REQUESTS", "lots")]);
        let err = Settings::load(None, &env, &[]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("'batch_max_requests'"), "{message}");
        assert!(message.contains("KINTO_BATCH_MAX_REQUESTS"), "{message}");

        for (value, expected) in [("YES", true), ("off", false), ("1", true), ("False", false)] {
            let s = Settings::load(None, &[], &pairs(&[("readonly", value)])).unwrap();
            assert_eq!(s.readonly, expected, "{value}");
        }
        let err = Settings::load(None, &[], &pairs(&[("backoff_percentage", "150")])).unwrap_err();
        assert!(err.to_string().contains("backoff_percentage"), "{err}");
    }

    /// Values read outside the typed fields used to fall back to defaults when malformed.
    #[test]
    fn malformed_stream_cache_and_token_settings_stop_the_server() {
        for (key, value) in [
            ("stream_queue_size", "abc"),
            ("stream_queue_size", "2"),
            ("stream_stall_timeout_seconds", "-1"),
            ("stream_stall_timeout_ms", "soon"),
            ("stream_ping_interval_seconds", "0"),
            ("stream_coalesce_ms", "5ms"),
            ("account_cache_ttl_seconds", "forever"),
            ("pagination_token_validity_seconds", "1.5"),
            ("record_cache_expires_seconds", "an hour"),
            ("b.c.record_cache_expires_seconds", "x"),
        ] {
            let err = Settings::load(None, &[], &pairs(&[(key, value)])).expect_err(key);
            let message = err.to_string();
            assert!(message.contains(key) && message.contains(value), "{key}: {message}");
        }
        let env = pairs(&[("TIDEMARK_STREAM_QUEUE_SIZE", "many")]);
        let err = Settings::load(None, &env, &[]).unwrap_err();
        assert!(err.to_string().contains("TIDEMARK_STREAM_QUEUE_SIZE"), "{err}");
        let s = Settings::load(
            None,
            &[],
            &pairs(&[
                ("stream_queue_size", "64"),
                ("stream_stall_timeout_ms", "1500"),
                ("account_cache_ttl_seconds", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.streams.queue_size, 64);
        assert_eq!(s.streams.stall_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(s.account_cache_ttl_seconds, 5);
    }

    #[test]
    fn unknown_tidemark_settings_are_errors() {
        let err = load_text("typo", "[app:main]\ntidemark.flush_polcy = none\n").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, SettingsError::UnknownSetting { .. }), "{message}");
        assert!(message.contains("'flush_polcy'"), "{message}");
        assert!(message.contains("did you mean 'flush_policy'"), "{message}");

        // Environment variables that name no setting are ignored, all in one warning: pods of a
        // Kubernetes service named `tidemark` get `TIDEMARK_PORT=tcp://…` and the like.
        let env = pairs(&[
            ("TIDEMARK_FLUSH_POLCY", "none"),
            ("TIDEMARK_PORT", "tcp://10.0.0.11:8888"),
            ("TIDEMARK_PORT_8888_TCP", "tcp://10.0.0.11:8888"),
            ("TIDEMARK_SERVICE_HOST", "10.0.0.11"),
            ("TIDEMARK_BIN", "/usr/local/bin/tidemark"),
            ("KINTO_SOMETHING_ELSE", "x"),
            ("TIDEMARK_PID", "42"),
            ("TIDEMARK_FLUSH_POLICY", "none"),
        ]);
        let s = Settings::load(None, &env, &[]).expect("unknown variables are not an error");
        assert_eq!(s.flush_policy, FlushPolicy::None, "known ones still apply");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        for name in
            ["TIDEMARK_FLUSH_POLCY", "TIDEMARK_PORT,", "TIDEMARK_SERVICE_HOST", "TIDEMARK_BIN", "KINTO_SOMETHING_ELSE"]
        {
            assert!(s.warnings[0].contains(name), "{name}: {}", s.warnings[0]);
        }
        assert!(s.warnings[0].contains("TIDEMARK_FLUSH_POLCY (did you mean 'flush_policy'?)"), "{}", s.warnings[0]);
        assert!(!s.warnings[0].contains("TIDEMARK_BIN ("), "no advice for what is no typo: {}", s.warnings[0]);
        // A malformed value of a known setting still stops the server, naming the variable.
        let err = Settings::load(None, &pairs(&[("TIDEMARK_FLUSH_POLICY", "sometimes")]), &[]).unwrap_err();
        assert!(err.to_string().contains("TIDEMARK_FLUSH_POLICY"), "{err}");
    }

    #[test]
    fn unknown_and_unused_kinto_settings_warn_once_each() {
        let s = load_text(
            "unknown",
            "[app:main]\nkinto.signer.resources = a b\nkinto.paginate_bye = 3\n\
             kinto.statsd_url = udp://localhost:8125\nkinto.cache_url =\n\
             kinto.history.exclude_user_ids = x\n\
             kinto.main.record_cache_expires_seconds = 60\n",
        )
        .unwrap();
        let about = |needle: &str| s.warnings.iter().filter(|w| w.contains(needle)).count();
        assert_eq!(about("'signer.resources'"), 1, "{:?}", s.warnings);
        assert_eq!(about("did you mean 'paginate_by'"), 1, "{:?}", s.warnings);
        assert_eq!(about("'statsd_url'"), 1, "{:?}", s.warnings);
        assert_eq!(about("'history.exclude_user_ids'"), 1, "{:?}", s.warnings);
        assert_eq!(about("cache_url"), 0, "an empty value warns about nothing");
        assert_eq!(about("record_cache_expires_seconds"), 0);
        assert_eq!(s.warnings.len(), 4, "{:?}", s.warnings);
        assert_eq!(s.raw.get("main.record_cache_expires_seconds").map(String::as_str), Some("60"));
    }

    #[test]
    fn flush_policies() {
        let load = |items: &[(&str, &str)]| Settings::load(None, &[], &pairs(items));
        assert_eq!(load(&[]).unwrap().flush_policy, FlushPolicy::Always);
        assert_eq!(load(&[("flush_policy", "interval")]).unwrap().flush_policy, FlushPolicy::IntervalMs(500));
        assert_eq!(
            load(&[("flush_policy", "interval"), ("flush_interval_ms", "250")]).unwrap().flush_policy,
            FlushPolicy::IntervalMs(250)
        );
        assert_eq!(load(&[("flush_policy", "100")]).unwrap().flush_policy, FlushPolicy::IntervalMs(100));
        assert_eq!(load(&[("flush_interval_ms", "50")]).unwrap().flush_policy, FlushPolicy::IntervalMs(50));
        assert_eq!(load(&[("flush_policy", "NONE")]).unwrap().flush_policy, FlushPolicy::None);
        assert!(load(&[("flush_policy", "sometimes")]).is_err());
        assert!(load(&[("flush_policy", "0")]).is_err());
        let s = load(&[("flush_policy", "always"), ("flush_interval_ms", "50")]).unwrap();
        assert!(s.warnings[0].contains("flush_interval_ms"), "{:?}", s.warnings);
    }

    #[test]
    fn storage_backends_map_kinto_names() {
        let load = |name: &str| Settings::load(None, &[], &pairs(&[("storage_backend", name)]));
        assert_eq!(load("kinto.core.storage.memory").unwrap().storage_backend, Backend::Memory);
        assert_eq!(load("kinto.core.storage.postgresql").unwrap().storage_backend, Backend::Postgresql);
        assert_eq!(load("sled").unwrap().storage_backend, Backend::Sled);
        assert_eq!(load("").unwrap().storage_backend, Backend::Sled);
        let err = load("kinto.core.storage.redis").unwrap_err();
        assert!(err.to_string().contains("storage_backend"), "{err}");
    }

    #[test]
    fn accounts_plugin_checks_follow_kinto() {
        let base = "[app:main]\nkinto.includes = kinto.plugins.accounts\n";
        let err = load_text("accounts-no-policy", base).unwrap_err();
        assert!(matches!(err, SettingsError::Inconsistent(_)), "{err}");

        let text = format!(
            "{base}multiauth.policies = account\n\
             multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy\n\
             kinto.account_create_principals = account:boss\n"
        );
        let err = load_text("accounts-stranded", &text).unwrap_err();
        assert!(err.to_string().contains("account:boss"), "{err}");

        let text = format!(
            "{base}multiauth.policies = basicauth account\n\
             multiauth.policy.account.use = kinto.plugins.accounts.AccountsPolicy\n"
        );
        let err = load_text("accounts-order", &text).unwrap_err();
        assert!(err.to_string().contains("basicauth"), "{err}");

        let err = load_text("policy-without-use", "[app:main]\nmultiauth.policies = fxa\n").unwrap_err();
        assert!(err.to_string().contains("multiauth.policy.fxa.use"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        for (name, text, line) in [
            ("before-section", "key = value\n", 1),
            ("no-delimiter", "[app:main]\njust words\n", 2),
            ("duplicate-key", "[app:main]\na = 1\na = 2\n", 3),
            ("duplicate-section", "[app:main]\n[app:main]\n", 2),
        ] {
            let err = load_text(name, text).unwrap_err();
            assert!(matches!(err, SettingsError::Syntax { line: l, .. } if l == line), "{name}: {err}");
        }
        let err = load_text("no-app-main", "[server:main]\nport = 1\n").unwrap_err();
        assert!(matches!(err, SettingsError::MissingAppMain { .. }), "{err}");
        let err = Settings::load(Some(Path::new("/nonexistent/kinto.ini")), &[], &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kinto.ini"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let overrides = pairs(&[("userid_hmac_secret", "hunter2"), ("storage_url", "postgresql://u:pw@db/x")]);
        let s = Settings::load(None, &[], &overrides).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("pw@db"), "{shown}");
    }

    #[test]
    fn conformance_kinto_ini_loads() {
        let path = shared_file("clients/kinto.ini");
        let s = Settings::load(Some(&path), &[], &pairs(&[("http_port", "18888")])).unwrap();
        assert_eq!(s.multiauth_policies, ["account"]);
        assert_eq!(s.auth_policies, [AuthPolicy { name: "account".to_owned(), kind: AuthPolicyKind::Account }]);
        assert_eq!(s.includes.len(), 4);
        assert_eq!(
            s.plugins,
            BTreeSet::from([Plugin::Flush, Plugin::Accounts, Plugin::DefaultBucket, Plugin::History])
        );
        assert_eq!(s.paginate_by, Some(5));
        assert_eq!(s.storage_backend, Backend::Memory);
        assert_eq!(s.storage_url, None);
        assert_eq!(s.bind, "127.0.0.1:18888");
        assert!(s.experimental_permissions_endpoint);
        assert_eq!(s.principals("account", "create"), ["system.Everyone"]);
        assert_eq!(s.principals("account", "write"), ["account:user"]);
        assert_eq!(s.bucket_create_principals, ["system.Authenticated"]);
        assert_eq!(s.userid_hmac_secret.as_deref(), Some("b4c96a8d91846eb4692291d88fe5a97d"));
        // Logging sections, and the permission and cache backends, warn once each.
        assert_eq!(s.warnings.len(), 3, "{:#?}", s.warnings);
    }

    #[test]
    fn perf_kinto_ini_loads() {
        let template = std::fs::read_to_string(shared_file("perf/kinto/kinto.ini.in")).unwrap();
        let text = template.replace("@PORT@", "28888").replace("@THREADS@", "4");
        let s = load_text("perf", &text).unwrap();
        assert_eq!(s.auth_policies, [AuthPolicy { name: "basicauth".to_owned(), kind: AuthPolicyKind::Basic }]);
        assert_eq!(s.plugins, BTreeSet::from([Plugin::DefaultBucket, Plugin::Admin]));
        assert_eq!(s.bind, "127.0.0.1:28888");
        assert_eq!(s.storage_backend, Backend::Memory);
    }
}

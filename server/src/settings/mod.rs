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
//!
//! This file holds the public types and reads the merged values into [`Settings`]. The ini
//! reader is in `ini`, the catalogue of known settings in `catalogue`, and where values come
//! from (environment, overrides) and how they are layered in `sources`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod catalogue;
mod ini;
mod sources;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use catalogue::{check_keys, is_principal_key};
use ini::{IniFile, ServerMain};
use sources::{apply_overrides, invalid, overlay_env, overlay_policy_env, Entry, Origin};

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

const DEFAULT_FLUSH_INTERVAL_MS: u64 = 500;
/// sled's own default is 1 GiB, and its resident memory runs well past what it accounts for:
/// see the scale figures in the README.
const DEFAULT_STORAGE_CACHE_MB: u64 = 128;
const BASICAUTH_POLICY: &str = "kinto.core.authentication.BasicAuthAuthenticationPolicy";

/// Where records and the log live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Memory,
    Postgresql,
}

/// Where the cache backend keeps its values (see `cache.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheBackend {
    Memory,
    Redis,
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
    /// Subscriptions one socket may hold (`stream_max_subscriptions`): each change is matched
    /// against every one of them.
    pub max_subscriptions: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            queue_size: 256,
            stall_timeout: std::time::Duration::from_secs(30),
            ping_interval: std::time::Duration::from_secs(20),
            coalesce: std::time::Duration::from_millis(5),
            max_subscriptions: 100,
        }
    }
}

/// kinto.plugins.history's settings. Tidemark's history is read from the log, so they apply
/// when entries are read: nothing is erased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistorySettings {
    /// Objects whose URI is one of these or below one are not shown (`history.exclude_resources`).
    pub exclude_resources: Vec<String>,
    /// Changes made by these users are not shown (`history.exclude_user_ids`).
    pub exclude_user_ids: Vec<String>,
    /// With N > 0, only the newest N entries per `resource_name` of each bucket are shown
    /// (`history.auto_trim_max_count`); with `history.auto_trim_user_ids`, only those users'
    /// entries are trimmed, counted per user.
    pub auto_trim_max_count: u64,
    pub auto_trim_user_ids: Vec<String>,
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
    /// Kinto's `cache_backend`, `cache_url` and `cache_prefix`.
    pub cache_backend: CacheBackend,
    pub cache_url: Option<String>,
    pub cache_prefix: String,
    pub data_dir: PathBuf,
    pub flush_policy: FlushPolicy,
    /// sled's page cache, in MiB (`storage_cache_mb`): what the store keeps decoded in memory.
    pub storage_cache_mb: u64,
    /// `host:port` to listen on.
    pub bind: String,
    pub max_body_bytes: usize,
    /// How long a verified account login is remembered (`account_cache_ttl_seconds`).
    pub account_cache_ttl_seconds: u64,
    /// Failed account logins allowed per minute for one account, and for one client address,
    /// before 429 (a burst of as many); 0: unlimited.
    pub account_login_failures_per_minute: u64,
    pub client_login_failures_per_minute: u64,
    /// Password checks run at once at most; the rest wait, then get 503.
    pub account_password_checks_at_once: usize,
    /// How long a plural DELETE's `Next-Page` token stays usable.
    pub pagination_token_validity_seconds: u64,
    pub streams: StreamSettings,
    /// A client that has not sent a request's headers after this long is disconnected
    /// (`header_read_timeout_seconds`): slow-header attacks cannot hold connections open.
    pub header_read_timeout: std::time::Duration,
    /// A request body not received within this long is refused with 408
    /// (`body_read_timeout_seconds`).
    pub body_read_timeout: std::time::Duration,
    /// A read (GET, HEAD, OPTIONS) not answered within this long gets 503 with `Retry-After`
    /// (`request_timeout_seconds`, 0: none). Writes are never cut short: once submitted they
    /// commit, and a timeout would hide whether they did.
    pub request_timeout: Option<std::time::Duration>,
    /// Gzip responses of 1 KiB or more to clients that accept it (`compression_enabled`).
    pub compression_enabled: bool,
    /// Where StatsD datagrams go (`statsd_url = udp://host:port`), and their prefix
    /// (`statsd_prefix`, `kinto` as in Kinto, so existing dashboards keep working).
    pub statsd_url: Option<String>,
    pub statsd_prefix: String,
    pub history: HistorySettings,
    /// Where the Kinto Admin build lives (`admin_assets_path`), with `kinto.plugins.admin`.
    pub admin_assets_path: Option<PathBuf>,
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
            cache_backend: CacheBackend::Memory,
            cache_url: None,
            cache_prefix: String::new(),
            version_json_path: None,
            data_dir: PathBuf::from("./tidemark-data"),
            flush_policy: FlushPolicy::Always,
            storage_cache_mb: DEFAULT_STORAGE_CACHE_MB,
            bind: DEFAULT_BIND.to_owned(),
            max_body_bytes: 2 * 1024 * 1024,
            account_cache_ttl_seconds: 30,
            account_login_failures_per_minute: 10,
            client_login_failures_per_minute: 60,
            // Half the cores: password checks never take all of the CPU from the other requests.
            account_password_checks_at_once: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            pagination_token_validity_seconds: 600,
            streams: StreamSettings::default(),
            header_read_timeout: std::time::Duration::from_secs(30),
            body_read_timeout: std::time::Duration::from_secs(30),
            request_timeout: Some(std::time::Duration::from_secs(30)),
            compression_enabled: true,
            statsd_url: None,
            statsd_prefix: "kinto".into(),
            history: HistorySettings::default(),
            admin_assets_path: None,
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
            ("cache_url", &mut self.cache_url),
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
            ("compression_enabled", &mut self.compression_enabled),
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
        if let Some(n) = v.parse("body_read_timeout_seconds", "a number of seconds (at least 1)", |t| {
            t.parse::<u64>().ok().filter(|n| *n >= 1)
        })? {
            self.body_read_timeout = std::time::Duration::from_secs(n);
        }
        if let Some(n) = v.unsigned("request_timeout_seconds")? {
            self.request_timeout = (n > 0).then(|| std::time::Duration::from_secs(n));
        }
        if let Some(url) = v.parse("statsd_url", "udp://host:port", |t| {
            let address = t.strip_prefix("udp://").unwrap_or(t).trim_end_matches('/');
            let port = address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            port.is_some_and(|p| p.parse::<u16>().is_ok()).then(|| t.to_owned())
        })? {
            self.statsd_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(prefix) = v.string("statsd_prefix") {
            self.statsd_prefix = prefix;
        }
        self.admin_assets_path = v.string("admin_assets_path").map(PathBuf::from);
        let history = &mut self.history;
        for (key, field) in [
            ("history.exclude_resources", &mut history.exclude_resources),
            ("history.exclude_user_ids", &mut history.exclude_user_ids),
            ("history.auto_trim_user_ids", &mut history.auto_trim_user_ids),
        ] {
            if let Some(list) = v.list(key) {
                *field = list;
            }
        }
        if let Some(n) = v.unsigned("history.auto_trim_max_count")? {
            history.auto_trim_max_count = n;
        }
        // When Kinto trims (every N + threshold entries); entries are trimmed as they are read here.
        v.unsigned("history.auto_trim_threshold")?;
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
        self.cache_backend = cache_backend(v, notes)?;
        self.cache_prefix = v.string("cache_prefix").unwrap_or_default();
        if self.cache_backend == CacheBackend::Redis {
            let url = self.cache_url.as_deref().unwrap_or_default();
            if let Err(err) = redis::Client::open(url) {
                let entry = v.entry("cache_url").or_else(|| v.entry("cache_backend"));
                let expected = &format!("a Redis URL such as redis://127.0.0.1:6379/0 ({err})");
                return Err(match entry {
                    Some(entry) => invalid("cache_url", entry, expected),
                    None => SettingsError::Inconsistent(format!("cache_backend redis needs cache_url: {expected}")),
                });
            }
        }
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
        if let Some(n) = v.unsigned("account_login_failures_per_minute")? {
            self.account_login_failures_per_minute = n;
        }
        if let Some(n) = v.unsigned("client_login_failures_per_minute")? {
            self.client_login_failures_per_minute = n;
        }
        if let Some(n) = v.unsigned("account_password_checks_at_once")? {
            self.account_password_checks_at_once = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        if let Some(n) = v.unsigned("pagination_token_validity_seconds")? {
            self.pagination_token_validity_seconds = n;
        }
        if let Some(n) =
            v.parse("storage_cache_mb", "a number of MiB (at least 1)", |t| t.parse::<u64>().ok().filter(|n| *n >= 1))?
        {
            self.storage_cache_mb = n;
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
        if let Some(n) = v.parse("stream_max_subscriptions", "a number of subscriptions (at least 1)", |t| {
            t.parse::<usize>().ok().filter(|n| *n >= 1)
        })? {
            streams.max_subscriptions = n;
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
            .field("storage_cache_mb", &self.storage_cache_mb)
            .field("cache_backend", &self.cache_backend)
            .field("cache_url", &hidden(&self.cache_url))
            .field("cache_prefix", &self.cache_prefix)
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
// Typed reads of the merged values

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

fn cache_backend(v: &Values<'_>, notes: &mut Notes) -> Result<CacheBackend, SettingsError> {
    let Some(entry) = v.entry("cache_backend") else {
        return Ok(CacheBackend::Memory);
    };
    match entry.text.trim() {
        "" | "kinto.core.cache.memory" | "memory" | "tidemark.memory" => Ok(CacheBackend::Memory),
        "kinto_redis.cache" | "redis" | "tidemark.redis" => Ok(CacheBackend::Redis),
        other @ ("kinto.core.cache.postgresql" | "kinto.core.cache.memcached") => {
            notes.warn(format!(
                "cache_backend {other}: Tidemark keeps its cache in memory; kinto_redis.cache (Redis) shares it between servers"
            ));
            Ok(CacheBackend::Memory)
        }
        _ => Err(invalid("cache_backend", entry, "kinto.core.cache.memory, kinto_redis.cache or redis")),
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

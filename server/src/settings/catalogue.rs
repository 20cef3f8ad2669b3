//! The catalogue of settings Tidemark knows: the ones it reads, the Kinto ones it accepts and
//! ignores (with the reason), and the check of every key against it.

use std::collections::BTreeMap;

use super::sources::{Entry, Origin};
use super::{Notes, SettingsError};

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
    "cache_backend",
    "cache_url",
    "cache_prefix",
    "version_json_path",
    "statsd_url",
    "statsd_prefix",
    "admin_assets_path",
    "history.exclude_resources",
    "history.exclude_user_ids",
    "history.auto_trim_max_count",
    "history.auto_trim_user_ids",
    "history.auto_trim_threshold",
    // Read from `raw` where they are used.
    "pagination_token_validity_seconds",
    "account_cache_ttl_seconds",
];

/// Tidemark's own settings (no Kinto equivalent).
const TIDEMARK_KEYS: &[&str] = &[
    "data_dir",
    "flush_policy",
    "flush_interval_ms",
    "storage_cache_mb",
    "bind",
    "max_body_bytes",
    // Live streams (read by the stream module from `raw`).
    "stream_queue_size",
    "stream_stall_timeout_seconds",
    "stream_stall_timeout_ms",
    "stream_ping_interval_seconds",
    "stream_coalesce_ms",
    "stream_max_subscriptions",
    // Connections and requests.
    "header_read_timeout_seconds",
    "body_read_timeout_seconds",
    "request_timeout_seconds",
    "compression_enabled",
    // Accounts: failed logins limited, password checks bounded.
    "account_login_failures_per_minute",
    "client_login_failures_per_minute",
    "account_password_checks_at_once",
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

const WHY_BACKEND: &str = "Tidemark keeps permissions in its engine and its cache in memory or Redis (cache_url)";
const WHY_POOL: &str = "Tidemark's engine has no connection pool";
const WHY_MONITORING: &str =
    "Tidemark exports Prometheus and StatsD metrics with fixed names and logs through RUST_LOG; it has no Sentry/New Relic hooks";
const WHY_PYTHON: &str = "it configures Kinto's Python/Pyramid internals";
const WHY_FIXED: &str = "Tidemark does not make this configurable";
const WHY_PLUGIN: &str = "Tidemark does not support this plugin's settings";
const WHY_ENDPOINT_SWITCH: &str = "Tidemark cannot disable individual endpoints";

/// Kinto settings that are accepted but do nothing in Tidemark, with the reason shown once.
const IGNORED_KEYS: &[(&str, &str)] = &[
    ("permission_backend", WHY_BACKEND),
    ("permission_url", WHY_BACKEND),
    ("cache_hosts", WHY_BACKEND),
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
];

/// Families of ignored Kinto settings, by prefix.
const IGNORED_PREFIXES: &[(&str, &str)] =
    &[("pyramid.", WHY_PYTHON), ("quotas.", WHY_PLUGIN), ("changes.", WHY_PLUGIN), ("account_validation", WHY_PLUGIN)];

pub(super) enum Known {
    Used,
    Ignored(&'static str),
    Unknown,
}

/// `<resource>_<create|read|write>_principals` for any resource a service declares (Kinto's own,
/// or a toolkit resource such as `food_create_principals`).
pub(super) fn is_principal_key(key: &str) -> bool {
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
pub(super) fn exact_known_keys() -> Vec<String> {
    TYPED_KEYS
        .iter()
        .chain(TIDEMARK_KEYS)
        .map(|k| (*k).to_owned())
        .chain(principal_keys())
        .chain(IGNORED_KEYS.iter().map(|(k, _)| (*k).to_owned()))
        .chain(std::iter::once("event_listeners".to_owned()))
        .collect()
}

pub(super) fn classify(key: &str) -> Known {
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

pub(super) fn strip_project_prefix(key: &str) -> &str {
    key.strip_prefix("kinto.").or_else(|| key.strip_prefix("tidemark.")).unwrap_or(key)
}

pub(super) fn did_you_mean(key: &str) -> String {
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

/// One warning per accepted-but-unused setting; errors for unknown `tidemark.` ones.
pub(super) fn check_keys(values: &BTreeMap<String, Entry>, notes: &mut Notes) -> Result<(), SettingsError> {
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

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

    let err = load_text("prefix-conflict-tidemark", "[app:main]\nkinto.readonly = true\ntidemark.readonly = false\n")
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
        ("body_read_timeout_seconds", "0"),
        ("request_timeout_seconds", "1m"),
        ("compression_enabled", "gzip"),
        ("statsd_url", "udp://localhost"),
        ("statsd_url", "localhost:eighty"),
    ] {
        let err = Settings::load(None, &[], &pairs(&[(key, value)])).expect_err(key);
        let message = err.to_string();
        assert!(message.contains(key) && message.contains(value), "{key}: {message}");
    }
    let s =
        Settings::load(None, &[], &pairs(&[("statsd_url", "udp://127.0.0.1:8125"), ("request_timeout_seconds", "0")]))
            .expect("valid");
    assert_eq!((s.statsd_url.as_deref(), s.request_timeout), (Some("udp://127.0.0.1:8125"), None));
    assert_eq!(s.statsd_prefix, "kinto", "Kinto's default prefix");
    let s = load_text(
        "history",
        "[app:main]\nkinto.history.exclude_resources = /buckets/a\n  /buckets/b/collections/c\n\
         kinto.history.auto_trim_max_count = 10\nkinto.history.auto_trim_threshold = 5\n",
    )
    .expect("valid");
    assert_eq!(s.history.exclude_resources, ["/buckets/a", "/buckets/b/collections/c"]);
    assert_eq!(s.history.auto_trim_max_count, 10);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let err = Settings::load(None, &[], &pairs(&[("history.auto_trim_max_count", "ten")])).expect_err("bad count");
    assert!(err.to_string().contains("history.auto_trim_max_count"), "{err}");
    let env = pairs(&[("TIDEMARK_STREAM_QUEUE_SIZE", "many")]);
    let err = Settings::load(None, &env, &[]).unwrap_err();
    assert!(err.to_string().contains("TIDEMARK_STREAM_QUEUE_SIZE"), "{err}");
    let s = Settings::load(
        None,
        &[],
        &pairs(&[("stream_queue_size", "64"), ("stream_stall_timeout_ms", "1500"), ("account_cache_ttl_seconds", "5")]),
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
         kinto.sentry_dsn = https://key@sentry.example/1\nkinto.cache_url =\n\
         kinto.signer.to_review_enabled = true\n\
         kinto.main.record_cache_expires_seconds = 60\n",
    )
    .unwrap();
    let about = |needle: &str| s.warnings.iter().filter(|w| w.contains(needle)).count();
    assert_eq!(about("'signer.resources'"), 1, "{:?}", s.warnings);
    assert_eq!(about("did you mean 'paginate_by'"), 1, "{:?}", s.warnings);
    assert_eq!(about("'sentry_dsn'"), 1, "{:?}", s.warnings);
    assert_eq!(about("'signer.to_review_enabled'"), 1, "{:?}", s.warnings);
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
    assert_eq!(s.plugins, BTreeSet::from([Plugin::Flush, Plugin::Accounts, Plugin::DefaultBucket, Plugin::History]));
    assert_eq!(s.paginate_by, Some(5));
    assert_eq!(s.storage_backend, Backend::Memory);
    assert_eq!(s.storage_url, None);
    assert_eq!(s.bind, "127.0.0.1:18888");
    assert!(s.experimental_permissions_endpoint);
    assert_eq!(s.principals("account", "create"), ["system.Everyone"]);
    assert_eq!(s.principals("account", "write"), ["account:user"]);
    assert_eq!(s.bucket_create_principals, ["system.Authenticated"]);
    assert_eq!(s.userid_hmac_secret.as_deref(), Some("b4c96a8d91846eb4692291d88fe5a97d"));
    // Logging sections and the permission backend warn once each; Kinto's memory cache is
    // Tidemark's own.
    assert_eq!(s.cache_backend, crate::settings::CacheBackend::Memory);
    assert_eq!(s.warnings.len(), 2, "{:#?}", s.warnings);
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

/// The INI fuzzer's corpus (`protocol/fuzz/corpus/ini`), read as `serve --ini` reads a file: a
/// setting error or settings, never a panic.
#[test]
fn ini_fuzz_corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/fuzz");
    let scratch = Scratch::new("fuzz-corpus");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join("ini")) else { continue };
        for entry in entries.flatten() {
            let path = scratch.0.join("kinto.ini");
            std::fs::write(&path, std::fs::read(entry.path()).unwrap()).unwrap();
            let _ = Settings::load(Some(&path), &[], &[]);
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "{replayed} INI inputs replayed");
}

#[test]
fn cache_backend_is_memory_or_redis_and_kintos_others_fall_back_with_a_warning() {
    use crate::settings::CacheBackend;
    let load = |items: &[(&str, &str)]| Settings::load(None, &[], &pairs(items));
    assert_eq!(load(&[]).unwrap().cache_backend, CacheBackend::Memory);
    let redis = load(&[("cache_backend", "kinto_redis.cache"), ("cache_url", "redis://127.0.0.1:6379/2")]).unwrap();
    assert_eq!(redis.cache_backend, CacheBackend::Redis);
    assert_eq!(redis.cache_url.as_deref(), Some("redis://127.0.0.1:6379/2"));
    let err = load(&[("cache_backend", "redis")]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cache_url"), "redis needs a URL: {err}");
    assert!(load(&[("cache_backend", "redis"), ("cache_url", "http://x")]).is_err(), "not a Redis URL");
    let pg = load(&[("cache_backend", "kinto.core.cache.postgresql"), ("cache_url", "postgresql://x/y")]).unwrap();
    assert_eq!(pg.cache_backend, CacheBackend::Memory);
    assert!(pg.warnings.iter().any(|w| w.contains("kinto.core.cache.postgresql")), "{:?}", pg.warnings);
    assert!(load(&[("cache_backend", "kinto.core.cache.nonsense")]).is_err());
}

//! The maintenance subcommands on a real data directory: verify, rebuild, export, import.

use std::process::Command;

use serde_json::json;
use tidemark_engine::{Engine, EngineConfig};

fn tidemark(args: &[&str]) -> (bool, String) {
    tidemark_with(args, &[])
}

/// Runs the binary with settings as `TIDEMARK_*` variables.
fn tidemark_with(args: &[&str], settings: &[(String, String)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    command.args(args).env("RUST_LOG", "error");
    for (key, value) in settings {
        command.env(format!("TIDEMARK_{}", key.to_ascii_uppercase()), value);
    }
    let output = command.output().expect("run tidemark");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn seed(dir: &std::path::Path) {
    let engine = Engine::open_sled(&dir.join("store"), EngineConfig::default()).expect("open");
    let put = |parent: &str, resource: &str, id: &str| tidemark_engine::Command {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members: None,
        parent: parent.into(),
        id: id.into(),
        op: tidemark_engine::Op::Put {
            data: json!({"n": 1}).as_object().cloned().unwrap_or_default(),
            permissions: Default::default(),
        },
        expect: tidemark_engine::Expect::Any,
        last_modified: None,
        context: Default::default(),
    };
    engine.submit_blocking(vec![put("", "bucket", "b"), put("/buckets/b", "collection", "c")]).expect("seed");
    for i in 0..20 {
        engine.submit_blocking(vec![put("/buckets/b/collections/c", "record", &format!("r{i}"))]).expect("write");
    }
    engine.close();
}

#[test]
fn verify_rebuild_export_and_import_round_trip_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data);
    let data_arg = data.display().to_string();
    let (ok, out) = tidemark(&["verify", "--data", &data_arg]);
    assert!(ok, "{out}");
    assert!(out.contains("events: 22"), "{out}");
    let (ok, out) = tidemark(&["rebuild", "--data", &data_arg]);
    assert!(ok && out.contains("unchanged"), "{out}");
    let export = dir.path().join("log.ndjson");
    let (ok, out) = tidemark(&["export", "--data", &data_arg, &export.display().to_string()]);
    assert!(ok, "{out}");
    let copy = dir.path().join("copy");
    let (ok, out) = tidemark(&["import", "--data", &copy.display().to_string(), &export.display().to_string()]);
    assert!(ok && out.contains("imported 22 events"), "{out}");
    let (ok, out) = tidemark(&["verify", "--data", &copy.display().to_string()]);
    assert!(ok, "{out}");
    // Importing twice into the same directory is refused.
    let (ok, _) = tidemark(&["import", "--data", &copy.display().to_string(), &export.display().to_string()]);
    assert!(!ok);
}

/// The way from sled to PostgreSQL and back: export on one, import on the other, the same log
/// (`TM_TEST_BACKEND=postgresql`).
#[test]
fn a_store_moves_from_sled_to_postgresql_and_back() {
    if crate::common::backend() != "postgresql" {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data);
    let export = dir.path().join("log.ndjson").display().to_string();
    let (ok, out) = tidemark(&["export", "--data", &data.display().to_string(), &export]);
    assert!(ok, "{out}");
    let pg: Vec<(String, String)> =
        crate::common::backend_settings().into_iter().filter(|(key, _)| key.starts_with("storage_")).collect();
    let empty = dir.path().join("unused").display().to_string();
    let (ok, out) = tidemark_with(&["import", "--data", &empty, &export], &pg);
    assert!(ok && out.contains("imported 22 events"), "{out}");
    let (ok, out) = tidemark_with(&["verify", "--data", &empty], &pg);
    assert!(ok && out.contains("events: 22"), "{out}");
    let (ok, _) = tidemark_with(&["import", "--data", &empty, &export], &pg);
    assert!(!ok, "importing into a database that holds a log is refused");
    let back = dir.path().join("back.ndjson").display().to_string();
    let (ok, out) = tidemark_with(&["export", "--data", &empty, &back], &pg);
    assert!(ok, "{out}");
    let same = |path: &str| std::fs::read_to_string(path).expect("export");
    assert_eq!(same(&export), same(&back), "the same log, byte for byte");
    let restored = dir.path().join("restored").display().to_string();
    let (ok, out) = tidemark(&["import", "--data", &restored, &back]);
    assert!(ok && out.contains("imported 22 events"), "{out}");
}

#[test]
fn verify_exits_non_zero_on_a_damaged_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data);
    {
        let engine = Engine::open_sled(&data.join("store"), EngineConfig::default()).expect("open");
        // Drop one event from the middle of the log behind the engine's back.
        let mut key = vec![b'L'];
        key.extend_from_slice(&5u64.to_be_bytes());
        let mut batch = tidemark_engine::storage::WriteBatch::default();
        batch.delete(key);
        engine.storage().apply(batch).expect("damage");
        engine.storage().flush().expect("flush");
        engine.close();
    }
    let (ok, out) = tidemark(&["verify", "--data", &data.display().to_string()]);
    assert!(!ok, "verify must fail: {out}");
    assert!(out.contains("gap"), "{out}");
}

/// A mistyped path is not a new, empty store: every command that reads a store says there is
/// none there, exits non-zero and leaves nothing behind; `import` (and `serve`) create one.
#[test]
fn maintenance_commands_on_a_path_with_no_store_fail_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo");
    let path = typo.display().to_string();
    let replayed = dir.path().join("replayed").display().to_string();
    let export = dir.path().join("export.ndjson").display().to_string();
    let parent = dir.path().display().to_string();
    let commands: [Vec<&str>; 6] = [
        vec!["verify", "--data", &path],
        vec!["log", "--data", &path],
        vec!["export", "--data", &path, &export],
        vec!["rebuild", "--data", &path],
        vec!["replay", "--data", &path, "--until-seq", "1", "--to", &replayed],
        vec!["verify", "--data", &parent],
    ];
    for args in &commands {
        let (ok, out) = tidemark_with(args, &[("storage_backend".into(), "sled".into())]);
        assert!(!ok, "{args:?} must fail: {out}");
        assert!(out.contains("no Tidemark store in"), "{args:?}: {out}");
    }
    assert!(!typo.exists(), "nothing was created at the mistyped path");
    assert!(!dir.path().join("replayed").exists() && !dir.path().join("export.ndjson").exists());

    // import creates its store, and the others then read it.
    let source = dir.path().join("source");
    seed(&source);
    let (ok, out) = tidemark(&["export", "--data", &source.display().to_string(), &export]);
    assert!(ok, "{out}");
    let (ok, out) = tidemark(&["import", "--data", &path, &export]);
    assert!(ok, "{out}");
    let (ok, out) = tidemark(&["verify", "--data", &path]);
    assert!(ok && out.contains("problems: none"), "{out}");
}

/// A Kubernetes pod of a service named `tidemark` has `TIDEMARK_PORT=tcp://…` and friends in its
/// environment; scripts set `TIDEMARK_HOME`, `TIDEMARK_BIN`. The server starts anyway, says once
/// which variables it ignored, and still honours the ones that name settings.
#[tokio::test]
async fn serve_starts_in_a_messy_environment_and_names_what_it_ignores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("kinto.ini");
    std::fs::write(&ini, "[app:main]\nkinto.userid_hmac_secret = s\n").expect("ini");
    let log = dir.path().join("server.log");
    let env = [
        ("TIDEMARK_PORT", "tcp://10.0.0.11:8888"),
        ("TIDEMARK_PORT_8888_TCP_ADDR", "10.0.0.11"),
        ("TIDEMARK_SERVICE_HOST", "10.0.0.11"),
        ("TIDEMARK_HOME", "/opt/tidemark"),
        ("TIDEMARK_BIN", "/usr/local/bin/tidemark"),
        ("KINTO_VERSION", "26.5.0"),
        ("TIDEMARK_PROJECT_NAME", "from-env"),
    ];
    let mut process = crate::common::spawn_binary_with_env(&dir.path().join("data"), &ini, Some(&log), &env).await;
    let hello: serde_json::Value =
        reqwest::get(format!("{}/", process.base)).await.expect("hello").json().await.expect("json");
    assert_eq!(hello["project_name"], "from-env", "a variable that names a setting applies");
    let _ = process.child.kill();
    let _ = process.child.wait();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("name no setting")).collect();
    assert_eq!(warnings.len(), 1, "{logged}");
    assert!(warnings[0].contains("TIDEMARK_PORT") && warnings[0].contains("TIDEMARK_HOME"), "{logged}");
}

/// With `RUST_LOG=request.summary=info`, one JSON line per request with Kinto's summary fields,
/// the errno of an error and the seq a write committed.
#[tokio::test]
async fn summary_lines_carry_kintos_fields_the_errno_and_the_seq_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("kinto.ini");
    std::fs::write(&ini, "[app:main]\nkinto.userid_hmac_secret = s\nmultiauth.policies = basicauth\n").expect("ini");
    let log = dir.path().join("server.log");
    let env = [("RUST_LOG", "warn,request.summary=info"), ("TIDEMARK_LOG_FORMAT", "json")];
    let mut process = crate::common::spawn_binary_with_env(&dir.path().join("data"), &ini, Some(&log), &env).await;
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}/buckets/b", process.base))
        .basic_auth("alice", Some("secret"))
        .header("User-Agent", "summary-test/1")
        .header("Accept-Language", "fr")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
    let missing = client.get(format!("{}/buckets/nope", process.base)).send().await.expect("get");
    assert_eq!(missing.status(), 401);
    // The line is written after the answer: wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = logged
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["target"] == "request.summary")
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = process.child.kill();
    let _ = process.child.wait();
    let find = |path: &str| lines.iter().find(|l| l["fields"]["path"] == path).map(|l| l["fields"].clone());
    let put = find("/v1/buckets/b").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!((put["method"].clone(), put["code"].clone()), (json!("PUT"), json!(201)), "{put}");
    assert!(put["uid"].as_str().is_some_and(|u| u.starts_with("basicauth:")), "{put}");
    assert_eq!((put["agent"].clone(), put["lang"].clone()), (json!("summary-test/1"), json!("fr")), "{put}");
    assert_eq!(put["seq"], 1, "the write's seq: {put}");
    assert!(put["t"].as_f64().is_some() && put.get("errno").is_none(), "{put}");
    let missing = find("/v1/buckets/nope").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!((missing["code"].clone(), missing["errno"].clone()), (json!(401), json!(104)), "{missing}");
    assert!(missing.get("seq").is_none(), "{missing}");
}

/// `replay` to a seq gives the views a live server had when it stood at that seq, byte for
/// byte; `log` lists and filters the events.
#[test]
fn replay_materialises_a_past_state_and_log_filters_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    seed(&data);
    // The store as it stood at seq 22, then more history.
    let (at_22, last) = {
        let engine = Engine::open_sled(&data.join("store"), EngineConfig::default()).expect("open");
        let digest = engine.digest().expect("digest");
        let change = |op: tidemark_engine::Op, id: &str| tidemark_engine::Command {
            resource: "record".into(),
            plural: "records".into(),
            members: None,
            parent: "/buckets/b/collections/c".into(),
            id: id.into(),
            op,
            expect: tidemark_engine::Expect::Any,
            last_modified: None,
            context: tidemark_engine::Context {
                user_id: Some("account:eve".into()),
                app_id: Some("audit".into()),
                ..Default::default()
            },
        };
        let put = tidemark_engine::Op::Put {
            data: json!({"n": 2}).as_object().cloned().unwrap_or_default(),
            permissions: Default::default(),
        };
        engine.submit_blocking(vec![change(put, "r1")]).expect("update");
        engine.submit_blocking(vec![change(tidemark_engine::Op::Delete, "r2")]).expect("delete");
        let last = engine.last_seq().expect("seq");
        engine.close();
        (digest, last)
    };
    assert_eq!(last, 24);
    let data_arg = data.display().to_string();
    let past = dir.path().join("past");
    let (ok, out) =
        tidemark(&["replay", "--data", &data_arg, "--until-seq", "22", "--to", &past.display().to_string()]);
    assert!(ok && out.contains("replayed 22 events"), "{out}");
    {
        let replayed = Engine::open_sled(&past.join("store"), EngineConfig::default()).expect("open replay");
        assert_eq!(replayed.digest().expect("digest"), at_22, "views identical to the store at seq 22");
        assert_eq!(replayed.last_seq().expect("seq"), 22);
        assert!(replayed.verify(&mut |_| {}).expect("verify").ok());
        replayed.close();
    }
    // A replay into a directory that holds a store is refused.
    let (ok, _) = tidemark(&["replay", "--data", &data_arg, "--until-seq", "3", "--to", &past.display().to_string()]);
    assert!(!ok);

    let lines = |out: &str| out.lines().filter(|l| l.starts_with('{')).count();
    let (ok, out) = tidemark(&["log", "--data", &data_arg, "--bucket", "b"]);
    assert!(ok && lines(&out) == 24, "{out}");
    let (ok, out) = tidemark(&["log", "--data", &data_arg, "--uri", "/buckets/b/collections/c/records/r1"]);
    assert!(ok && lines(&out) == 2, "{out}");
    let (ok, out) = tidemark(&["log", "--data", &data_arg, "--user", "account:eve", "--app", "audit"]);
    assert!(ok && lines(&out) == 2, "{out}");
    let first: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap_or("{}")).expect("json");
    assert_eq!(first["seq"], 23);
    assert_eq!(first["context"]["app_id"], "audit");
    let (ok, out) = tidemark(&["log", "--data", &data_arg, "--from-seq", "23", "--format", "table"]);
    assert!(ok && out.contains("delete") && out.contains("/buckets/b/collections/c/records/r2"), "{out}");
}

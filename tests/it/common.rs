//! A real server on 127.0.0.1:0 per test, and a small HTTP client around reqwest.

use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tidemark_server::{AppState, Settings};

pub const ALICE: &str = "alice:secret";
pub const BOB: &str = "bob:secret";

/// Which engine backend the suite runs on: `TM_TEST_BACKEND=memory|sled|postgresql` (default
/// sled). PostgreSQL is reached at `TM_TEST_PG_URL` (default
/// `postgresql://postgres@127.0.0.1:5432`), a fresh database per test server, with the cache in
/// Redis.
pub fn backend() -> String {
    std::env::var("TM_TEST_BACKEND").unwrap_or_else(|_| "sled".into())
}

/// The storage settings of the test backend: a new database for each call on PostgreSQL
/// (created by the server on first open; the suite drops those of earlier runs).
pub fn backend_settings() -> Vec<(String, String)> {
    match backend().as_str() {
        "memory" => vec![("storage_backend".into(), "kinto.core.storage.memory".into())],
        "postgresql" => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            static CLEANED: std::sync::Once = std::sync::Once::new();
            let base =
                std::env::var("TM_TEST_PG_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into());
            CLEANED.call_once(|| drop_test_databases(&base));
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("tm_test_{}_{n}", std::process::id());
            // Scaled out: the cache in Redis too (`TM_TEST_REDIS_URL`, default
            // redis://127.0.0.1:6379/0), under a prefix of this server's own.
            let redis = std::env::var("TM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
            vec![
                ("storage_backend".into(), "kinto.core.storage.postgresql".into()),
                ("storage_url".into(), format!("{}/{name}", base.trim_end_matches('/'))),
                ("cache_backend".into(), "kinto_redis.cache".into()),
                ("cache_url".into(), redis),
                ("cache_prefix".into(), format!("{name}:")),
            ]
        }
        _ => Vec::new(),
    }
}

/// Drops the databases earlier test runs left (`tm_test_<pid>_<n>`, and the crash test's
/// `tm_crash_…` and the engine's `tm_engine_…`), those of processes that are gone: a run going
/// on beside this one keeps its own. On a thread of its own: the synchronous client cannot run
/// inside the test runtime.
fn drop_test_databases(base: &str) {
    let url = format!("{}/postgres", base.trim_end_matches('/'));
    let outcome = std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        let rows = client.query("SELECT datname FROM pg_database WHERE datname ~ '^tm_(test|crash|engine)_'", &[])?;
        for row in rows {
            let name: String = row.get(0);
            let pid = name.split('_').nth(2).unwrap_or_default();
            let running = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !running {
                client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
            }
        }
        Ok(())
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("cannot reach PostgreSQL for the suite at {base}: {err}"),
        Err(_) => panic!("cleaning old test databases panicked"),
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> u64 {
        self.header("etag").and_then(|v| v.trim_matches('"').parse().ok()).unwrap_or(0)
    }

    pub fn errno(&self) -> u64 {
        self.body["errno"].as_u64().unwrap_or(0)
    }
}

/// The test configuration with `overrides` on top, and the data directory it names.
pub fn test_settings(overrides: &[(&str, &str)]) -> (Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all: Vec<(String, String)> = vec![
        ("data_dir".into(), dir.path().display().to_string()),
        ("userid_hmac_secret".into(), "some-secret".into()),
        ("multiauth.policies".into(), "basicauth".into()),
        ("includes".into(), "kinto.plugins.flush".into()),
    ];
    all.extend(backend_settings());
    all.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (Settings::load(None, &[], &all).expect("settings"), dir)
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts with settings given as (key, value) overrides on top of a test configuration.
    pub async fn start_with(overrides: &[(&str, &str)]) -> Server {
        let (settings, dir) = test_settings(overrides);
        let engine = tidemark_server::open_engine(&settings).expect("engine");
        Server::start_engine(engine, settings, dir).await
    }

    /// Serves `engine` (one built on a storage of the test's own) with `settings`.
    pub async fn start_engine(engine: tidemark_engine::Engine, settings: Settings, dir: tempfile::TempDir) -> Server {
        let secret = tidemark_server::hmac_secret(&settings).expect("secret");
        Server::serve(AppState::new(engine, settings, secret), dir, "/v1").await
    }

    /// Starts a toolkit service (its own resources and prefix) on the test backend and secret.
    pub async fn start_service(service: tidemark_server::toolkit::Service, prefix: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut service =
            service.setting("data_dir", &dir.path().display().to_string()).setting("userid_hmac_secret", "some-secret");
        for (key, value) in backend_settings() {
            service = service.setting(&key, &value);
        }
        Server::serve(service.state().expect("service"), dir, prefix).await
    }

    async fn serve(state: AppState, dir: tempfile::TempDir, prefix: &str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tidemark_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Server { addr, base: format!("http://{addr}{prefix}"), client, shutdown: Some(tx), task: Some(task), _dir: dir }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Sends a request; `auth` is `user:password` for Basic auth.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{}", self.base, path) };
        let mut request = self.client.request(Method::from_bytes(method.as_bytes()).expect("method"), url);
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').expect("user:password");
            request = request.basic_auth(user, Some(password));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{}", self.base, path);
        let mut request = self.client.request(Method::from_bytes(method.as_bytes()).expect("method"), url).body(body);
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').expect("user:password");
            request = request.basic_auth(user, Some(password));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call("GET", path, auth, None, &[]).await
    }

    pub async fn put(&self, path: &str, auth: Option<&str>, body: Value) -> Reply {
        self.call("PUT", path, auth, Some(body), &[]).await
    }

    pub async fn post(&self, path: &str, auth: Option<&str>, body: Value) -> Reply {
        self.call("POST", path, auth, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, auth: Option<&str>, body: Value) -> Reply {
        self.call("PATCH", path, auth, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call("DELETE", path, auth, None, &[]).await
    }

    /// Bucket `b` and collection `c` owned by alice.
    pub async fn seed(&self) {
        assert_eq!(self.put("/buckets/b", Some(ALICE), serde_json::json!({})).await.status, 201);
        assert_eq!(self.put("/buckets/b/collections/c", Some(ALICE), serde_json::json!({})).await.status, 201);
    }
}

/// `basicauth:<hmac>` for a `user:password` under the test secret.
pub fn user_id(auth: &str) -> String {
    format!("basicauth:{}", tidemark_server::auth::hmac_hex("some-secret", auth))
}

/// The real `tidemark` binary serving a data directory, for crash and restart tests.
pub struct Process {
    pub child: std::process::Child,
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18888)
}

/// Starts the binary on a free port and waits until it answers; its stderr goes to `log` if given.
pub async fn spawn_binary(data: &std::path::Path, ini: &std::path::Path, log: Option<&std::path::Path>) -> Process {
    spawn_binary_with_env(data, ini, log, &[]).await
}

/// [`spawn_binary`] with extra environment variables.
pub async fn spawn_binary_with_env(
    data: &std::path::Path,
    ini: &std::path::Path,
    log: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> Process {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let port = free_port();
    let stderr = match log {
        Some(log) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file")),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--ini"])
        .arg(ini)
        .arg("--data")
        .arg(data)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn tidemark");
    let base = format!("http://127.0.0.1:{port}/v1");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client.get(format!("{base}/__lbheartbeat__")).send().await.is_ok() {
            return Process { child, base };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let logged = log.map(|l| std::fs::read_to_string(l).unwrap_or_default()).unwrap_or_default();
    panic!("tidemark did not start: {logged}");
}

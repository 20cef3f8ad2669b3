//! The operator's side over real HTTP: compression, body timeouts, StatsD, and storage faults
//! answered with 503 (never a wrong 401 or an empty answer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use tidemark_engine::storage::{KeyValue, WriteBatch};
use tidemark_engine::{Engine, EngineConfig, EngineError, MemoryStorage, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{test_settings, Server, ALICE};

#[tokio::test]
async fn large_answers_are_gzipped_for_clients_that_ask_and_heads_never_are() {
    let s = Server::start().await;
    s.seed().await;
    for i in 0..40 {
        let body = json!({"data": {"title": format!("record number {i} with some words in it")}});
        assert_eq!(s.put(&format!("/buckets/b/collections/c/records/r{i}"), Some(ALICE), body).await.status, 201);
    }
    let list = "/buckets/b/collections/c/records";
    let plain = s.get(list, Some(ALICE)).await;
    assert!(plain.raw.len() > 1024 && plain.header("content-encoding").is_none());
    let gzipped = s.call("GET", list, Some(ALICE), None, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(gzipped.raw.starts_with(&[0x1f, 0x8b]) && gzipped.raw.len() < plain.raw.len() / 2);
    assert_eq!(gzipped.header("etag"), plain.header("etag"), "Kinto's headers stay");
    let small = s.call("GET", "/buckets/b", Some(ALICE), None, &[("Accept-Encoding", "gzip")]).await;
    assert!(small.header("content-encoding").is_none(), "small answers are sent as they are");
    let head = s.call("HEAD", list, Some(ALICE), None, &[("Accept-Encoding", "gzip")]).await;
    assert!(head.header("content-encoding").is_none());
    assert_eq!(head.header("total-records"), Some("40"));
    s.stop().await;
    let off = Server::start_with(&[("compression_enabled", "false")]).await;
    off.seed().await;
    for i in 0..40 {
        let body = json!({"data": {"title": format!("record number {i} with some words in it")}});
        off.put(&format!("/buckets/b/collections/c/records/r{i}"), Some(ALICE), body).await;
    }
    let r = off.call("GET", list, Some(ALICE), None, &[("Accept-Encoding", "gzip")]).await;
    assert!(r.raw.len() > 1024 && r.header("content-encoding").is_none());
    off.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_server_goes_on() {
    let s = Server::start_with(&[("body_read_timeout_seconds", "1")]).await;
    s.seed().await;
    let mut socket = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
    let head = "PUT /v1/buckets/b/collections/c/records/slow HTTP/1.1\r\nHost: x\r\n\
                Authorization: Basic YWxpY2U6c2VjcmV0\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"data\":";
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok() && text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"errno\":999") && text.contains("Request Timeout"), "{text}");
    assert_eq!(s.get("/buckets/b/collections/c/records/slow", Some(ALICE)).await.status, 404, "nothing written");
    assert_eq!(s.get("/buckets/b", Some(ALICE)).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn statsd_gets_a_count_and_a_timer_per_request_and_the_commits() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let url = format!("udp://{}", collector.local_addr().expect("addr"));
    let s = Server::start_with(&[("statsd_url", &url), ("statsd_prefix", "tm")]).await;
    assert_eq!(s.put("/buckets/b", Some(ALICE), json!({})).await.status, 201);
    let mut lines = Vec::new();
    let wanted =
        ["tm.request.bucket-object.put.201:1|c", "tm.request_duration.bucket-object.put:", "tm.commit_events:1|h"];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !wanted.iter().all(|w| lines.iter().any(|l: &String| l.starts_with(w))) {
        let mut buf = [0u8; 2048];
        match tokio::time::timeout_at(deadline, collector.recv(&mut buf)).await {
            Ok(Ok(n)) => lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned)),
            _ => panic!("missing {wanted:?} in {lines:?}"),
        }
    }
    let timer = lines.iter().find(|l| l.starts_with("tm.request_duration.bucket-object.put:")).expect("timer");
    assert!(timer.ends_with("|ms"), "{timer}");
    s.stop().await;
}

/// Memory storage whose reads fail while `failing` is set.
struct Faulty {
    inner: MemoryStorage,
    failing: Arc<AtomicBool>,
}

impl Faulty {
    fn check(&self) -> Result<(), EngineError> {
        match self.failing.load(Ordering::SeqCst) {
            true => Err(EngineError::Storage("injected read fault".into())),
            false => Ok(()),
        }
    }
}

impl Storage for Faulty {
    fn apply(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.inner.apply(batch)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.check()?;
        self.inner.get(key)
    }
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.check()?;
        self.inner.range(start, end, reverse, limit)
    }
    fn flush(&self) -> Result<(), EngineError> {
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.inner.size_on_disk()
    }
}

#[tokio::test]
async fn a_storage_fault_under_authentication_is_503_not_401() {
    let failing = Arc::new(AtomicBool::new(false));
    let storage = Faulty { inner: MemoryStorage::new(), failing: Arc::clone(&failing) };
    let engine = Engine::open(Arc::new(storage), EngineConfig::default()).expect("engine");
    let (settings, dir) = test_settings(&[
        ("includes", "kinto.plugins.accounts"),
        ("multiauth.policies", "account basicauth"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
        ("account_create_principals", "system.Everyone"),
        ("account_cache_ttl_seconds", "0"),
    ]);
    let s = Server::start_engine(engine, settings, dir).await;
    let signup = s.put("/accounts/ann", None, json!({"data": {"password": "pw-of-ann"}})).await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    assert_eq!(s.get("/", Some("ann:pw-of-ann")).await.body["user"]["id"], "account:ann");

    failing.store(true, Ordering::SeqCst);
    for auth in [Some("ann:pw-of-ann"), Some(ALICE)] {
        let r = s.get("/buckets", auth).await;
        assert_eq!((r.status.as_u16(), r.errno()), (503, 201), "{auth:?}: {}", r.body);
        assert!(r.header("retry-after").is_some());
    }
    let heartbeat = s.get("/__heartbeat__", None).await;
    assert_eq!((heartbeat.status.as_u16(), heartbeat.body["storage"].clone()), (503, json!(false)));
    failing.store(false, Ordering::SeqCst);
    assert_eq!(s.get("/buckets", Some("ann:pw-of-ann")).await.status, 200, "served again once storage is back");
    assert_eq!(s.get("/__heartbeat__", None).await.status, 200);
    s.stop().await;
}

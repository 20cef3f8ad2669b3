//! Durable async listeners over real sockets: Kinto-style `event_listeners` settings drive a
//! webhook that POSTs committed events to a tiny HTTP receiver, at least once, across kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{spawn_binary, user_id, Server, ALICE};

const WEBHOOK: &str = "tidemark.listeners.webhook";

/// One POST the receiver accepted.
#[derive(Debug, Clone)]
struct Delivery {
    idempotency_key: String,
    events: Vec<Value>,
}

#[derive(Default)]
struct Inbox {
    deliveries: Vec<Delivery>,
    requests: usize,
}

/// A minimal HTTP/1.1 receiver (keep-alive, Content-Length bodies) collecting webhook POSTs.
struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers 503 to the first `fail_first` requests and waits `delay` before every answer.
    async fn start(fail_first: usize, delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let shared = Arc::clone(&inbox);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, Arc::clone(&shared), fail_first, delay));
            }
        });
        Receiver { url, inbox, task }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.inbox.lock().expect("inbox").deliveries.clone()
    }

    fn requests(&self) -> usize {
        self.inbox.lock().expect("inbox").requests
    }

    /// Every delivered event by seq, checking a seq always comes with the same ULID.
    fn by_seq(&self) -> BTreeMap<u64, Value> {
        let mut out: BTreeMap<u64, Value> = BTreeMap::new();
        for delivery in self.deliveries() {
            for event in delivery.events {
                let seq = event["seq"].as_u64().expect("seq");
                if let Some(seen) = out.get(&seq) {
                    assert_eq!(seen["id"], event["id"], "seq {seq} delivered with two different ids");
                }
                out.insert(seq, event);
            }
        }
        out
    }

    /// Waits until seqs `1..=last` have all been delivered.
    async fn wait_for(&self, last: u64) -> BTreeMap<u64, Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.by_seq();
            if (1..=last).all(|seq| seen.contains_key(&seq)) {
                return seen;
            }
            assert!(Instant::now() < deadline, "only {} of {last} events delivered", seen.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn connection(mut stream: TcpStream, inbox: Arc<Mutex<Inbox>>, fail_first: usize, delay: Duration) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
        };
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let accepted = {
            let mut inbox = inbox.lock().expect("inbox");
            inbox.requests += 1;
            inbox.requests > fail_first
        };
        tokio::time::sleep(delay).await;
        if accepted {
            let payload: Value = serde_json::from_slice(&body).expect("webhook body is JSON");
            assert!(head.starts_with("POST /hook "), "{head}");
            let events = payload["events"].as_array().cloned().expect("events");
            let idempotency_key = header("idempotency-key").unwrap_or_default();
            inbox.lock().expect("inbox").deliveries.push(Delivery { idempotency_key, events });
        }
        let status = if accepted { "200 OK" } else { "503 Service Unavailable" };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn hook_settings<'a>(name: &'a str, url: &'a str) -> [(String, &'a str); 2] {
    [(format!("event_listeners.{name}.use"), WEBHOOK), (format!("event_listeners.{name}.url"), url)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_every_committed_event_with_its_ulid_and_filters_apply() {
    // The first two POSTs fail: the same batch must come again, not be lost.
    let all = Receiver::start(2, Duration::ZERO).await;
    let deletes = Receiver::start(0, Duration::ZERO).await;
    let mut overrides: Vec<(String, &str)> = vec![("event_listeners".into(), "all deletes")];
    overrides.extend(hook_settings("all", &all.url));
    overrides.extend(hook_settings("deletes", &deletes.url));
    overrides.push(("event_listeners.deletes.actions".into(), "delete"));
    overrides.push(("event_listeners.deletes.resources".into(), "record"));
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let server = Server::start_with(&overrides).await;

    server.seed().await;
    // (uri, action, timestamp) of every write, from the responses.
    let mut expected = vec![
        ("/buckets/b".to_owned(), "create".to_owned()),
        ("/buckets/b/collections/c".to_owned(), "create".to_owned()),
    ];
    let mut stamps = BTreeSet::new();
    for i in 0..20 {
        let uri = format!("/buckets/b/collections/c/records/r{i}");
        let reply = server.put(&uri, Some(ALICE), json!({"data": {"n": i}})).await;
        assert_eq!(reply.status, 201);
        stamps.insert((uri.clone(), reply.body["data"]["last_modified"].as_u64().expect("ts")));
        expected.push((uri, "create".into()));
    }
    let reply = server.patch("/buckets/b/collections/c/records/r0", Some(ALICE), json!({"data": {"n": -1}})).await;
    assert_eq!(reply.status, 200);
    expected.push(("/buckets/b/collections/c/records/r0".into(), "update".into()));
    for i in [1, 2] {
        let uri = format!("/buckets/b/collections/c/records/r{i}");
        assert_eq!(server.delete(&uri, Some(ALICE)).await.status, 200);
        expected.push((uri, "delete".into()));
    }
    assert_eq!(server.delete("/buckets/b/collections/c/records/nope", Some(ALICE)).await.status, 404);

    let seen = all.wait_for(expected.len() as u64).await;
    assert_eq!(seen.len(), expected.len(), "a failed request commits no event");
    assert!(all.requests() >= 3, "the two 503s were retried");
    let got: Vec<(String, String)> = seen
        .values()
        .map(|e| (e["uri"].as_str().unwrap_or("").to_owned(), e["action"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(got, expected, "every write once, in commit order");
    let ids: BTreeSet<&str> = seen.values().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), expected.len(), "one distinct ULID per event");
    assert!(ids.iter().all(|id| id.len() == 26), "ULIDs: {ids:?}");
    for (uri, ts) in &stamps {
        let event = seen.values().find(|e| e["uri"] == *uri.as_str()).expect("event");
        assert_eq!(event["timestamp"], *ts, "{uri}");
        assert_eq!(event["data"]["last_modified"], *ts, "{uri}");
        assert_eq!(event["resource_name"], "record");
        assert_eq!(event["user_id"], user_id(ALICE));
    }
    for delivery in all.deliveries() {
        let first = delivery.events.first().and_then(|e| e["id"].as_str()).expect("first");
        let last = delivery.events.last().and_then(|e| e["id"].as_str()).expect("last");
        assert_eq!(delivery.idempotency_key, format!("{first}-{last}"));
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while deletes.by_seq().len() < 2 {
        assert!(Instant::now() < deadline, "deletes not delivered: {:?}", deletes.by_seq());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the listener run past everything else, then check nothing else came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<(String, String)> = deletes
        .by_seq()
        .values()
        .map(|e| (e["uri"].as_str().unwrap_or("").to_owned(), e["action"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(got, expected[expected.len() - 2..].to_vec());
    server.stop().await;
}

async fn write_records(client: &reqwest::Client, base: &str, ids: impl Iterator<Item = String>) {
    for id in ids {
        let url = format!("{base}/buckets/b/collections/c/records/{id}");
        let r = client.put(url).basic_auth("alice", Some("secret")).json(&json!({"data": {}})).send().await;
        assert_eq!(r.expect("write").status(), 201, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_cover_every_committed_event_across_kill_9() {
    // A slow receiver and small batches: kill -9 lands with deliveries still pending.
    let receiver = Receiver::start(0, Duration::from_millis(40)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("tidemark.ini");
    let log = dir.path().join("tidemark.log");
    std::fs::write(
        &ini,
        format!(
            "[app:main]\nkinto.userid_hmac_secret = s3cret\nmultiauth.policies = basicauth\n\
             kinto.bucket_create_principals = system.Authenticated\nkinto.event_listeners = hook\n\
             kinto.event_listeners.hook.use = {WEBHOOK}\nkinto.event_listeners.hook.url = {}\n\
             kinto.event_listeners.hook.batch_size = 5\n",
            receiver.url
        ),
    )
    .expect("ini");
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    let mut server = spawn_binary(&data, &ini, Some(&log)).await;
    for path in ["/buckets/b", "/buckets/b/collections/c"] {
        let r = client.put(format!("{}{path}", server.base)).basic_auth("alice", Some("secret")).send().await;
        assert!(r.expect("seed").status().is_success());
    }
    write_records(&client, &server.base, (0..60).map(|i| format!("before-{i}"))).await;
    // Kill once delivery is under way: 13 batches at 40 ms each cannot all be through yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.by_seq().is_empty() {
        assert!(Instant::now() < deadline, "nothing delivered: {}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    let at_kill = receiver.by_seq().len();
    assert!(at_kill < 62, "kill -9 came after every delivery ({at_kill})");

    let mut server = spawn_binary(&data, &ini, Some(&log)).await;
    write_records(&client, &server.base, (0..40).map(|i| format!("after-{i}"))).await;
    let total = 2 + 60 + 40;
    receiver.wait_for(total).await;
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();

    // The log is the truth: every event in it was delivered, and nothing else was.
    let engine = tidemark_engine::Engine::open_sled(&data.join("store"), tidemark_engine::EngineConfig::default())
        .expect("open store");
    let events = engine.events_from(1, usize::MAX).expect("log");
    assert_eq!(events.len() as u64, total);
    let delivered = receiver.by_seq();
    for event in &events {
        let got = delivered.get(&event.seq).unwrap_or_else(|| panic!("event {} never delivered", event.seq));
        assert_eq!(got["id"], event.id.to_string(), "seq {}", event.seq);
    }
    assert_eq!(delivered.len(), events.len(), "no delivery of an event the log does not hold");
    assert!(engine.listener_cursor("hook").expect("cursor") <= total);
    let deliveries: usize = receiver.deliveries().iter().map(|d| d.events.len()).sum();
    eprintln!("delivered {at_kill} distinct events before kill -9; {deliveries} deliveries for {total} events in all");
    engine.close();
}

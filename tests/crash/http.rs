//! Family 1 over HTTP: the real `tidemark` binary, 8 concurrent writers (creates, updates,
//! PATCHes, deletes and atomic batches of 25) and 2 WebSocket subscribers, killed with SIGKILL
//! at a random moment, again and again on one data directory. After each kill: `tidemark verify`
//! (checksums, gap-free chained log, views equal to a rebuild), then a restart, and every
//! acknowledged write is there with its content (a write in flight at the kill is wholly there
//! or wholly absent, a batch all or nothing). The subscribers resume from their last cursor; at
//! the end they have received every change of the collection exactly once, in log order.
//!
//! With a power-cut disk (`powercut.rs`), the data directory lives on it and every kill is also
//! a power cut: whatever was not fsynced is gone before `verify` and the restart.
//!
//! On PostgreSQL (`TM_TEST_BACKEND=postgresql`) a second server shares the database and is
//! never killed: half the writers and one subscriber use it. It goes on writing while the first
//! is killed mid-write (and the writer lock that server may hold is freed), and its subscriber
//! receives every change of both servers once, in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{PowerDisk, Rng};

const AUTH: &str = "Basic YWxpY2U6c2VjcmV0"; // alice:secret
const C: &str = "/buckets/b/collections/c";
const WRITERS: u64 = 8;

/// What a record should be after a restart: its data (`None`: absent or deleted), or either of
/// two when its write was in flight at the kill.
#[derive(Clone, Debug)]
enum Expect {
    Known(Option<Value>),
    Either(Option<Value>, Option<Value>),
}

/// A write's effect on each record it touches: (id, before, after).
type Changes = Vec<(String, Option<Value>, Option<Value>)>;

#[derive(Default)]
struct Book {
    records: BTreeMap<String, Expect>,
    /// Batches in flight at a kill: all of their ids, or none, must be there.
    batches: Vec<Vec<String>>,
    acknowledged: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18777)
}

fn spawn(data: &Path, ini: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--ini"])
        .arg(ini)
        .arg("--data")
        .arg(data)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn tidemark: {e}"))
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/__lbheartbeat__")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("tidemark did not start at {base}");
}

/// A record's data as compared: without the fields the server sets.
fn content(data: &Value) -> Value {
    let mut data = data.clone();
    if let Some(map) = data.as_object_mut() {
        map.remove("id");
        map.remove("last_modified");
    }
    data
}

/// One writer until the server goes away (or `stop` is set): records what it had acknowledged,
/// and its write in flight (ids with their state before and after) when the connection broke.
struct Writer {
    client: reqwest::Client,
    base: String,
    t: u64,
    cycle: u64,
    live: BTreeMap<String, Value>,
    book: Arc<Mutex<Book>>,
    seed: u64,
    stop: Arc<AtomicBool>,
}

async fn writer(w: Writer) {
    let Writer { client, base, t, cycle, mut live, book, seed, stop } = w;
    let mut rng = Rng(seed | 1);
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let pick = rng.next() % 10;
        let existing = (!live.is_empty()).then(|| {
            let index = (rng.next() % live.len() as u64) as usize;
            live.keys().nth(index).cloned().unwrap_or_default()
        });
        let url = |id: &str| format!("{base}{C}/records/{id}");
        let (changes, request): (Changes, reqwest::RequestBuilder) = match (pick, existing) {
            (0..=3, _) | (_, None) => {
                let id = format!("c{cycle}-w{t}-{n}");
                let data = json!({"w": t, "n": n, "v": 0});
                (vec![(id.clone(), None, Some(data.clone()))], client.put(url(&id)).json(&json!({ "data": data })))
            }
            (4..=5, Some(id)) => {
                let before = live.get(&id).cloned();
                let data = json!({"w": t, "n": n, "v": 1});
                (vec![(id.clone(), before, Some(data.clone()))], client.put(url(&id)).json(&json!({ "data": data })))
            }
            (6, Some(id)) => {
                let before = live.get(&id).cloned();
                let mut after = before.clone().unwrap_or_else(|| json!({}));
                after["patched"] = json!(n);
                let request = client.patch(url(&id)).json(&json!({"data": {"patched": n}}));
                (vec![(id.clone(), before, Some(after))], request)
            }
            (7, Some(id)) => {
                let before = live.get(&id).cloned();
                (vec![(id.clone(), before, None)], client.delete(url(&id)))
            }
            (_, Some(_)) => {
                let ids: Vec<String> = (0..25).map(|k| format!("c{cycle}-w{t}-{n}-b{k}")).collect();
                let requests: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"method": "PUT", "path": format!("{C}/records/{id}"), "body": {"data": {"w": t, "batch": n}}}))
                        .collect();
                let changes = ids.iter().map(|id| (id.clone(), None, Some(json!({"w": t, "batch": n})))).collect();
                (changes, client.post(format!("{base}/batch")).json(&json!({ "requests": requests })))
            }
        };
        let ids: Vec<String> = changes.iter().map(|(id, _, _)| id.clone()).collect();
        {
            // Marked in flight before it is sent: a kill may land at any moment from here.
            let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
            for (id, before, after) in &changes {
                book.records.insert(id.clone(), Expect::Either(before.clone(), after.clone()));
            }
            if ids.len() > 1 {
                book.batches.push(ids.clone());
            }
        }
        let Ok(response) = request.header("Authorization", AUTH).send().await else { return };
        let status = response.status();
        let Ok(body) = response.json::<Value>().await else { return };
        let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
        let all_ok = status.is_success()
            && (ids.len() == 1 || body["responses"].as_array().is_some_and(|r| r.iter().all(|r| r["status"] == 201)));
        assert!(all_ok, "writer {t}: {status} {body}");
        if ids.len() > 1 {
            // By its ids: another writer's batch may have been recorded since.
            book.batches.retain(|batch| *batch != ids);
        }
        for (id, _, after) in changes {
            book.acknowledged += 1;
            match &after {
                Some(data) => live.insert(id.clone(), data.clone()),
                None => live.remove(&id),
            };
            book.records.insert(id, Expect::Known(after));
        }
    }
}

/// A subscriber: resumes from `cursor`, records every change's seq until the socket ends.
async fn subscriber(base: String, cursor: u64, seen: Arc<Mutex<Vec<u64>>>) {
    let ws = base.replacen("http://", "ws://", 1) + "/ws";
    let Ok(mut request) = ws.into_client_request() else { return };
    let Ok(value) = AUTH.parse() else { return };
    request.headers_mut().insert("Authorization", value);
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else { return };
    let since = tidemark_protocol::stream::cursor(cursor);
    let subscribe =
        json!({"type": "subscribe", "id": "s", "filter": {"bucket": "b", "collection": "c"}, "since": since});
    if socket.send(Message::Text(subscribe.to_string().into())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        if frame["type"] != "change" || !frame["uri"].as_str().is_some_and(|u| u.contains("/records/")) {
            continue;
        }
        if let Some(seq) = frame["cursor"].as_str().and_then(tidemark_protocol::stream::parse_cursor) {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(seq);
        }
    }
}

/// Every record of the collection, by id.
async fn all_records(client: &reqwest::Client, base: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut next = Some(format!("{base}{C}/records?_limit=5000"));
    while let Some(url) = next {
        let response = client.get(&url).header("Authorization", AUTH).send().await.expect("list");
        next = response.headers().get("next-page").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value = response.json().await.expect("list body");
        for record in body["data"].as_array().into_iter().flatten() {
            out.insert(record["id"].as_str().unwrap_or_default().to_owned(), content(record));
        }
    }
    out
}

/// Checks the restarted server against the book; settles what was in flight.
fn check(book: &mut Book, found: &BTreeMap<String, Value>, cycle: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for batch in std::mem::take(&mut book.batches) {
        let present = batch.iter().filter(|id| found.contains_key(*id)).count();
        if present != 0 && present != batch.len() {
            problems.push(format!("cycle {cycle}: a batch is half there ({present} of {})", batch.len()));
        }
    }
    for (id, expect) in book.records.iter_mut() {
        let actual = found.get(id).cloned();
        let fits = match &*expect {
            Expect::Known(want) => *want == actual,
            Expect::Either(before, after) => actual == *before || actual == *after,
        };
        if !fits {
            problems.push(format!("cycle {cycle}: {id} is {actual:?}, expected {expect:?}"));
        }
        *expect = Expect::Known(actual);
    }
    for id in found.keys().filter(|id| !book.records.contains_key(*id)) {
        problems.push(format!("cycle {cycle}: {id} was never written"));
    }
    problems
}

fn verify(data: &Path, ini: &Path) -> Result<(), String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["verify", "--ini"])
        .arg(ini)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "error")
        .output()
        .map_err(|e| format!("run verify: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "verify: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// The store the servers use: sled in the data directory (None), or with
/// `TM_TEST_BACKEND=postgresql` a fresh PostgreSQL database (at `TM_TEST_PG_URL`) per run of
/// cycles: its URL.
fn postgres_url() -> Option<String> {
    if std::env::var("TM_TEST_BACKEND").as_deref() != Ok("postgresql") {
        return None;
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let server = std::env::var("TM_TEST_PG_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(format!("{}/tm_crash_{}_{n}", server.trim_end_matches('/'), std::process::id()))
}

/// Cycles sharing one data directory: the store grows with every cycle, and each cycle verifies
/// and lists all of it, so a long run moves to a fresh one after this many.
const CYCLES_PER_STORE: u64 = 25;

/// Runs the cycles; returns (acknowledged writes checked, problems). With a power-cut disk the
/// data directory lives on it, and each kill is a power cut.
pub fn run(cycles: u64, rng: &mut Rng, mut disk: Option<&mut PowerDisk>) -> (usize, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (mut acknowledged, mut problems) = (0, Vec::new());
    let mut done = 0;
    while done < cycles {
        let these = CYCLES_PER_STORE.min(cycles - done);
        let (acked, found) = runtime.block_on(run_store(these, rng, disk.as_deref_mut()));
        acknowledged += acked;
        problems.extend(found);
        done += these;
        if done < cycles {
            eprintln!(
                "crash over HTTP: {done} of {cycles} cycles, {acknowledged} writes checked, {} problems",
                problems.len()
            );
        }
    }
    (acknowledged, problems)
}

/// `cycles` kill cycles on one fresh data directory, then a last round to check the streams.
async fn run_store(cycles: u64, rng: &mut Rng, mut disk: Option<&mut PowerDisk>) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let data = match &disk {
        Some(disk) => disk.path().join(format!("http-{}", rng.next())),
        None => dir.path().join("data"),
    };
    let ini = dir.path().join("tidemark.ini");
    let postgres = postgres_url();
    std::fs::write(
        &ini,
        format!(
            "[app:main]\nkinto.userid_hmac_secret = crash\nmultiauth.policies = basicauth\n\
             kinto.bucket_create_principals = system.Authenticated\n{}",
            postgres.as_ref().map_or(String::new(), |url| format!(
                "kinto.storage_backend = kinto.core.storage.postgresql\nkinto.storage_url = {url}\n"
            ))
        ),
    )
    .unwrap_or_else(|e| panic!("ini: {e}"));
    let client = reqwest::Client::new();
    let book = Arc::new(Mutex::new(Book::default()));
    let streams: Vec<Arc<Mutex<Vec<u64>>>> = (0..2).map(|_| Arc::default()).collect();
    let mut problems = Vec::new();
    // The server that is never killed, on PostgreSQL: its base URL and process.
    let mut survivor: Option<(String, Child)> = None;
    for cycle in 0..=cycles {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}/v1");
        let mut child = spawn(&data, &ini, port);
        wait_up(&client, &base).await;
        if cycle == 0 {
            for path in ["/buckets/b", "/buckets/b/collections/c"] {
                let r = client.put(format!("{base}{path}")).header("Authorization", AUTH).send().await.expect("seed");
                assert!(r.status().is_success(), "seed {path}: {}", r.status());
            }
            if postgres.is_some() {
                let port = free_port();
                let base = format!("http://127.0.0.1:{port}/v1");
                let child = spawn(&dir.path().join("data-survivor"), &ini, port);
                wait_up(&client, &base).await;
                survivor = Some((base, child));
            }
        } else {
            let found = all_records(&client, &base).await;
            let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
            problems.extend(check(&mut book, &found, cycle));
        }
        // Writer t and subscriber n use the survivor when t or n is odd.
        let base_of = |k: u64| match &survivor {
            Some((survivor, _)) if k % 2 == 1 => survivor.clone(),
            _ => base.clone(),
        };
        let resume: Vec<u64> = streams
            .iter()
            .map(|seen| seen.lock().unwrap_or_else(|p| p.into_inner()).last().copied().unwrap_or(0))
            .collect();
        let subscribers: Vec<_> = streams
            .iter()
            .zip(&resume)
            .enumerate()
            .map(|(n, (seen, cursor))| tokio::spawn(subscriber(base_of(n as u64), *cursor, Arc::clone(seen))))
            .collect();
        if cycle == cycles {
            // The last round: no writer. The subscribers catch up (nothing more arrives for a
            // second), then the servers stop.
            let count = || streams.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum::<usize>();
            let mut last = usize::MAX;
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let now = count();
                if now == last {
                    break;
                }
                last = now;
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some((_, mut survivor)) = survivor.take() {
                let _ = survivor.kill();
                let _ = survivor.wait();
            }
            for task in subscribers {
                task.abort();
            }
            break;
        }
        let live: Vec<BTreeMap<String, Value>> = {
            let book = book.lock().unwrap_or_else(|p| p.into_inner());
            (0..WRITERS)
                .map(|t| {
                    let prefix = format!("-w{t}-");
                    book.records
                        .iter()
                        .filter(|(id, _)| id.contains(&prefix))
                        .filter_map(|(id, e)| match e {
                            Expect::Known(Some(data)) => Some((id.clone(), data.clone())),
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = live
            .into_iter()
            .enumerate()
            .map(|(t, live)| {
                let (t, seed) = (t as u64, rng.next());
                let (client, base, book, stop) = (client.clone(), base_of(t), Arc::clone(&book), Arc::clone(&stop));
                tokio::spawn(writer(Writer { client, base, t, cycle, live, book, seed, stop }))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + rng.next() % 850)).await;
        let _ = child.kill();
        let _ = child.wait();
        // The survivor's writers go on a moment with the killed server gone, then stop.
        if survivor.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for task in writers {
            if let Err(err) = task.await {
                if err.is_panic() {
                    problems.push(format!("cycle {cycle}: a writer failed: {err}"));
                }
            }
        }
        // The killed server's subscriber ends with its socket; the survivor's is stopped, and
        // resumes from its cursor next cycle.
        for (n, task) in subscribers.into_iter().enumerate() {
            if survivor.is_some() && n % 2 == 1 {
                task.abort();
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
        if let Some(disk) = disk.as_deref_mut() {
            if let Err(err) = disk.power_cut() {
                problems.push(format!("cycle {cycle}: power cut: {err}"));
                break;
            }
        }
        if let Err(err) = verify(&data, &ini) {
            problems.push(format!("cycle {cycle}: {err}"));
        }
    }
    problems.extend(check_streams(&data, postgres.as_deref(), &streams));
    if disk.is_some() {
        let _ = std::fs::remove_dir_all(&data);
    }
    let acknowledged = book.lock().unwrap_or_else(|p| p.into_inner()).acknowledged;
    (acknowledged, problems)
}

/// Every record event of the collection, from the log, against what each subscriber received.
fn check_streams(data: &Path, postgres: Option<&str>, streams: &[Arc<Mutex<Vec<u64>>>]) -> Vec<String> {
    let config = tidemark_engine::EngineConfig::default();
    let engine = match postgres {
        Some(url) => tidemark_engine::Engine::open_postgres(url, config),
        None => tidemark_engine::Engine::open_sled(&data.join("store"), config),
    };
    let engine = engine.unwrap_or_else(|e| panic!("open after the run: {e}"));
    let mut expected = Vec::new();
    let mut from = 1;
    loop {
        let events = engine.events_from(from, 4096).unwrap_or_else(|e| panic!("read log: {e}"));
        let Some(last) = events.last() else { break };
        from = last.seq + 1;
        expected.extend(events.iter().filter(|e| e.parent == C && e.plural == "records").map(|e| e.seq));
    }
    let mut problems = Vec::new();
    for (n, seen) in streams.iter().enumerate() {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seen != expected {
            let duplicates = seen.windows(2).filter(|w| w[0] >= w[1]).count();
            let missing = expected.iter().filter(|s| !seen.contains(s)).count();
            problems.push(format!(
                "subscriber {n}: {} changes received, {} in the log ({duplicates} out of order or repeated, {missing} missing)",
                seen.len(),
                expected.len()
            ));
        }
    }
    problems
}

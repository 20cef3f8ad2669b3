//! Scale figures: how the release `tidemark` binary's cost grows with the data it holds.
//!
//! ```sh
//! cargo bench --bench scale                        # 10k, 100k, 1M records
//! SCALE_N="10000 100000" cargo bench --bench scale # a quicker run
//! ```
//!
//! One server on a fresh data dir (sled, defaults: `flush_policy = always`), one collection
//! `b/c` filled in steps up to each N of `SCALE_N` with records of about 300 bytes of JSON
//! (`POST /v1/batch` of 25 PUTs, 4 batches in flight). At each step:
//! 1. load rate, the server's VmRSS 2 s after the load (and its peak, VmHWM, since it last
//!    started) against the records' JSON size, and disk bytes per event
//!    (the data dir's files over the log's events);
//! 2. read latency, one connection, requests back to back for `SCALE_SECS` (default 3) per
//!    query after a warm-up, p50/p99: one record; the `_since` poll (5 changed records); the
//!    same poll answered 304; the first list page; a filter whose matches are the newest
//!    (`min_x`, W6's shape); a filter matching 1 record in 10, spread evenly (`g`); a filter
//!    matching one record in the middle (`x`); a sort on a data field (`_sort=x`);
//! 3. restart to ready after SIGKILL: the server killed, started again on the same data dir,
//!    timed until a list request answers 200.
//!
//! The goal (#17) is index-bound reads: the `_since` poll, the 304 and the newest-first pages
//! cost the same at 1M as at 10k, and a filter costs in proportion to the records it has to
//! read before the page is full, not to N. A filter on one rare value and a sort on a data
//! field have no index to use (as in Kinto's PostgreSQL backend, whose JSONB fields have none
//! either): they read every record, and the table shows it.
//! Everything listens on and connects to 127.0.0.1 only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const INI: &str = "[app:main]\nmultiauth.policies = basicauth\nkinto.userid_hmac_secret = x\n\
                   kinto.bucket_create_principals = system.Authenticated\n";
const USER: &str = "bench";
const PASSWORD: &str = "bench";
const RECORDS: &str = "/buckets/b/collections/c/records";
const BATCH: u64 = 25;
const IN_FLIGHT: u64 = 4;
const WARMUP: usize = 20;
/// Fewest samples per query, whatever the time budget (a full scan of 1M records is slow).
const MIN_SAMPLES: usize = 5;
const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
                    incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam.";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn record(i: u64) -> Value {
    json!({
        "title": format!("Record {i}"),
        "x": i,
        "g": i % 10,
        "done": i.is_multiple_of(2),
        "tags": ["sync", "bench", format!("g{}", i % 10)],
        "text": TEXT,
    })
}

fn id(i: u64) -> String {
    format!("r{i:07}")
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// The release server on a loopback port and a data dir that outlives it (restarts).
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> (Server, Duration) {
        let ini = dir.join("tidemark.ini");
        std::fs::write(&ini, INI).expect("write ini");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).expect("log");
        let addr = format!("127.0.0.1:{}", free_port());
        let begun = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["serve", "--ini"])
            .arg(&ini)
            .arg("--data")
            .arg(dir.join("data"))
            .args(["--bind", &addr])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tidemark");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("http client");
        let server = Server { child, base: format!("http://{addr}/v1"), http };
        // Ready means serving reads of the data: the list of the collection (or the root on a
        // fresh store) answers 200.
        let probe = format!("{}{RECORDS}?_limit=1", server.base);
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let status = server.get(&probe).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            if status == 200 || (status == 403 || status == 404) && server.root_ok().await {
                return (server, begun.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("tidemark did not start; see {}", dir.join("server.log").display());
    }

    async fn root_ok(&self) -> bool {
        self.get(&format!("{}/", self.base)).send().await.is_ok_and(|r| r.status().is_success())
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).basic_auth(USER, Some(PASSWORD))
    }

    async fn seed(&self) {
        for path in ["/buckets/b", "/buckets/b/collections/c"] {
            let r = self.http.put(format!("{}{path}", self.base)).basic_auth(USER, Some(PASSWORD)).send().await;
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            assert!((200..300).contains(&status), "PUT {path} answered {status}");
        }
    }

    /// A `/proc/<pid>/status` figure in KiB: `VmRSS` (now) or `VmHWM` (the peak so far).
    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// SIGKILL, as `kill -9`: no shutdown path runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Records `from..to` in batches of 25 PUTs, `IN_FLIGHT` at once; returns the JSON bytes of
    /// their data.
    async fn load(&self, from: u64, to: u64) -> u64 {
        let next = Arc::new(std::sync::atomic::AtomicU64::new(from));
        let mut tasks = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (next, http, url) = (next.clone(), self.http.clone(), format!("{}/batch", self.base));
            tasks.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                loop {
                    let start = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
                    if start >= to {
                        return bytes;
                    }
                    let requests: Vec<Value> = (start..(start + BATCH).min(to))
                        .map(|i| {
                            let data = record(i);
                            bytes += serde_json::to_vec(&data).map(|v| v.len() as u64).unwrap_or(0);
                            json!({"method": "PUT", "path": format!("{RECORDS}/{}", id(i)), "body": {"data": data}})
                        })
                        .collect();
                    let body = json!({ "requests": requests });
                    let response = http.post(&url).basic_auth(USER, Some(PASSWORD)).json(&body).send().await;
                    let response = response.expect("batch sent");
                    assert_eq!(response.status().as_u16(), 200, "batch at {start}");
                    let answer: Value = response.json().await.expect("batch answer");
                    let statuses = answer["responses"].as_array().map(Vec::as_slice).unwrap_or_default();
                    assert!(statuses.iter().all(|r| r["status"] == 201 || r["status"] == 200), "batch at {start}");
                }
            }));
        }
        let mut bytes = 0;
        for task in tasks {
            bytes += task.await.expect("load task");
        }
        bytes
    }

    /// Back-to-back GETs of one URL for `budget` (at least `MIN_SAMPLES`), after a warm-up;
    /// every answer must have `status`. Sorted latencies.
    async fn latencies(&self, url: &str, headers: &[(&str, &str)], status: u16, budget: Duration) -> Vec<Duration> {
        let send = || {
            let mut request = self.get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send()
        };
        let mut samples = Vec::new();
        let begun = Instant::now();
        let mut i = 0;
        while samples.len() < MIN_SAMPLES || begun.elapsed() < budget {
            let t = Instant::now();
            let response = send().await.expect("request sent");
            let got = response.status().as_u16();
            let _ = response.bytes().await.expect("body read");
            assert_eq!(got, status, "GET {url}");
            if i >= WARMUP.min(MIN_SAMPLES) {
                samples.push(t.elapsed());
            }
            i += 1;
        }
        samples.sort();
        samples
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Step {
    n: u64,
    load_rate: f64,
    rss_mib: f64,
    peak_mib: f64,
    data_mib: f64,
    disk_per_event: f64,
    restart: Duration,
    queries: Vec<Latency>,
}

/// One query's latencies at one step.
struct Latency {
    name: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    samples: usize,
}

struct Query<'a> {
    name: &'static str,
    url: String,
    headers: Vec<(&'a str, &'a str)>,
    status: u16,
}

fn query<'a>(name: &'static str, url: String, headers: Vec<(&'a str, &'a str)>, status: u16) -> Query<'a> {
    Query { name, url, headers, status }
}

async fn measure(server: &Server, n: u64, budget: Duration) -> Vec<Latency> {
    let base = format!("{}{RECORDS}", server.base);
    let newest: Value = server
        .get(&format!("{base}?_sort=-last_modified&_limit=6&_fields=last_modified"))
        .send()
        .await
        .expect("newest")
        .json()
        .await
        .expect("newest json");
    let since = newest["data"][5]["last_modified"].as_u64().expect("6th newest timestamp");
    let etag = {
        let r = server.get(&format!("{base}?_limit=1")).send().await.expect("etag");
        r.headers().get("ETag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let poll = format!("{base}?_since={since}");
    let queries = [
        query("one record", format!("{base}/{}", id(n / 2)), vec![], 200),
        query("_since poll (5 changed)", poll.clone(), vec![], 200),
        query("_since poll, 304", poll, vec![("If-None-Match", etag.as_str())], 304),
        query("first page (_limit=100)", format!("{base}?_limit=100"), vec![], 200),
        query(
            "filter, newest match (min_x)",
            format!("{base}?_sort=-last_modified&min_x={}&_limit=50", n * 9 / 10),
            vec![],
            200,
        ),
        query("filter, 1 in 10 spread (g=7)", format!("{base}?g=7&_limit=50"), vec![], 200),
        query("filter, 1 match (x=N/2)", format!("{base}?x={}", n / 2), vec![], 200),
        query("sort on a data field (_sort=x)", format!("{base}?_sort=x&_limit=50"), vec![], 200),
    ];
    let mut rows = Vec::new();
    for q in &queries {
        let samples = server.latencies(&q.url, &q.headers, q.status, budget).await;
        rows.push(Latency {
            name: q.name,
            p50_ms: pct_ms(&samples, 0.5),
            p99_ms: pct_ms(&samples, 0.99),
            samples: samples.len(),
        });
    }
    rows
}

fn main() {
    let steps: Vec<u64> = std::env::var("SCALE_N")
        .unwrap_or_else(|_| "10000 100000 1000000".into())
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .filter(|&n| n > 10)
        .collect();
    let secs = std::env::var("SCALE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let budget = Duration::from_secs_f64(secs);
    println!("scale: N = {steps:?}; {secs} s per query; server {}", env!("CARGO_BIN_EXE_tidemark"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = runtime.block_on(async {
        let (mut server, _) = Server::start(dir.path()).await;
        server.seed().await;
        let (mut loaded, mut data_bytes) = (0u64, 0u64);
        let mut rows = Vec::new();
        for &n in &steps {
            if n <= loaded {
                continue;
            }
            let begun = Instant::now();
            data_bytes += server.load(loaded, n).await;
            let load_rate = (n - loaded) as f64 / begun.elapsed().as_secs_f64();
            loaded = n;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss_mib = server.memory_kib("VmRSS:") as f64 / 1024.0;
            let peak_mib = server.memory_kib("VmHWM:") as f64 / 1024.0;
            let events = n + 2;
            let disk_per_event = dir_bytes(&dir.path().join("data")) as f64 / events as f64;
            let queries = measure(&server, n, budget).await;
            server.kill();
            let (restarted, restart) = Server::start(dir.path()).await;
            server = restarted;
            println!(
                "N = {n}: loaded at {load_rate:.0} records/s; ready {:.0} ms after kill -9",
                restart.as_secs_f64() * 1e3
            );
            let data_mib = data_bytes as f64 / (1024.0 * 1024.0);
            rows.push(Step { n, load_rate, rss_mib, peak_mib, data_mib, disk_per_event, restart, queries });
        }
        rows
    });
    runtime.shutdown_timeout(Duration::from_secs(5));

    println!();
    println!("=== Tidemark at scale (one collection; release build, sled, flush_policy = always) ===");
    println!(
        "{:>9} {:>10} {:>10} {:>14} {:>10} {:>8} {:>12} {:>14}",
        "records", "load/s", "RSS MiB", "peak RSS MiB", "data MiB", "RSS/data", "disk B/event", "kill -9→ready"
    );
    for s in &rows {
        println!(
            "{:>9} {:>10.0} {:>10.1} {:>14.1} {:>10.1} {:>8.2} {:>12.0} {:>11.0} ms",
            s.n,
            s.load_rate,
            s.rss_mib,
            s.peak_mib,
            s.data_mib,
            s.rss_mib / s.data_mib,
            s.disk_per_event,
            s.restart.as_secs_f64() * 1e3
        );
    }
    println!();
    print!("{:<32}", "read p50 / p99 ms (samples)");
    for s in &rows {
        print!(" {:>24}", format!("N = {}", s.n));
    }
    println!();
    let names: Vec<&str> = rows.first().map(|s| s.queries.iter().map(|q| q.name).collect()).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        print!("{name:<32}");
        for s in &rows {
            let q = &s.queries[i];
            print!(" {:>24}", format!("{:.2} / {:.2} ({})", q.p50_ms, q.p99_ms, q.samples));
        }
        println!();
    }
}

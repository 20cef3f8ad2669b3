//! Live-stream fan-out benchmark: the release `tidemark` binary, K WebSocket subscribers on
//! loopback in this process, one writer.
//!
//! ```sh
//! bash -c 'ulimit -n 65536; cargo bench --bench fanout'
//! FANOUT_K="1000" bash -c 'ulimit -n 65536; cargo bench --bench fanout'
//! ```
//!
//! The open-files limit must be at least K + 512 in this process and in the server (which
//! inherits it); a K above the limit is skipped with a message, so run under `ulimit -n` as above.
//! Raising the soft limit up to the hard one needs no privilege, beyond it CAP_SYS_RESOURCE: where
//! `ulimit -n 65536` is refused, `ulimit -n $(ulimit -Hn)` takes what is allowed (20,000 on the
//! 2-core bench machine, enough for K = 10,000).
//!
//! For each K in `FANOUT_K` (default "100 1000 10000"), against a fresh server (temp data dir,
//! Basic Auth, `bucket_create_principals = system.Authenticated`, bucket `b`, collection `c`):
//! 1. memory: the server's VmRSS before connecting (after 10 sockets came and went, so
//!    one-time setup is not counted), and after K sockets subscribed to b/c have sat idle for
//!    2 s: (after − before) / K. The server's CPU over those 2 s is reported too.
//! 2. burst: N = max(100, 200,000 / K) records written by one writer as fast as it can, as
//!    `POST /v1/batch` of 25 PUTs; deliveries/s = K × N / (first write → the last change frame
//!    received by every subscriber).
//! 3. paced: 20,000 / K single-record PUTs per second for 5 s (20k deliveries/s, below
//!    saturation); each record's data carries `sent_us` (µs since the epoch, stamped just before
//!    the PUT is sent), each subscriber computes `now − sent_us` per change frame: p50/p99/max
//!    over all deliveries. This includes the PUT's own commit (its latency is printed too).
//!
//! Then the writer's commit latency: p99 of 2,000 sequential single-record PUTs with 0
//! subscribers and with 200 subscribers reading every change, alternated over 5 rounds; the
//! median of each condition's p99 is compared (one pair alone swings ±30% on this machine).
//! Each round also has a control: the same PUTs, Tidemark without subscribers, and a bare
//! WebSocket fan-out in this process relaying a change-sized frame per PUT to 200 sockets — what
//! that much delivery traffic on the same cores does to the writer with no Tidemark code in it.
//!
//! Subscribers run on a 2-worker tokio runtime; the writer runs on its own thread and
//! current-thread runtime, so it never queues behind the subscribers' tasks. Server, clients and
//! writer share the machine's cores, as in the bare ceiling (`../shared/perf/limits`, `run.sh ws`)
//! this is compared with. Every wait is bounded (no progress for 15 s, or 180 s in all).
//! Everything listens on and connects to 127.0.0.1 only.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const INI: &str = "[app:main]\nmultiauth.policies = basicauth\nkinto.userid_hmac_secret = x\n\
                   kinto.bucket_create_principals = system.Authenticated\n";
const USER: &str = "bench";
const PASSWORD: &str = "bench";
const RECORDS: &str = "/buckets/b/collections/c/records";
const SUBSCRIBE: &str = r#"{"type":"subscribe","id":"s1","filter":{"bucket":"b","collection":"c"},"since":"now"}"#;

/// PUTs per `POST /v1/batch` in the burst (Kinto's default `batch_max_requests`); env
/// `FANOUT_BATCH` (1..=25) changes it, e.g. 1 for one change per commit as in the bare ceiling.
const BATCH: u64 = 25;
/// Deliveries aimed at in the burst: N = max(MIN_BURST_RECORDS, BURST_DELIVERIES / K).
const BURST_DELIVERIES: u64 = 200_000;
const MIN_BURST_RECORDS: u64 = 100;
/// Paced phase: this many deliveries per second (20,000 / K writes/s), for PACED_SECS.
const PACED_DELIVERIES_PER_S: u64 = 20_000;
const PACED_SECS: u64 = 5;
/// Commit latency: sequential single-record PUTs measured (after a warm-up), and the
/// subscribers reading meanwhile.
const COMMIT_WRITES: usize = 2000;
const COMMIT_WARMUP: usize = 50;
const COMMIT_SUBSCRIBERS: u64 = 200;
const COMMIT_ROUNDS: usize = 5;
/// WebSocket handshakes + subscribes in flight at once.
const HANDSHAKES: usize = 256;
/// File descriptors needed beyond the K sockets, per process.
const FD_MARGIN: u64 = 512;
/// Waits end when a counter has not moved for STALL, or after WAIT_CAP in all.
const STALL: Duration = Duration::from_secs(15);
const WAIT_CAP: Duration = Duration::from_secs(180);
/// Idle time before the memory (and idle CPU) reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Linux `USER_HZ`: the unit of utime/stime in /proc/<pid>/stat (100 on every common platform).
const CLOCK_TICKS: f64 = 100.0;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The soft open-files limit of this process (the server inherits it).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// User + system CPU seconds of a process (all its threads).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the command's closing parenthesis start at field 3 (state); utime is 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / CLOCK_TICKS
}

/// Nearest-rank percentile of sorted values, in milliseconds (values in µs).
fn pct_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    sorted_us[((sorted_us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// The unsigned integer after `key` in `text` (no JSON parse: the client's cost stays low).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// The release server, on a free loopback port with a fresh data dir; killed when dropped.
struct Server {
    child: Child,
    base: String,
    addr: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let ini = dir.path().join("tidemark.ini");
        std::fs::write(&ini, INI).expect("write ini");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["serve", "--ini"])
            .arg(&ini)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--bind", &addr])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tidemark");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        let server = Server { child, base: format!("http://{addr}/v1"), addr, http, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if server.http.get(format!("{}/__lbheartbeat__", server.base)).send().await.is_ok() {
                server.seed().await;
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tidemark did not start on {}:\n{}", server.addr, server.log_tail());
    }

    async fn seed(&self) {
        for path in ["/buckets/b", "/buckets/b/collections/c"] {
            let r = self.http.put(format!("{}{path}", self.base)).basic_auth(USER, Some(PASSWORD)).send().await;
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            assert!((200..300).contains(&status), "PUT {path} answered {status}:\n{}", self.log_tail());
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs(&self.pid())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `job` on its own thread and current-thread runtime with its own HTTP client, so the
/// writer never waits in the subscribers' run queues.
async fn on_writer<T, F, Fut>(job: F) -> T
where
    F: FnOnce(reqwest::Client) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("writer runtime");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("writer client");
        let _ = tx.send(runtime.block_on(job(client)));
    });
    rx.await.expect("the writer thread panicked")
}

/// One single-record PUT; its latency.
async fn put_record(client: &reqwest::Client, base: &str, id: &str, data: Value) -> Result<Duration, String> {
    let started = Instant::now();
    let response = client
        .put(format!("{base}{RECORDS}/{id}"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({ "data": data }))
        .send()
        .await
        .map_err(|e| format!("PUT {id}: {e}"))?;
    let status = response.status();
    let _ = response.bytes().await;
    if !status.is_success() {
        return Err(format!("PUT {id}: {status}"));
    }
    Ok(started.elapsed())
}

/// The burst: `n` records in batches of `batch` PUTs, back to back. Returns when the first write
/// started, and how long the writes took.
async fn burst(
    client: reqwest::Client,
    base: String,
    k: u64,
    n: u64,
    batch: u64,
) -> Result<(Instant, Duration), String> {
    let started = Instant::now();
    for first in (0..n).step_by(batch as usize) {
        let requests: Vec<Value> = (first..(first + batch).min(n))
            .map(|i| json!({"method": "PUT", "path": format!("{RECORDS}/burst{k}-{i}"), "body": {"data": {"i": i}}}))
            .collect();
        let response = client
            .post(format!("{base}/batch"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&json!({ "requests": requests }))
            .send()
            .await
            .map_err(|e| format!("batch: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("batch body: {e}"))?;
        let failed = body["responses"]
            .as_array()
            .map(|all| all.iter().filter(|r| r["status"].as_u64().is_none_or(|s| s >= 400)).count())
            .unwrap_or(usize::MAX);
        if !status.is_success() || failed != 0 {
            return Err(format!("batch: {status}, {failed} sub-requests failed"));
        }
    }
    Ok((started, started.elapsed()))
}

/// The paced writer: `count` PUTs at `rate` per second, each stamped with `sent_us`. Returns
/// the PUT latencies (µs) and the time the writes took.
async fn paced(
    client: reqwest::Client,
    base: String,
    k: u64,
    rate: u64,
    count: u64,
) -> Result<(Vec<u32>, Duration), String> {
    let started = tokio::time::Instant::now();
    let mut latencies = Vec::with_capacity(count as usize);
    for i in 0..count {
        tokio::time::sleep_until(started + Duration::from_micros(i * 1_000_000 / rate)).await;
        let data = json!({"sent_us": now_us(), "i": i});
        latencies.push(micros(put_record(&client, &base, &format!("paced{k}-{i}"), data).await?));
    }
    Ok((latencies, started.elapsed()))
}

/// `warmup + count` sequential PUTs; the latencies (µs) of the last `count`.
async fn sequential(
    client: reqwest::Client,
    base: String,
    prefix: String,
    count: usize,
    beside: Option<tokio::sync::broadcast::Sender<Arc<str>>>,
) -> Result<Vec<u32>, String> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..COMMIT_WARMUP + count {
        let latency = put_record(&client, &base, &format!("{prefix}{i}"), json!({"i": i})).await?;
        if let Some(beside) = &beside {
            let _ = beside.send(bare_frame(&prefix, i).into());
        }
        if i >= COMMIT_WARMUP {
            latencies.push(micros(latency));
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Waits until `counter` reaches `target`; returns when it did (or gave up) and whether it did.
async fn wait_for(counter: &AtomicU64, target: u64) -> (Instant, bool) {
    let begun = Instant::now();
    let mut last = (counter.load(Ordering::Relaxed), Instant::now());
    loop {
        let value = counter.load(Ordering::Relaxed);
        if value >= target {
            return (Instant::now(), true);
        }
        if value != last.0 {
            last = (value, Instant::now());
        } else if last.1.elapsed() > STALL || begun.elapsed() > WAIT_CAP {
            return (Instant::now(), false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Default)]
struct Counters {
    subscribed: AtomicU64,
    /// Connects or subscribes that failed, and sockets the server closed.
    failed: AtomicU64,
    changes: AtomicU64,
    lagged: AtomicU64,
    errors: AtomicU64,
    /// Size of a change frame, as received.
    frame_bytes: AtomicU64,
    closing: AtomicBool,
}

/// K subscriber tasks, each with its own latency samples (µs).
struct Subscribers {
    counters: Arc<Counters>,
    samples: Vec<Arc<Mutex<Vec<u32>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    /// Connects and subscribes `k` sockets; returns once all are subscribed (or failed).
    async fn connect(addr: &str, k: u64) -> Subscribers {
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
        let mut request = format!("ws://{addr}/v1/ws").into_client_request().expect("ws request");
        request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
        let counters = Arc::new(Counters::default());
        let gate = Arc::new(Semaphore::new(HANDSHAKES));
        let mut subscribers = Subscribers { counters, samples: Vec::new(), tasks: Vec::new() };
        for _ in 0..k {
            let samples = Arc::new(Mutex::new(Vec::new()));
            subscribers.samples.push(samples.clone());
            let task = subscriber(request.clone(), gate.clone(), subscribers.counters.clone(), samples);
            subscribers.tasks.push(tokio::spawn(task));
        }
        let counters = &subscribers.counters;
        let done = || counters.subscribed.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
        let begun = Instant::now();
        let mut last = (0, Instant::now());
        while done() < k && last.1.elapsed() < Duration::from_secs(30) && begun.elapsed() < Duration::from_secs(300) {
            if done() != last.0 {
                last = (done(), Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let failed = counters.failed.load(Ordering::Relaxed);
        println!(
            "  connected+subscribed {}/{k} in {:.2}s{}",
            counters.subscribed.load(Ordering::Relaxed),
            begun.elapsed().as_secs_f64(),
            if failed > 0 { format!(" ({failed} FAILED)") } else { String::new() }
        );
        subscribers
    }

    fn subscribed(&self) -> u64 {
        self.counters.subscribed.load(Ordering::Relaxed)
    }

    fn changes(&self) -> u64 {
        self.counters.changes.load(Ordering::Relaxed)
    }

    /// Takes every latency sample recorded so far, sorted.
    fn take_latencies(&self) -> Vec<u32> {
        let mut all = Vec::new();
        for samples in &self.samples {
            all.append(&mut samples.lock().expect("samples"));
        }
        all.sort_unstable();
        all
    }

    async fn close(self) {
        self.counters.closing.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn subscriber(request: Request, gate: Arc<Semaphore>, counters: Arc<Counters>, samples: Arc<Mutex<Vec<u32>>>) {
    let Ok(permit) = gate.acquire_owned().await else { return };
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let Ok(Ok((mut socket, _))) = tokio::time::timeout(Duration::from_secs(30), connect).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if socket.send(Message::Text(SUBSCRIBE.into())).await.is_err() {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(r#"{"type":"subscribed""#) => break,
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(r#"{"type":"error""#) => {
                eprintln!("subscribe failed: {}", text.as_str());
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    counters.subscribed.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => on_text(text.as_str(), &counters, &samples),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !counters.closing.load(Ordering::Relaxed) {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn on_text(text: &str, counters: &Counters, samples: &Mutex<Vec<u32>>) {
    if text.starts_with(r#"{"type":"change""#) {
        if let Some(sent) = number_after(text, r#""sent_us":"#) {
            let latency = now_us().saturating_sub(sent).min(u32::MAX as u64) as u32;
            samples.lock().expect("samples").push(latency);
        }
        if counters.frame_bytes.load(Ordering::Relaxed) == 0 {
            counters.frame_bytes.store(text.len() as u64, Ordering::Relaxed);
        }
        counters.changes.fetch_add(1, Ordering::Relaxed);
    } else if text.starts_with(r#"{"type":"lagged""#) {
        counters.lagged.fetch_add(1, Ordering::Relaxed);
    } else if text.starts_with(r#"{"type":"error""#) {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// One K's figures, for the final table.
struct Row {
    k: u64,
    subscribed: u64,
    kib_per_socket: f64,
    idle_server_cpu_pct: f64,
    burst_records: u64,
    burst_deliveries: u64,
    burst_secs: f64,
    burst_writes_secs: f64,
    burst_complete: bool,
    server_us_per_delivery: f64,
    client_us_per_delivery: f64,
    paced_rate: u64,
    paced_p50: f64,
    paced_p99: f64,
    paced_max: f64,
    paced_samples: usize,
    paced_put_p50: f64,
    lagged: u64,
    errors: u64,
    frame_bytes: u64,
}

async fn run_k(k: u64, batch: u64) -> Option<Row> {
    println!("--- K = {k}");
    let server = Server::start().await;
    // A few writes first, so the store and the hub's reader are warm before the baseline.
    let base = server.base.clone();
    if let Err(e) = on_writer(move |c| sequential(c, base, "warm".into(), 0, None)).await {
        println!("  warm-up failed: {e}");
        return None;
    }
    // And a few sockets come and go, so the streams runtime and its allocator arenas exist before
    // the baseline: what is measured is what each further socket costs.
    Subscribers::connect(&server.addr, k.min(10)).await.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib();
    let subscribers = Subscribers::connect(&server.addr, k).await;
    let subscribed = subscribers.subscribed();
    if subscribed == 0 {
        println!("  no subscriber connected:\n{}", server.log_tail());
        subscribers.close().await;
        return None;
    }
    let cpu_before = server.cpu_secs();
    tokio::time::sleep(SETTLE).await;
    let idle_server_cpu_pct = (server.cpu_secs() - cpu_before) / SETTLE.as_secs_f64() * 100.0;
    let rss_after = server.rss_kib();
    let kib_per_socket = (rss_after as f64 - rss_before as f64) / subscribed as f64;
    println!(
        "  server VmRSS {rss_before} KiB -> {rss_after} KiB with {subscribed} idle sockets: {kib_per_socket:.1} KiB/socket; \
         server CPU while idle {idle_server_cpu_pct:.1}% of a core"
    );

    // Burst.
    let n = MIN_BURST_RECORDS.max(BURST_DELIVERIES / k);
    let before = subscribers.changes();
    let target = before + subscribed * n;
    let (server_cpu, client_cpu) = (server.cpu_secs(), cpu_secs("self"));
    let base = server.base.clone();
    let (written, (finished, burst_complete)) =
        tokio::join!(on_writer(move |c| burst(c, base, k, n, batch)), wait_for(&subscribers.counters.changes, target));
    let (server_cpu, client_cpu) = (server.cpu_secs() - server_cpu, cpu_secs("self") - client_cpu);
    let (started, burst_writes) = match written {
        Ok(w) => w,
        Err(e) => {
            println!("  burst writer failed: {e}\n{}", server.log_tail());
            subscribers.close().await;
            return None;
        }
    };
    let burst_deliveries = subscribers.changes() - before;
    let burst_secs = finished.duration_since(started).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = subscribers.changes().saturating_sub(target);
    let per_delivery = |cpu: f64| cpu * 1e6 / burst_deliveries.max(1) as f64;
    println!(
        "  burst: {n} records ({} batches) written in {:.2}s; {burst_deliveries}/{} deliveries in {burst_secs:.2}s \
         = {:.0}/s{}{}; CPU per delivery: server {:.2} µs, subscribers {:.2} µs",
        n.div_ceil(batch),
        burst_writes.as_secs_f64(),
        subscribed * n,
        burst_deliveries as f64 / burst_secs,
        if burst_complete { "" } else { " INCOMPLETE (gave up waiting)" },
        if extra > 0 { format!(" ({extra} DUPLICATES)") } else { String::new() },
        per_delivery(server_cpu),
        per_delivery(client_cpu),
    );
    let _ = subscribers.take_latencies();

    // Paced.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = (PACED_DELIVERIES_PER_S / k).max(1);
    let count = rate * PACED_SECS;
    let before = subscribers.changes();
    let base = server.base.clone();
    let (written, (_, paced_complete)) = tokio::join!(
        on_writer(move |c| paced(c, base, k, rate, count)),
        wait_for(&subscribers.counters.changes, before + subscribed * count)
    );
    let (mut puts, writes) = match written {
        Ok(w) => w,
        Err(e) => {
            println!("  paced writer failed: {e}\n{}", server.log_tail());
            subscribers.close().await;
            return None;
        }
    };
    puts.sort_unstable();
    let latencies = subscribers.take_latencies();
    let row = Row {
        k,
        subscribed,
        kib_per_socket,
        idle_server_cpu_pct,
        burst_records: n,
        burst_deliveries,
        burst_secs,
        burst_writes_secs: burst_writes.as_secs_f64(),
        burst_complete,
        server_us_per_delivery: per_delivery(server_cpu),
        client_us_per_delivery: per_delivery(client_cpu),
        paced_rate: rate,
        paced_p50: pct_ms(&latencies, 0.5),
        paced_p99: pct_ms(&latencies, 0.99),
        paced_max: pct_ms(&latencies, 1.0),
        paced_samples: latencies.len(),
        paced_put_p50: pct_ms(&puts, 0.5),
        lagged: subscribers.counters.lagged.load(Ordering::Relaxed),
        errors: subscribers.counters.errors.load(Ordering::Relaxed),
        frame_bytes: subscribers.counters.frame_bytes.load(Ordering::Relaxed),
    };
    println!(
        "  paced: {count} PUTs at {rate}/s in {:.2}s (PUT p50 {:.2} ms, p99 {:.2} ms); {} of {} deliveries{}; \
         sent→received p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        writes.as_secs_f64(),
        row.paced_put_p50,
        pct_ms(&puts, 0.99),
        latencies.len(),
        subscribed * count,
        if paced_complete { "" } else { " INCOMPLETE" },
        row.paced_p50,
        row.paced_p99,
        row.paced_max,
    );
    println!(
        "  frames: change ≈{} bytes; lagged {}, error {}; sockets lost {}",
        row.frame_bytes,
        row.lagged,
        row.errors,
        subscribers.counters.failed.load(Ordering::Relaxed)
    );
    subscribers.close().await;
    Some(row)
}

/// Runs the sequential writer; prints its latencies and the CPU the server and this process used
/// per PUT (until every subscriber has every change, so frames still in flight count).
async fn commit_run(
    server: &Server,
    label: &str,
    prefix: &str,
    subscribers: Option<&Subscribers>,
    bare: Option<&Bare>,
) -> Option<(f64, f64)> {
    let writes = (COMMIT_WARMUP + COMMIT_WRITES) as u64;
    let (base, prefix) = (server.base.clone(), prefix.to_owned());
    let (server_cpu, own_cpu) = (server.cpu_secs(), cpu_secs("self"));
    let expected = subscribers.map(|s| s.changes() + s.subscribed() * writes);
    let beside = bare.map(|b| b.tx.clone());
    let latencies = on_writer(move |c| sequential(c, base, prefix, COMMIT_WRITES, beside)).await;
    if let (Some(expected), Some(subscribers)) = (expected, subscribers) {
        let (_, complete) = wait_for(&subscribers.counters.changes, expected).await;
        if !complete {
            println!("  (subscribers did not receive every change: {} of {expected})", subscribers.changes());
        }
    }
    let per_put = |cpu: f64| cpu * 1e6 / writes as f64;
    let (server_cpu, own_cpu) = (per_put(server.cpu_secs() - server_cpu), per_put(cpu_secs("self") - own_cpu));
    match latencies {
        Ok(l) => {
            let (p50, p99) = (pct_ms(&l, 0.5), pct_ms(&l, 0.99));
            println!(
                "  {label}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms; CPU per PUT: server {server_cpu:.0} µs, \
                 bench process {own_cpu:.0} µs",
                pct_ms(&l, 1.0)
            );
            Some((p50, p99))
        }
        Err(e) => {
            println!("  {label}: failed: {e}");
            None
        }
    }
}

/// Median of a few values.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Commit latency without and with 200 subscribers, alternated for `COMMIT_ROUNDS` rounds (a
/// single pair is at the mercy of this machine's noise): the median over rounds of each
/// condition's (p50, p99) in ms, quiet then busy.
async fn commit_latency() -> Option<[(f64, f64); 3]> {
    println!(
        "--- commit latency: {COMMIT_ROUNDS} rounds of {COMMIT_WRITES} sequential PUTs (after {COMMIT_WARMUP} \
         warm-up) with 0, then {COMMIT_SUBSCRIBERS} subscribers, then 0 beside a bare fan-out to {COMMIT_SUBSCRIBERS}"
    );
    let server = Server::start().await;
    let (mut quiet, mut busy, mut beside) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..COMMIT_ROUNDS {
        quiet.push(commit_run(&server, "0 subscribers", &format!("quiet{round}-"), None, None).await?);
        let subscribers = Subscribers::connect(&server.addr, COMMIT_SUBSCRIBERS).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let label = format!("{} subscribers reading", subscribers.subscribed());
        busy.push(commit_run(&server, &label, &format!("busy{round}-"), Some(&subscribers), None).await?);
        subscribers.close().await;
        let bare = Bare::start().await;
        let subscribers = Subscribers::connect(&bare.addr, COMMIT_SUBSCRIBERS).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let label = format!("0 subscribers, bare fan-out to {} beside", subscribers.subscribed());
        beside.push(commit_run(&server, &label, &format!("bare{round}-"), Some(&subscribers), Some(&bare)).await?);
        subscribers.close().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let summary =
        |runs: &[(f64, f64)]| (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()));
    Some([summary(&quiet), summary(&busy), summary(&beside)])
}

/// A change-sized frame for the bare fan-out.
fn bare_frame(prefix: &str, i: usize) -> String {
    let data = json!({"i": i, "id": format!("{prefix}{i}"), "last_modified": now_us()});
    format!(
        r#"{{"type":"change","subscription":"s1","cursor":"{i}","action":"create","resource_name":"record","uri":"{RECORDS}/{prefix}{i}","bucket_id":"b","collection_id":"c","id":"{prefix}{i}","timestamp":{},"user_id":"account:bench","data":{data},"old":null}}"#,
        now_us()
    )
}

/// The control for the commit latency: not Tidemark but a bare WebSocket fan-out (each socket
/// written once per message, as the bare ceiling does) in this process, on a runtime of its own
/// as large as Tidemark's streams runtime, relaying a frame per PUT to as many subscribers.
/// Tidemark itself then has no subscriber: what the machine's shared cores and loopback do to
/// the writer's latency, with none of Tidemark's fan-out code involved.
struct Bare {
    addr: String,
    tx: tokio::sync::broadcast::Sender<Arc<str>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bare {
    async fn start() -> Bare {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bare-fanout")
            .enable_all()
            .build()
            .expect("bare runtime");
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(4096);
        let listener = {
            let _entered = runtime.enter();
            let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bare bind");
            std.set_nonblocking(true).expect("nonblocking");
            tokio::net::TcpListener::from_std(std).expect("bare listener")
        };
        let addr = listener.local_addr().expect("bare addr").to_string();
        let accepts = tx.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut changes = accepts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
                    // The subscribe frame, answered as Tidemark would.
                    if !matches!(socket.next().await, Some(Ok(Message::Text(_)))) {
                        return;
                    }
                    let subscribed = r#"{"type":"subscribed","id":"s1","cursor":"0"}"#;
                    if socket.send(Message::Text(subscribed.into())).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = changes.recv().await {
                        if socket.send(Message::Text(frame.as_ref().into())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Bare { addr, tx, runtime: Some(runtime) }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn main() {
    let ks: Vec<u64> = std::env::var("FANOUT_K")
        .unwrap_or_else(|_| "100 1000 10000".into())
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .filter(|&k| k > 0)
        .collect();
    let batch = std::env::var("FANOUT_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(BATCH).clamp(1, BATCH);
    let limit = open_files_limit().unwrap_or(0);
    println!(
        "fanout: K = {ks:?}; burst batches of {batch}; open-files limit {limit}; server {}",
        env!("CARGO_BIN_EXE_tidemark")
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let begun = Instant::now();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for &k in &ks {
        if limit < k + FD_MARGIN {
            println!(
                "--- K = {k} SKIPPED: the open-files limit is {limit}, K = {k} needs at least {} (in this process and \
                 in the server). Run: bash -c 'ulimit -n 65536; cargo bench --bench fanout'",
                k + FD_MARGIN
            );
            skipped.push(k);
            continue;
        }
        match runtime.block_on(run_k(k, batch)) {
            Some(row) => rows.push(row),
            None => skipped.push(k),
        }
    }
    let commit = if limit >= COMMIT_SUBSCRIBERS + FD_MARGIN { runtime.block_on(commit_latency()) } else { None };
    runtime.shutdown_timeout(Duration::from_secs(5));

    println!();
    println!("=== Tidemark WebSocket fan-out ({:.0} s; server, subscribers and writer share the machine) ===", {
        begun.elapsed().as_secs_f64()
    });
    println!(
        "{:>6} {:>14} {:>22} {:>12} {:>26} {:>10} {:>10} {:>15}",
        "K", "deliveries/s", "burst", "CPU µs/dlv", "paced p50/p99/max ms", "writes/s", "KiB/sock", "idle srv CPU %"
    );
    for r in &rows {
        let burst = format!(
            "{}×{} in {:.1}s{}",
            r.subscribed,
            r.burst_records,
            r.burst_secs,
            if r.burst_complete && r.burst_deliveries == r.subscribed * r.burst_records { "" } else { "!" }
        );
        println!(
            "{:>6} {:>14.0} {:>22} {:>12} {:>26} {:>10} {:>10.1} {:>15.1}",
            r.k,
            r.burst_deliveries as f64 / r.burst_secs,
            burst,
            format!("{:.1}+{:.1}", r.server_us_per_delivery, r.client_us_per_delivery),
            format!("{:.1} / {:.1} / {:.1}", r.paced_p50, r.paced_p99, r.paced_max),
            r.paced_rate,
            r.kib_per_socket,
            r.idle_server_cpu_pct
        );
    }
    println!(
        "(burst: subscribers × records, first write → last frame; writes alone took {}; CPU µs/dlv = server + \
         subscribers' CPU per delivery in the burst; paced latency = PUT sent → frame received, over {} deliveries, \
         PUT p50 {} ms; change frames ≈{} bytes; lagged frames {}; error frames {})",
        rows.iter().map(|r| format!("{:.2}s", r.burst_writes_secs)).collect::<Vec<_>>().join("/"),
        rows.iter().map(|r| r.paced_samples.to_string()).collect::<Vec<_>>().join("/"),
        rows.iter().map(|r| format!("{:.2}", r.paced_put_p50)).collect::<Vec<_>>().join("/"),
        rows.iter().map(|r| r.frame_bytes.to_string()).collect::<Vec<_>>().join("/"),
        rows.iter().map(|r| r.lagged.to_string()).collect::<Vec<_>>().join("/"),
        rows.iter().map(|r| r.errors.to_string()).collect::<Vec<_>>().join("/"),
    );
    if !skipped.is_empty() {
        println!("skipped K: {skipped:?}");
    }
    println!(
        "compare: bare WebSocket ceiling (../shared/perf/README.md, Limits, 2026-11-24: ≈55–70k deliveries/s at \
         1k–10k subscribers, one message per publish); re-measure it alongside with ../shared/perf/limits/run.sh ws"
    );
    match commit {
        Some([quiet, busy, beside]) => println!(
            "commit latency (median of {COMMIT_ROUNDS} rounds of {COMMIT_WRITES} sequential PUTs): p99 {:.2} ms with \
             0 subscribers, {:.2} ms with {COMMIT_SUBSCRIBERS} reading: ratio {:.2}x (goal ≤ 1.2x); p50 {:.2} / {:.2} ms\n\
             control: with a bare fan-out to {COMMIT_SUBSCRIBERS} beside it instead (no Tidemark subscriber): p99 \
             {:.2} ms, ratio {:.2}x; p50 {:.2} ms",
            quiet.1,
            busy.1,
            busy.1 / quiet.1,
            quiet.0,
            busy.0,
            beside.1,
            beside.1 / quiet.1,
            beside.0
        ),
        None => println!("commit latency: not measured"),
    }
}

//! Crash test: re-runs this executable as a child that writes through the engine and prints
//! every acknowledged write, SIGKILLs it at a random moment (20–400 ms), reopens the store and
//! checks that every acknowledged write is present with identical content, that the log is
//! gap-free and chained, and that the views equal a fresh replay (`verify`).
//!
//! `CRASH_CYCLES` (default 100) cycles run with the `always` flush policy and are asserted; then
//! `CRASH_NONE_CYCLES` (default 10) cycles with policy `none` print how much was lost (a
//! documented risk of that policy, not asserted).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tidemark_engine::{Acl, Command as EngineCommand, Context, Engine, EngineConfig, Expect, FlushPolicy, Op};

#[path = "crash/http.rs"]
mod http;

const C: &str = "/buckets/b/collections/c";

fn config(policy: &str) -> EngineConfig {
    let flush = if policy == "none" { FlushPolicy::None } else { FlushPolicy::Always };
    EngineConfig { flush, ..EngineConfig::default() }
}

fn put(parent: &str, resource: &str, id: &str, data: Value) -> EngineCommand {
    EngineCommand {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members: None,
        parent: parent.into(),
        id: id.into(),
        op: Op::Put { data: data.as_object().cloned().unwrap_or_default(), permissions: Acl::new() },
        expect: Expect::Any,
        last_modified: None,
        context: Context::default(),
    }
}

/// The child: 4 writers, each submitting single writes and atomic batches of 5 until killed.
fn child(dir: &Path, policy: &str, cycle: u64) {
    let engine = Engine::open_sled(dir, config(policy)).unwrap_or_else(|e| panic!("child open: {e}"));
    if engine.get("", "buckets", "b").ok().flatten().is_none() {
        engine
            .submit_blocking(vec![put("", "bucket", "b", json!({})), put("/buckets/b", "collection", "c", json!({}))])
            .unwrap_or_else(|e| panic!("seed: {e}"));
    }
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (engine, stdout) = (engine.clone(), stdout.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let size = if i % 4 == 3 { 5 } else { 1 };
                    let commands: Vec<_> = (0..size)
                        .map(|k| {
                            put(
                                C,
                                "record",
                                &format!("c{cycle}-t{t}-{i}-{k}"),
                                json!({"n": i, "k": k, "pad": "x".repeat(200)}),
                            )
                        })
                        .collect();
                    let Ok(events) = engine.submit_blocking(commands) else { return };
                    let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
                    for event in events {
                        let _ = writeln!(out, "ack {} {} {}", event.object_id, event.timestamp, event.data);
                    }
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one cycle; returns (acknowledged, missing or different).
fn cycle(dir: &Path, policy: &str, n: u64, rng: &mut Rng) -> (usize, Vec<String>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = Command::new(exe)
        .env("TM_CRASH_CHILD", dir)
        .env("TM_CRASH_POLICY", policy)
        .env("TM_CRASH_CYCLE", n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn child: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("child stdout"));
    let reader = std::thread::spawn(move || {
        let mut acked: BTreeMap<String, (u64, Value)> = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.splitn(4, ' ');
            if let (Some("ack"), Some(id), Some(ts), Some(data)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                if let (Ok(ts), Ok(data)) = (ts.parse(), serde_json::from_str(data)) {
                    acked.insert(id.to_owned(), (ts, data));
                }
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(20 + rng.next() % 381));
    let _ = child.kill();
    let _ = child.wait();
    let acked = reader.join().unwrap_or_default();

    let engine = Engine::open_sled(dir, config(policy)).unwrap_or_else(|e| panic!("reopen after kill: {e}"));
    let mut problems = Vec::new();
    for (id, (ts, data)) in &acked {
        match engine.get(C, "records", id) {
            Ok(Some(stored)) if stored.last_modified == *ts && Value::Object(stored.data.clone()) == *data => {}
            Ok(Some(stored)) => {
                problems.push(format!("{id}: stored {} differs from acknowledged {data}", Value::Object(stored.data)))
            }
            Ok(None) => problems.push(format!("{id}: acknowledged but missing")),
            Err(e) => problems.push(format!("{id}: read error {e}")),
        }
    }
    if policy == "always" {
        match engine.verify(&mut |_| {}) {
            Ok(report) if report.ok() => {}
            Ok(report) => problems.push(format!("verify: {:?}", report.problems)),
            Err(e) => problems.push(format!("verify error: {e}")),
        }
    }
    (acked.len(), problems)
}

/// Cycles sharing one data directory: each reopens what the kills before it left, while the
/// full `verify` replay of every cycle stays bounded.
const CYCLES_PER_STORE: u64 = 20;

fn run(policy: &str, cycles: u64, rng: &mut Rng) -> (usize, usize, usize) {
    let mut dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut acked, mut failed, mut lost) = (0, 0, 0);
    for n in 0..cycles {
        if n > 0 && n % CYCLES_PER_STORE == 0 {
            dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        }
        let (count, problems) = cycle(dir.path(), policy, n, rng);
        acked += count;
        if !problems.is_empty() {
            lost += problems.len();
            if policy == "always" {
                failed += 1;
                eprintln!("cycle {n} ({policy}): {} problem(s), first: {}", problems.len(), problems[0]);
            }
        }
    }
    (acked, failed, lost)
}

fn main() {
    if let Some(dir) = std::env::var_os("TM_CRASH_CHILD") {
        let policy = std::env::var("TM_CRASH_POLICY").unwrap_or_else(|_| "always".into());
        let cycle = std::env::var("TM_CRASH_CYCLE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        child(Path::new(&dir), &policy, cycle);
        return;
    }
    let cycles = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    let none_cycles = std::env::var("CRASH_NONE_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(10);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
    let mut rng = Rng(seed);
    let started = std::time::Instant::now();
    let (acked, failed, _) = run("always", cycles, &mut rng);
    println!(
        "crash (flush always): {cycles} kill -9 cycles, {acked} acknowledged writes checked, {failed} failed cycles, {:.1}s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    if none_cycles > 0 {
        let (acked, _, lost) = run("none", none_cycles, &mut rng);
        println!("crash (flush none): {none_cycles} cycles, {acked} acknowledged writes, {lost} lost (documented risk, not asserted)");
    }
    let http_cycles = std::env::var("CRASH_HTTP_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(25);
    let started = std::time::Instant::now();
    let (http_acked, problems) = http::run(http_cycles, &mut rng);
    println!(
        "crash over HTTP: {http_cycles} kill -9 cycles of the binary, 8 writers and 2 subscribers, {http_acked} acknowledged writes checked, {} problems, {:.1}s",
        problems.len(),
        started.elapsed().as_secs_f64()
    );
    for problem in problems.iter().take(20) {
        eprintln!("  {problem}");
    }
    println!("{} passed, {failed} failed", cycles - failed as u64);
    if failed > 0 || !problems.is_empty() {
        std::process::exit(1);
    }
}

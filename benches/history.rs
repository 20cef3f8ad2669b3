//! Point-in-time reads (`?_at=`) as history grows: one collection of 1,000 records, each updated
//! in turn until the log holds N events (10k, 100k, 1M). Reads of one record and of the whole
//! list as of the log's midpoint, next to today's state, as p50/p99; and bytes on disk per event.
//!
//! Run: `cargo bench --bench history` (`HISTORY_SIZES=10000,100000` to choose the sizes).

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tidemark_engine::{AsOf, Command, Context, Engine, EngineConfig, Expect, ListOrder, ListRange, Op};

const RECORDS: usize = 1_000;
const C: &str = "/buckets/b/collections/c";

fn put(parent: &str, resource: &str, id: &str, data: Value) -> Command {
    Command {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members: None,
        parent: parent.into(),
        id: id.into(),
        op: Op::Put { data: data.as_object().cloned().unwrap_or_else(Map::new), permissions: Default::default() },
        expect: Expect::Any,
        last_modified: None,
        context: Context { user_id: Some("account:bench".into()), ..Context::default() },
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

/// The list as it was at `at`, as `?_at=` reads it: every object's version then.
fn list_at(engine: &Engine, at: AsOf) -> usize {
    let mut live = 0;
    engine
        .walk_list(C, "records", ListRange::default(), ListOrder::Newest, |object| {
            let version = if at.covers(object.seq, object.last_modified) {
                Some(object)
            } else {
                engine.object_at(C, "records", object.id(), at)?
            };
            live += usize::from(version.is_some_and(|v| !v.deleted));
            Ok(true)
        })
        .expect("walk");
    live
}

fn run(events: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open_sled(&dir.path().join("store"), EngineConfig::default()).expect("open");
    engine
        .submit_blocking(vec![put("", "bucket", "b", json!({})), put("/buckets/b", "collection", "c", json!({}))])
        .expect("seed");
    let rounds = (events / RECORDS).max(2);
    let text = "x".repeat(200);
    let started = Instant::now();
    let mut midpoint = 0;
    for round in 0..rounds {
        let batch: Vec<Command> = (0..RECORDS)
            .map(|r| put(C, "record", &format!("r{r:04}"), json!({"round": round, "text": text})))
            .collect();
        let written = engine.submit_blocking(batch).expect("write");
        if round == rounds / 2 {
            midpoint = written.last().map(|e| e.timestamp).unwrap_or_default();
        }
    }
    let load = started.elapsed();
    let total = engine.last_seq().expect("seq");
    let at = AsOf::Timestamp(midpoint);

    let mut one_now = Vec::new();
    let mut one_then = Vec::new();
    for i in 0..2_000 {
        let id = format!("r{:04}", (i * 7919) % RECORDS);
        let t = Instant::now();
        engine.get(C, "records", &id).expect("get");
        one_now.push(t.elapsed());
        let t = Instant::now();
        let then = engine.object_at(C, "records", &id, at).expect("object_at");
        one_then.push(t.elapsed());
        assert!(then.is_some_and(|o| o.data["round"] == json!(rounds / 2)), "the version as of the midpoint");
    }
    let mut list_now = Vec::new();
    let mut list_then = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(list_at(&engine, AsOf::Seq(total)), RECORDS);
        list_now.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(list_at(&engine, at), RECORDS);
        list_then.push(t.elapsed());
    }
    engine.close();
    let bytes = dir_size(dir.path());
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "events {total:>8} (loaded in {:.1}s) | one record: now p50 {:.0} / p99 {:.0} µs, at midpoint p50 {:.0} / p99 {:.0} µs \
         | list of {RECORDS}: now p50 {:.1} / p99 {:.1} ms, at midpoint p50 {:.1} / p99 {:.1} ms | {:.0} bytes on disk per event",
        load.as_secs_f64(),
        us(percentile(&mut one_now, 0.5)),
        us(percentile(&mut one_now, 0.99)),
        us(percentile(&mut one_then, 0.5)),
        us(percentile(&mut one_then, 0.99)),
        ms(percentile(&mut list_now, 0.5)),
        ms(percentile(&mut list_now, 0.99)),
        ms(percentile(&mut list_then, 0.5)),
        ms(percentile(&mut list_then, 0.99)),
        bytes as f64 / total as f64,
    );
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let sizes = std::env::var("HISTORY_SIZES").unwrap_or_else(|_| "10000,100000,1000000".into());
    println!("point-in-time reads: {RECORDS} records, each updated in turn; reads as of the log's midpoint");
    for size in sizes.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
        run(size);
    }
}

//! Everything that reads the whole log back: open/recover, rebuild, the view digest, verify,
//! and the NDJSON export/import that is an independent, sled-free copy of the log.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::event::{self, ChainHash, Event};
use crate::keys;
use crate::storage::{prefix_end, MemoryStorage, Storage, WriteBatch};
use crate::txn::Txn;
use crate::views;

/// Events replayed per atomic batch during rebuild and import.
const REPLAY_CHUNK: usize = 4096;
const ZERO_HASH: ChainHash = [0; 16];

/// Where the log ends: the next seq to assign and the chain hash to extend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogTail {
    pub last_seq: u64,
    pub chain: ChainHash,
}

fn log_range(storage: &dyn Storage, from_seq: u64, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    storage.range(&keys::log(from_seq), &prefix_end(&[keys::LOG]), false, Some(limit))
}

pub(crate) fn read_tail(storage: &dyn Storage) -> Result<LogTail> {
    let last = storage.range(&[keys::LOG], &prefix_end(&[keys::LOG]), true, Some(1))?;
    match last.first() {
        None => Ok(LogTail { last_seq: 0, chain: ZERO_HASH }),
        Some((key, value)) => {
            let seq = keys::seq_of_log_key(key).ok_or_else(|| EngineError::Corrupt("malformed log key".into()))?;
            let decoded = event::decode(value)?;
            if decoded.event.seq != seq {
                return Err(EngineError::Corrupt(format!("log key {seq} holds event {}", decoded.event.seq)));
            }
            Ok(LogTail { last_seq: seq, chain: decoded.hash })
        }
    }
}

/// The lowest seq any view has applied (0 when no view exists yet).
pub(crate) fn applied_seq(storage: &dyn Storage) -> Result<u64> {
    let mut lowest: Option<u64> = None;
    for view in keys::VIEW_NAMES {
        let seq = match storage.get(&keys::applied(view))? {
            Some(bytes) => keys::read_u64(&bytes).ok_or_else(|| EngineError::Corrupt("applied seq".into()))?,
            None => 0,
        };
        lowest = Some(lowest.map_or(seq, |l| l.min(seq)));
    }
    Ok(lowest.unwrap_or(0))
}

/// Replays events `from..=to` onto the views, checking contiguity and the hash chain against the
/// event before `from`. Returns how many events were applied.
fn replay_range(storage: &dyn Storage, from: u64, to: u64, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let mut chain = if from <= 1 {
        ZERO_HASH
    } else {
        let bytes = storage
            .get(&keys::log(from - 1))?
            .ok_or_else(|| EngineError::Corrupt(format!("log entry {} is missing", from - 1)))?;
        event::decode(&bytes)?.hash
    };
    let mut next = from;
    while next <= to {
        let chunk = log_range(storage, next, REPLAY_CHUNK)?;
        let mut txn = Txn::new(storage);
        for (key, value) in chunk {
            let seq = keys::seq_of_log_key(&key).ok_or_else(|| EngineError::Corrupt("malformed log key".into()))?;
            if seq > to {
                break;
            }
            let decoded = check_entry(&value, next, &chain)?;
            views::apply_event(&mut txn, &decoded.event)?;
            chain = decoded.hash;
            next += 1;
        }
        if next <= to && txn.is_empty() {
            return Err(EngineError::Corrupt(format!("log entry {next} is missing")));
        }
        storage.apply(txn.into_batch())?;
        progress(next - from);
    }
    Ok(to.saturating_sub(from) + 1)
}

/// Decodes a log entry and checks it is event `expected_seq` chained to `chain`.
fn check_entry(bytes: &[u8], expected_seq: u64, chain: &ChainHash) -> Result<event::Decoded> {
    let decoded = event::decode(bytes)?;
    if decoded.event.seq != expected_seq {
        return Err(EngineError::Corrupt(format!(
            "log gap: expected event {expected_seq}, found {}",
            decoded.event.seq
        )));
    }
    if &decoded.prev_hash != chain {
        return Err(EngineError::Corrupt(format!("hash chain broken at event {expected_seq}")));
    }
    Ok(decoded)
}

/// The layout of the views this build derives. Views of another format (or none recorded: the
/// format before keys followed URIs) are rebuilt from the log on open.
const VIEWS_FORMAT: u64 = 6;

fn set_views_format(storage: &dyn Storage) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.put(keys::views_format(), keys::u64_value(VIEWS_FORMAT));
    storage.apply(batch)
}

/// On open: views of an older format are rebuilt; otherwise they must not be ahead of the log,
/// and whatever tail they lack is replayed.
pub(crate) fn recover(storage: &dyn Storage) -> Result<(LogTail, u64)> {
    let tail = read_tail(storage)?;
    let format = storage.get(&keys::views_format())?.as_deref().and_then(keys::read_u64);
    if format != Some(VIEWS_FORMAT) {
        if tail.last_seq > 0 {
            tracing::warn!(events = tail.last_seq, "views are of an older format: rebuilding them from the log");
        }
        let replayed = rebuild(storage, &mut |_| {})?;
        return Ok((tail, replayed));
    }
    let applied = applied_seq(storage)?;
    if applied > tail.last_seq {
        return Err(EngineError::Corrupt(format!(
            "views have applied event {applied} but the log ends at {}",
            tail.last_seq
        )));
    }
    let replayed = if applied < tail.last_seq {
        let n = replay_range(storage, applied + 1, tail.last_seq, &mut |_| {})?;
        storage.flush()?;
        n
    } else {
        0
    };
    Ok((tail, replayed))
}

/// Deletes every view entry (the log and metadata stay).
fn drop_views(storage: &dyn Storage) -> Result<()> {
    let mut prefixes: Vec<Vec<u8>> = keys::VIEW_PREFIXES.iter().map(|p| vec![*p]).collect();
    prefixes.push(keys::meta("applied/"));
    for prefix in prefixes {
        loop {
            let chunk = storage.range(&prefix, &prefix_end(&prefix), false, Some(REPLAY_CHUNK))?;
            if chunk.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            for (key, _) in chunk {
                batch.delete(key);
            }
            storage.apply(batch)?;
        }
    }
    Ok(())
}

/// Drops all views and replays the whole log. Returns the number of events replayed.
pub(crate) fn rebuild(storage: &dyn Storage, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let tail = read_tail(storage)?;
    drop_views(storage)?;
    let replayed = if tail.last_seq > 0 { replay_range(storage, 1, tail.last_seq, progress)? } else { 0 };
    set_views_format(storage)?;
    storage.flush()?;
    Ok(replayed)
}

/// sha256 over every view entry (key and value, length-prefixed), in key order.
pub fn digest(storage: &dyn Storage) -> Result<String> {
    let mut hasher = Sha256::new();
    for prefix in keys::VIEW_PREFIXES {
        let mut start = vec![prefix];
        let end = prefix_end(&[prefix]);
        loop {
            let chunk = storage.range(&start, &end, false, Some(REPLAY_CHUNK))?;
            let Some((last, _)) = chunk.last() else { break };
            let mut resume = last.clone();
            resume.push(0);
            for (key, value) in &chunk {
                hasher.update((key.len() as u64).to_be_bytes());
                hasher.update(key);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(value);
            }
            start = resume;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub views_digest: String,
    pub replay_digest: String,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every entry's checksum, the hash chain and gap-freedom, then compares the stored
/// views with a fresh replay into memory.
pub(crate) fn verify(storage: &dyn Storage, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let scratch = MemoryStorage::new();
    let mut chain = ZERO_HASH;
    let mut expected = 1u64;
    let mut start = keys::log(1);
    let end = prefix_end(&[keys::LOG]);
    'scan: loop {
        let chunk = storage.range(&start, &end, false, Some(REPLAY_CHUNK))?;
        if chunk.is_empty() {
            break;
        }
        let mut txn = Txn::new(&scratch);
        for (key, value) in &chunk {
            match check_entry(value, expected, &chain) {
                Ok(decoded) => {
                    txn.put(key.clone(), value.clone());
                    views::apply_event(&mut txn, &decoded.event)?;
                    chain = decoded.hash;
                    expected += 1;
                }
                Err(err) => {
                    report.problems.push(err.to_string());
                    break 'scan;
                }
            }
        }
        scratch.apply(txn.into_batch())?;
        progress(expected - 1);
        start = keys::log(expected);
    }
    report.events = expected - 1;
    let stray = storage.range(&[keys::LOG], &keys::log(1), false, Some(1))?;
    if !stray.is_empty() {
        report.problems.push("log holds an entry before seq 1".into());
    }
    report.views_digest = digest(storage)?;
    report.replay_digest = digest(&scratch)?;
    if report.problems.is_empty() && report.views_digest != report.replay_digest {
        report.problems.push("views differ from a fresh replay of the log".into());
    }
    Ok(report)
}

#[derive(Serialize, Deserialize)]
struct ExportHeader {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct ExportLine {
    seq: u64,
    crc32: u32,
    event: serde_json::Value,
}

const EXPORT_FORMAT: &str = "tidemark-log";

/// Writes the log as NDJSON: a header line, then one `{seq, crc32, event}` line per event where
/// `crc32` covers the compact JSON of `event`.
pub(crate) fn export(storage: &dyn Storage, out: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let io = |e: std::io::Error| EngineError::Storage(format!("export: {e}"));
    let header = ExportHeader { format: EXPORT_FORMAT.into(), version: 1 };
    let header = serde_json::to_string(&header).map_err(|e| EngineError::Storage(e.to_string()))?;
    writeln!(out, "{header}").map_err(io)?;
    let mut next = 1u64;
    let mut chain = ZERO_HASH;
    loop {
        let chunk = log_range(storage, next, REPLAY_CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (_, value) in chunk {
            let decoded = check_entry(&value, next, &chain)?;
            chain = decoded.hash;
            let event_json = serde_json::to_value(&decoded.event).map_err(|e| EngineError::Corrupt(e.to_string()))?;
            let text = event_json.to_string();
            let line = ExportLine { seq: next, crc32: crc32fast::hash(text.as_bytes()), event: event_json };
            let line = serde_json::to_string(&line).map_err(|e| EngineError::Corrupt(e.to_string()))?;
            writeln!(out, "{line}").map_err(io)?;
            next += 1;
        }
        progress(next - 1);
    }
    out.flush().map_err(io)?;
    Ok(next - 1)
}

/// Restores an export into an empty storage: re-chains the log and rebuilds every view.
pub(crate) fn import(storage: &dyn Storage, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    if !storage.range(&[keys::LOG], &prefix_end(&[keys::LOG]), false, Some(1))?.is_empty() {
        return Err(EngineError::InvalidCommand("import needs an empty data directory".into()));
    }
    let bad = |line: usize, why: String| EngineError::Corrupt(format!("import line {line}: {why}"));
    let mut lines = input.lines();
    let header = lines.next().ok_or_else(|| bad(1, "empty input".into()))?.map_err(|e| bad(1, e.to_string()))?;
    let header: ExportHeader = serde_json::from_str(&header).map_err(|e| bad(1, e.to_string()))?;
    if header.format != EXPORT_FORMAT || header.version != 1 {
        return Err(bad(1, format!("unsupported export {} v{}", header.format, header.version)));
    }
    let mut chain = ZERO_HASH;
    let mut expected = 1u64;
    let mut txn = Txn::new(storage);
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let line = line.map_err(|e| bad(number, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line).map_err(|e| bad(number, e.to_string()))?;
        if crc32fast::hash(parsed.event.to_string().as_bytes()) != parsed.crc32 {
            return Err(bad(number, "checksum mismatch".into()));
        }
        let mut event: Event = serde_json::from_value(parsed.event).map_err(|e| bad(number, e.to_string()))?;
        event.upgrade_legacy();
        if parsed.seq != expected || event.seq != expected {
            return Err(bad(number, format!("expected event {expected}, found {}", event.seq)));
        }
        let (bytes, next_chain) = event::encode(&event, &chain)?;
        txn.put(keys::log(event.seq), bytes);
        views::apply_event(&mut txn, &event)?;
        txn.commit_pending();
        chain = next_chain;
        expected += 1;
        if expected.is_multiple_of(REPLAY_CHUNK as u64) {
            storage.apply(std::mem::replace(&mut txn, Txn::new(storage)).into_batch())?;
            progress(expected - 1);
        }
    }
    storage.apply(txn.into_batch())?;
    storage.flush()?;
    Ok(expected - 1)
}

/// Copies the log's longest prefix that `until` covers (every event up to a seq, or up to the
/// first event stamped after a timestamp) into an empty store, deriving its views as it goes:
/// the store as it stood then. `progress` hears the count every [`REPLAY_CHUNK`] events.
pub(crate) fn copy_prefix(
    source: &dyn Storage,
    target: &dyn Storage,
    until: crate::AsOf,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    if !target.range(&[keys::LOG], &prefix_end(&[keys::LOG]), false, Some(1))?.is_empty() {
        return Err(EngineError::InvalidCommand("replay needs an empty data directory".into()));
    }
    let mut chain = ZERO_HASH;
    let mut next = 1u64;
    let mut txn = Txn::new(target);
    'log: loop {
        let chunk = log_range(source, next, REPLAY_CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (_, value) in chunk {
            let decoded = check_entry(&value, next, &chain)?;
            let event = decoded.event;
            if !until.covers(event.seq, event.timestamp) {
                break 'log;
            }
            // The source's bytes, as they are: the copy's log is the source's prefix.
            txn.put(keys::log(event.seq), value);
            views::apply_event(&mut txn, &event)?;
            txn.commit_pending();
            chain = decoded.hash;
            next += 1;
        }
        target.apply(std::mem::replace(&mut txn, Txn::new(target)).into_batch())?;
        progress(next - 1);
    }
    target.apply(txn.into_batch())?;
    set_views_format(target)?;
    target.flush()?;
    Ok(next - 1)
}

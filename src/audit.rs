//! Audit replay from the command line: `tidemark log` lists and filters the log's events,
//! `tidemark replay` materialises the store as it stood at a past moment into a new data
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use tidemark_engine::{AsOf, Engine, Event};

/// Which events `tidemark log` shows.
#[derive(Args, Clone, Default)]
pub struct LogFilter {
    /// Only events of this bucket and what it holds.
    #[arg(long)]
    bucket: Option<String>,
    /// Only events of this collection and its records (with --bucket).
    #[arg(long, requires = "bucket")]
    collection: Option<String>,
    /// Only events of this object (its URI, e.g. /buckets/b/collections/c/records/r) and below.
    #[arg(long)]
    uri: Option<String>,
    /// Only events made by this user id (e.g. account:bob).
    #[arg(long)]
    user: Option<String>,
    /// Only events made through this application (`Kinto-App-Id`).
    #[arg(long)]
    app: Option<String>,
    /// Only events stamped after this timestamp (epoch ms).
    #[arg(long)]
    since: Option<u64>,
    /// Only events stamped at or before this timestamp (epoch ms).
    #[arg(long)]
    until: Option<u64>,
    /// Only events from this seq on.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Only events up to this seq.
    #[arg(long)]
    to_seq: Option<u64>,
    /// `ndjson` (one event per line, the default) or `table`.
    #[arg(long, default_value = "ndjson")]
    format: String,
}

impl LogFilter {
    fn scope(&self) -> Option<String> {
        match (&self.uri, &self.bucket, &self.collection) {
            (Some(uri), _, _) => Some(uri.trim_end_matches('/').to_owned()),
            (None, Some(b), Some(c)) => Some(format!("/buckets/{b}/collections/{c}")),
            (None, Some(b), None) => Some(format!("/buckets/{b}")),
            (None, None, _) => None,
        }
    }

    fn admits(&self, event: &Event, scope: Option<&str>) -> bool {
        let uri = event.uri();
        let within = scope.is_none_or(|s| uri == s || uri.strip_prefix(s).is_some_and(|rest| rest.starts_with('/')));
        within
            && self.user.as_ref().is_none_or(|u| event.context.user_id.as_ref() == Some(u))
            && self.app.as_ref().is_none_or(|a| event.context.app_id.as_ref() == Some(a))
            && self.since.is_none_or(|t| event.timestamp > t)
            && self.until.is_none_or(|t| event.timestamp <= t)
            && self.to_seq.is_none_or(|s| event.seq <= s)
    }
}

/// One event as `tidemark log` prints it.
fn event_json(event: &Event) -> Value {
    json!({
        "seq": event.seq,
        "id": event.id.to_string(),
        "timestamp": event.timestamp,
        "action": event.action.as_str(),
        "resource_name": event.resource,
        "uri": event.uri(),
        "context": event.context,
        "data": event.data,
        "permissions": event.permissions,
        "prev_seq": event.prev_seq,
    })
}

pub fn log(engine: &Engine, filter: &LogFilter) -> anyhow::Result<u64> {
    let table = match filter.format.as_str() {
        "ndjson" => false,
        "table" => true,
        other => bail!("--format {other}: expected ndjson or table"),
    };
    let scope = filter.scope();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if table {
        writeln!(out, "{:>8}  {:<24}  {:<6}  {:<48}  user / app", "seq", "time (UTC)", "action", "uri")?;
    }
    let mut next = filter.from_seq.unwrap_or(1).max(1);
    let mut shown = 0;
    loop {
        let events = engine.events_from(next, 1024)?;
        let Some(last) = events.last() else { break };
        next = last.seq + 1;
        for event in events.iter().filter(|e| filter.admits(e, scope.as_deref())) {
            shown += 1;
            if table {
                let who = event.context.user_id.as_deref().unwrap_or("-");
                let app = event.context.app_id.as_deref().unwrap_or("-");
                let time = iso_time(event.timestamp);
                let (seq, action, uri) = (event.seq, event.action.as_str(), event.uri());
                writeln!(out, "{seq:>8}  {time:<24}  {action:<6}  {uri:<48}  {who} / {app}")?;
            } else {
                writeln!(out, "{}", event_json(event))?;
            }
        }
        if filter.to_seq.is_some_and(|to| next > to) {
            break;
        }
    }
    out.flush()?;
    Ok(shown)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of an epoch-ms timestamp.
fn iso_time(ts_ms: u64) -> String {
    let (date_time, millis) = tidemark_protocol::dates::date_time(ts_ms);
    format!("{date_time}.{millis:03}Z")
}

/// Where `tidemark replay` stops.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct Until {
    /// The moment, as a Kinto timestamp (epoch ms): the log up to its first event stamped later.
    #[arg(long)]
    until: Option<u64>,
    /// The log position: every event up to this seq.
    #[arg(long)]
    until_seq: Option<u64>,
}

pub fn replay(source: &Engine, until: &Until, to: &Path, data: Option<&PathBuf>) -> anyhow::Result<u64> {
    let at = match (until.until, until.until_seq) {
        (Some(ts), _) => AsOf::Timestamp(ts),
        (None, Some(seq)) => AsOf::Seq(seq),
        (None, None) => bail!("--until or --until-seq is required"),
    };
    tidemark_engine::disk::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let target = Engine::open_sled(&to.join("store"), tidemark_engine::EngineConfig::default())?;
    let total = match at {
        AsOf::Seq(seq) => seq.min(source.last_seq()?),
        AsOf::Timestamp(_) => source.last_seq()?,
    };
    let mut progress = crate::progress::Progress::new("replay", Some(total));
    let copied = source.replay_into(&target, at, &mut |done| progress.update(done))?;
    progress.finish();
    target.close();
    // The same user ids: the copy uses the source's generated HMAC secret, if it has one.
    if let Some(data) = data {
        let secret = data.join("userid_hmac_secret");
        if secret.exists() {
            let bytes = std::fs::read(&secret).context("cannot read the HMAC secret")?;
            tidemark_engine::disk::write_atomic(&to.join("userid_hmac_secret"), &bytes, true)
                .context("cannot copy the HMAC secret")?;
        }
    }
    Ok(copied)
}

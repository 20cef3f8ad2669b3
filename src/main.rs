//! `tidemark`: serve the Kinto API, or maintain the store (rebuild, verify, export, import),
//! or audit it (log, replay).

mod audit;
mod progress;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use progress::Progress;
use tidemark_server::{AppState, Settings};

// Many small, short-lived allocations per request (JSON values, keys, headers): mimalloc's
// thread-local free lists serve them faster than glibc's malloc under two busy runtimes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tidemark", version, about = "A Kinto-compatible, event-sourced JSON store and sync server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Kinto-style INI settings file (default: $KINTO_INI or $TIDEMARK_INI if set).
    #[arg(long)]
    ini: Option<PathBuf>,
    /// Data directory (overrides `data_dir` from the INI and the environment).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8888 (overrides [server:main] and `bind`).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Drop every derived view and replay the whole log; checks the result is byte-identical.
    Rebuild(Common),
    /// Check checksums, the hash chain, gap-freedom and views against a fresh replay.
    Verify(Common),
    /// Write the log as checksummed NDJSON to FILE (or stdout with `-`).
    Export {
        #[command(flatten)]
        common: Common,
        file: PathBuf,
    },
    /// Restore a log exported with `export` into an empty data directory.
    Import {
        #[command(flatten)]
        common: Common,
        file: PathBuf,
    },
    /// List the log's events (who changed what, when, through which application), filtered.
    Log {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        filter: audit::LogFilter,
    },
    /// Materialise the store as it stood at a past moment into a new data directory, which
    /// `serve --data DIR` opens (with `readonly = true` to keep it as it was).
    Replay {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        until: audit::Until,
        /// The new data directory (must not hold a store yet).
        #[arg(long)]
        to: PathBuf,
    },
}

fn load_settings(common: &Common, bind: Option<&str>) -> anyhow::Result<Settings> {
    let ini = common
        .ini
        .clone()
        .or_else(|| std::env::var_os("TIDEMARK_INI").map(PathBuf::from))
        .or_else(|| std::env::var_os("KINTO_INI").map(PathBuf::from));
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut overrides = Vec::new();
    if let Some(data) = &common.data {
        overrides.push(("data_dir".to_owned(), data.display().to_string()));
    }
    if let Some(bind) = bind {
        overrides.push(("bind".to_owned(), bind.to_owned()));
    }
    let settings = Settings::load(ini.as_deref(), &env, &overrides).context("cannot load settings")?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

/// Opens an existing store (maintenance commands never create one).
fn open(common: &Common) -> anyhow::Result<tidemark_engine::Engine> {
    let settings = load_settings(common, None)?;
    tidemark_server::open_existing_engine(&settings).map_err(anyhow::Error::msg)
}

fn main() -> anyhow::Result<()> {
    // JSON lines for machines (TIDEMARK_LOG_FORMAT=json, or logs not going to a terminal), the
    // human format in a terminal.
    // One summary line per request is Kinto's habit, but at tens of thousands of requests a
    // second it costs a third of the throughput and gigabytes of logs: on when asked for
    // (`RUST_LOG=info` or `RUST_LOG=request.summary=info`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,request.summary=off"));
    let json = match std::env::var("TIDEMARK_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { common: Common::default(), bind: None }) {
        Command::Serve { common, bind } => serve(&common, bind.as_deref()),
        Command::Rebuild(common) => {
            let engine = open(&common)?;
            let before = engine.digest()?;
            let started = std::time::Instant::now();
            let mut progress = Progress::new("rebuild", Some(engine.last_seq()?));
            let events = engine.rebuild(&mut |done| progress.update(done))?;
            progress.finish();
            let after = engine.digest()?;
            println!("rebuilt views from {events} events in {:.3}s", started.elapsed().as_secs_f64());
            if before != after {
                bail!("views differ after rebuild: {before} before, {after} after (the rebuilt ones are kept)");
            }
            println!("views digest {after} (unchanged)");
            Ok(())
        }
        Command::Verify(common) => {
            let engine = open(&common)?;
            let mut progress = Progress::new("verify", Some(engine.last_seq()?));
            let report = engine.verify(&mut |done| progress.update(done))?;
            progress.finish();
            println!("{}", serde_json_report(&report));
            if !report.ok() {
                bail!("verification failed: {}", report.problems.join("; "));
            }
            Ok(())
        }
        Command::Export { common, file } => {
            let engine = open(&common)?;
            let mut progress = Progress::new("export", Some(engine.last_seq()?));
            let mut report = |done| progress.update(done);
            let count = if file.as_os_str() == "-" {
                engine.export(&mut std::io::stdout().lock(), &mut report)?
            } else {
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&file).with_context(|| format!("cannot create {}", file.display()))?,
                );
                let count = engine.export(&mut out, &mut report)?;
                // A backup is one once it is on disk: flushed, synced, and named in its directory.
                out.into_inner().map_err(|e| e.into_error()).context("cannot write the export")?;
                tidemark_engine::disk::sync_file_and_dir(&file)
                    .with_context(|| format!("cannot sync {}", file.display()))?;
                count
            };
            progress.finish();
            eprintln!("exported {count} events");
            Ok(())
        }
        Command::Log { common, filter } => {
            let shown = audit::log(&open(&common)?, &filter)?;
            eprintln!("{shown} events");
            Ok(())
        }
        Command::Replay { common, until, to } => {
            let settings = load_settings(&common, None)?;
            let engine = tidemark_server::open_existing_engine(&settings).map_err(anyhow::Error::msg)?;
            let copied = audit::replay(&engine, &until, &to, Some(&settings.data_dir))?;
            println!("replayed {copied} events into {}", to.display());
            Ok(())
        }
        Command::Import { common, file } => {
            // The one maintenance command that creates a store: into an empty one.
            let settings = load_settings(&common, None)?;
            let engine = tidemark_server::open_engine(&settings).map_err(anyhow::Error::msg)?;
            let input = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let mut progress = Progress::new("import", None);
            let count = engine.import(&mut std::io::BufReader::new(input), &mut |done| progress.update(done))?;
            progress.finish();
            println!("imported {count} events");
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn serde_json_report(report: &tidemark_engine::VerifyReport) -> String {
    format!(
        "events: {}\nviews digest: {}\nreplay digest: {}\nproblems: {}",
        report.events,
        report.views_digest,
        report.replay_digest,
        if report.problems.is_empty() { "none".to_owned() } else { report.problems.join("; ") }
    )
}

fn serve(common: &Common, bind: Option<&str>) -> anyhow::Result<()> {
    let settings = load_settings(common, bind)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let engine = tidemark_server::open_engine(&settings).map_err(anyhow::Error::msg)?;
        let opened = engine.opened();
        tracing::info!(last_seq = opened.last_seq, replayed = opened.replayed, data_dir = %settings.data_dir.display(), "engine opened");
        let secret = tidemark_server::hmac_secret(&settings).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(&settings.bind)
            .await
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        tracing::info!("listening on http://{}/v1/", listener.local_addr()?);
        let state = AppState::new(engine, settings, secret);
        let shutdown = async {
            wait_for_signal().await;
            tracing::info!("stopping: finishing in-flight requests, closing streams with their cursors (a second signal exits at once)");
            tokio::spawn(async {
                wait_for_signal().await;
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            });
        };
        tidemark_server::serve(listener, state, shutdown).await?;
        Ok(())
    })
}

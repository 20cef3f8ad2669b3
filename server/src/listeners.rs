//! Kinto's `event_listeners` settings, run as the engine's durable async listeners.
//!
//! ```ini
//! event_listeners = hook1
//! event_listeners.hook1.use = tidemark.listeners.webhook
//! event_listeners.hook1.url = http://127.0.0.1:9999/hook
//! event_listeners.hook1.actions = create update delete     # default: all
//! event_listeners.hook1.resources = record                 # default: all
//! event_listeners.hook1.max_retries = 10                   # default: retry forever
//! event_listeners.hook1.batch_size = 100
//! event_listeners.hook1.timeout_seconds = 10
//! ```
//!
//! Unlike Kinto's (called inside the request, before commit), these run after commit, from the
//! log, with a durable cursor per listener name: delivery is at-least-once across restarts and
//! the event `id` (ULID) is the idempotency key. A listener that cannot be configured is skipped
//! with a startup warning; the server still starts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tidemark_engine::listeners::{
    spawn_listener_with, Filter, HandleFuture, Listener, ListenerError, ListenerHandle, ListenerOptions,
};
use tidemark_engine::{Action, Engine, Event};

use crate::settings::Settings;

/// The `use` value that selects the webhook listener.
pub const WEBHOOK: &str = "tidemark.listeners.webhook";

/// One configured listener, ready to spawn.
struct Configured {
    name: String,
    listener: Arc<dyn Listener>,
    options: ListenerOptions,
}

/// Starts every listener `settings` configure; the handles stop them when dropped. A listener
/// with no `resources` hears the service's declared resources (not history's purges).
pub fn start(engine: &Engine, settings: &Settings, registry: &crate::toolkit::Registry) -> Vec<ListenerHandle> {
    let (configured, warnings) = configure(settings);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let declared: Vec<String> = registry.iter().map(|kind| kind.name.clone()).collect();
    configured
        .into_iter()
        .map(|mut c| {
            c.options.filter.resources.get_or_insert_with(|| declared.clone());
            c
        })
        .filter_map(|c| match spawn_listener_with(engine.clone(), &c.name, c.listener, c.options) {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(listener = %c.name, error = %err, "event listener not started");
                None
            }
        })
        .collect()
}

fn list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A webhook the settings describe badly stops the server (one quietly not called would lose
/// events). Listeners of kinds Tidemark does not have (a Kinto plugin's) are only warned about,
/// so an existing `kinto.ini` still starts.
pub fn check(settings: &Settings) -> Result<(), String> {
    let raw = &settings.raw;
    let mut errors = Vec::new();
    for name in raw.get("event_listeners").map(|v| list(v)).unwrap_or_default() {
        let setting = |key: &str| raw.get(&format!("event_listeners.{name}.{key}")).map(|v| v.trim().to_owned());
        if setting("use").as_deref() != Some(WEBHOOK) {
            continue;
        }
        if let Err(why) = configure_one(&name, &setting, &mut Vec::new()) {
            errors.push(format!("event listener '{name}' {SKIPPED}: {why}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// What a listener that cannot be configured is told.
const SKIPPED: &str = "is not started";

/// Parses the settings into listeners, and one warning per listener skipped or option ignored.
fn configure(settings: &Settings) -> (Vec<Configured>, Vec<String>) {
    let raw = &settings.raw;
    let mut names = raw.get("event_listeners").map(|v| list(v)).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    // Two drivers on one name would race on one cursor.
    names.retain(|name| seen.insert(name.clone()));
    let mut configured = Vec::new();
    let mut warnings = Vec::new();
    for name in names {
        let setting = |key: &str| raw.get(&format!("event_listeners.{name}.{key}")).map(|v| v.trim().to_owned());
        match configure_one(&name, &setting, &mut warnings) {
            Ok(listener) => configured.push(listener),
            Err(why) => warnings.push(format!("event listener '{name}' {SKIPPED}: {why}")),
        }
    }
    (configured, warnings)
}

fn configure_one(
    name: &str,
    setting: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Configured, String> {
    let used = setting("use").filter(|u| !u.is_empty()).ok_or("no `use` is set")?;
    if used != WEBHOOK {
        return Err(format!("`use = {used}` is not a listener Tidemark has (only {WEBHOOK})"));
    }
    let mut filter = Filter::default();
    if let Some(text) = setting("actions") {
        let mut actions = Vec::new();
        for action in list(&text) {
            match action.as_str() {
                "create" => actions.push(Action::Create),
                "update" => actions.push(Action::Update),
                "delete" => actions.push(Action::Delete),
                // Kinto's opt-in read events are emitted during requests; the log has none.
                "read" => warnings.push(format!("event listener '{name}': action 'read' is never emitted; ignored")),
                other => return Err(format!("unknown action '{other}' (create, update, delete)")),
            }
        }
        filter.actions = Some(actions);
    }
    if let Some(text) = setting("resources") {
        filter.resources = Some(list(&text));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        setting(key).map(|v| v.parse::<u64>().map_err(|_| format!("{key} = {v:?} is not a number"))).transpose()
    };
    let mut options = ListenerOptions { filter, ..ListenerOptions::default() };
    if let Some(max) = number("max_retries")? {
        options.max_retries = Some(u32::try_from(max).unwrap_or(u32::MAX));
    }
    if let Some(size) = number("batch_size")? {
        options.batch_size = usize::try_from(size).unwrap_or(usize::MAX).max(1);
    }
    let timeout = Duration::from_secs(number("timeout_seconds")?.unwrap_or(10).max(1));
    let url = setting("url").filter(|u| !u.is_empty()).ok_or("no `url` is set")?;
    let webhook = Webhook::new(&url, timeout)?;
    Ok(Configured { name: name.to_owned(), listener: Arc::new(webhook), options })
}

/// POSTs each batch as `{"events": [...]}` with `Idempotency-Key: <first ulid>-<last ulid>`.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Webhook {
    pub fn new(url: &str, timeout: Duration) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
        if url.scheme() != "http" {
            // Built without TLS: an https URL would fail on every delivery.
            return Err(format!("url {url}: only http:// is supported"));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Webhook { client, url })
    }
}

/// The JSON shape of one event in a webhook payload.
pub fn event_json(event: &Event) -> Value {
    json!({
        "id": event.id.to_string(),
        "seq": event.seq,
        "action": event.action.as_str(),
        "resource_name": event.resource,
        "uri": event.uri(),
        "timestamp": event.timestamp,
        "user_id": event.context.user_id,
        "data": event.data,
    })
}

impl Listener for Webhook {
    fn handle<'a>(&'a self, events: &'a [Arc<Event>]) -> HandleFuture<'a> {
        Box::pin(async move {
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Ok(());
            };
            let body = json!({ "events": events.iter().map(|e| event_json(e)).collect::<Vec<_>>() });
            let response = self
                .client
                .post(self.url.clone())
                .header("Idempotency-Key", format!("{}-{}", first.id, last.id))
                .json(&body)
                .send()
                .await
                .map_err(|e| ListenerError::retry(format!("POST {}: {e}", self.url)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let message = format!("POST {} answered {status}", self.url);
            // 5xx, timeouts and rate limits pass; any other refusal would be repeated forever.
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                Err(ListenerError::retry(message))
            } else {
                Err(ListenerError::permanent(message))
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn settings(items: &[(&str, &str)]) -> Settings {
        let pairs: Vec<(String, String)> = items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(None, &[], &pairs).expect("settings")
    }

    #[test]
    fn kinto_shaped_settings_configure_webhooks() {
        let s = settings(&[
            ("event_listeners", "hook1 hook2 hook1 other"),
            ("event_listeners.hook1.use", WEBHOOK),
            ("event_listeners.hook1.url", "http://127.0.0.1:9/hook"),
            ("event_listeners.hook1.actions", "create delete read"),
            ("event_listeners.hook1.resources", "record group"),
            ("event_listeners.hook1.max_retries", "3"),
            ("kinto.event_listeners.hook2.use", WEBHOOK),
            ("event_listeners.hook2.url", "http://127.0.0.1:9/other"),
            ("event_listeners.other.use", "kinto_redis.listeners"),
        ]);
        assert!(s.warnings.is_empty(), "listener settings are used, not ignored: {:?}", s.warnings);
        let (configured, warnings) = configure(&s);
        let names: Vec<&str> = configured.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["hook1", "hook2"]);
        let hook1 = &configured[0].options;
        assert_eq!(hook1.filter.actions, Some(vec![Action::Create, Action::Delete]));
        assert_eq!(hook1.filter.resources, Some(vec!["record".to_owned(), "group".to_owned()]));
        assert_eq!(hook1.max_retries, Some(3));
        assert_eq!(configured[1].options.filter, Filter::default());
        assert_eq!(configured[1].options.max_retries, None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("'read'")));
        assert!(warnings.iter().any(|w| w.contains("'other'") && w.contains("kinto_redis.listeners")));
    }

    #[test]
    fn bad_listener_settings_stop_the_server() {
        for (key, value) in
            [("actions", "create explode"), ("max_retries", "many"), ("url", "https://x/hook"), ("url", "")]
        {
            let pairs: Vec<(String, String)> = [
                ("event_listeners", "h"),
                ("event_listeners.h.use", WEBHOOK),
                ("event_listeners.h.url", "http://127.0.0.1:9/hook"),
                (&format!("event_listeners.h.{key}"), value),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let err = Settings::load(None, &[], &pairs).expect_err(key).to_string();
            assert!(err.contains("event listener 'h'"), "{key} = {value}: {err}");
        }
        let (configured, warnings) = configure(&settings(&[]));
        assert!(configured.is_empty() && warnings.is_empty());
    }
}

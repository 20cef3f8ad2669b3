//! Where setting values come from and how they are layered: the origin of each value, the
//! `KINTO_*`/`TIDEMARK_*` environment overlay and the command-line overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::catalogue::{classify, did_you_mean, exact_known_keys, strip_project_prefix, Known};
use super::{Notes, SettingsError, Values, HTTP_PORT_OVERRIDE, NON_SETTING_ENV};

#[derive(Debug, Clone)]
pub(super) enum Origin {
    Ini { path: PathBuf, line: usize, key: String },
    Env(String),
    Override(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Ini { path, line, key } => write!(f, "{}:{line} `{key}`", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Override(key) => write!(f, "command-line override `{key}`"),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) text: String,
    pub(super) origin: Origin,
}

pub(super) fn invalid(key: &str, entry: &Entry, expected: &str) -> SettingsError {
    SettingsError::InvalidValue {
        key: key.to_owned(),
        value: entry.text.clone(),
        origin: entry.origin.to_string(),
        expected: expected.to_owned(),
    }
}

/// Kinto JSON-decodes every setting (`utils.native_value`): a JSON string loses its quotes, a
/// JSON list becomes a whitespace list, `null` means unset. Everything else stays as written.
pub(super) fn native_text(text: &str) -> String {
    let trimmed = text.trim();
    let decoded = match trimmed.as_bytes().first() {
        Some(b'"' | b'[' | b'n') => serde_json::from_str::<serde_json::Value>(trimmed).ok(),
        _ => None,
    };
    match decoded {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => trimmed.to_owned(),
    }
}

/// Kinto's env name for a key: upper case, `.` and `-` become `_`.
fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

pub(super) struct EnvVar {
    /// 2 for `TIDEMARK_`, 1 for `KINTO_`: the higher wins.
    rank: u8,
    name: String,
    suffix: String,
    value: String,
}

/// Applies `KINTO_*`/`TIDEMARK_*` variables naming a known or ini-defined key; returns the rest.
pub(super) fn overlay_env(values: &mut BTreeMap<String, Entry>, env: &[(String, String)]) -> Vec<EnvVar> {
    let mut keys_by_env: BTreeMap<String, String> = BTreeMap::new();
    for key in exact_known_keys().into_iter().chain(values.keys().cloned()) {
        keys_by_env.entry(env_name(&key)).or_insert(key);
    }
    let mut chosen: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut leftovers = Vec::new();
    for (name, value) in env {
        let Some(var) = parse_env_var(name, value) else {
            continue;
        };
        match keys_by_env.get(&var.suffix) {
            Some(key) => {
                if chosen.get(key).is_none_or(|old| var.rank >= old.rank) {
                    chosen.insert(key.clone(), var);
                }
            }
            None => leftovers.push(var),
        }
    }
    for (key, var) in chosen {
        values.insert(key, Entry { text: native_text(&var.value), origin: Origin::Env(var.name) });
    }
    leftovers
}

fn parse_env_var(name: &str, value: &str) -> Option<EnvVar> {
    let (rank, suffix) =
        if let Some(suffix) = name.strip_prefix("TIDEMARK_") { (2, suffix) } else { (1, name.strip_prefix("KINTO_")?) };
    if suffix.is_empty() || NON_SETTING_ENV.contains(&suffix) {
        return None;
    }
    Some(EnvVar { rank, name: name.to_owned(), suffix: suffix.to_owned(), value: value.to_owned() })
}

pub(super) fn apply_overrides(
    values: &mut BTreeMap<String, Entry>,
    overrides: &[(String, String)],
) -> Result<(), SettingsError> {
    for (written, value) in overrides {
        let written = written.trim();
        if written == HTTP_PORT_OVERRIDE {
            continue;
        }
        let key = strip_project_prefix(written);
        if matches!(classify(key), Known::Unknown) {
            return Err(SettingsError::UnknownSetting {
                key: key.to_owned(),
                origin: format!("command-line override `{written}`"),
                hint: did_you_mean(key),
            });
        }
        values.insert(key.to_owned(), Entry { text: native_text(value), origin: Origin::Override(written.to_owned()) });
    }
    Ok(())
}

/// Second env pass: `*_MULTIAUTH_POLICY_<NAME>_<KEY>` for policies named in `multiauth.policies`,
/// which cannot be listed in advance. What is still unmatched is another tool's variable (or a
/// typo): ignored, all named in one warning.
pub(super) fn overlay_policy_env(
    values: &mut BTreeMap<String, Entry>,
    mut leftovers: Vec<EnvVar>,
    notes: &mut Notes,
) -> Result<(), SettingsError> {
    let policies: Vec<String> = Values(values).list("multiauth.policies").unwrap_or_default();
    let mut unknown = Vec::new();
    // KINTO_ first so TIDEMARK_ overwrites it.
    leftovers.sort_by_key(|var| var.rank);
    for var in leftovers {
        let key = policies.iter().find_map(|policy| {
            let rest = var.suffix.strip_prefix(&format!("MULTIAUTH_POLICY_{}_", env_name(policy)))?;
            (!rest.is_empty()).then(|| format!("multiauth.policy.{policy}.{}", rest.to_lowercase()))
        });
        if let Some(key) = key {
            let overridden = values.get(&key).is_some_and(|e| matches!(e.origin, Origin::Override(_)));
            if !overridden {
                let entry = Entry { text: native_text(&var.value), origin: Origin::Env(var.name) };
                values.insert(key, entry);
            }
            continue;
        }
        // Kubernetes, Docker images and scripts set `TIDEMARK_PORT`, `TIDEMARK_HOME`…: a variable
        // that names no setting is none of ours. Only the values of known settings are checked.
        // A near miss of a long setting name is likely a typo: say which one.
        let key = var.suffix.to_lowercase();
        let hint = Some(key.as_str())
            .filter(|key| key.len() >= 6)
            .map(did_you_mean)
            .and_then(|hint| hint.strip_prefix("; ").map(|h| format!(" ({h})")))
            .unwrap_or_default();
        unknown.push(format!("{}{hint}", var.name));
    }
    if !unknown.is_empty() {
        unknown.sort();
        notes.warn(format!("environment variables that name no setting are ignored: {}", unknown.join(", ")));
    }
    Ok(())
}

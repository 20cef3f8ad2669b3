//! The ini file reader: Python configparser as PasteDeploy configures it, `%(name)s` included.
//! It is our own rather than a crate: none handles Kinto's `%(here)s` interpolation, multi-line
//! continuation values and line-numbered errors the way Kinto's PasteDeploy/configparser does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::catalogue::strip_project_prefix;
use super::sources::{native_text, Entry, Origin};
use super::{check_bind, Notes, SettingsError, HTTP_PORT_OVERRIDE};

const DEFAULT_HOST: &str = "127.0.0.1";
const MAX_INTERPOLATION_DEPTH: usize = 10;

struct IniEntry {
    key: String,
    /// Lines of the value; continuation lines and blank lines inside the value included.
    lines: Vec<String>,
    line: usize,
}

impl IniEntry {
    /// configparser joins continuation lines with "\n" and drops trailing blank lines.
    fn value(&self) -> String {
        self.lines.join("\n").trim_end().to_owned()
    }
}

struct IniSection {
    name: String,
    entries: Vec<IniEntry>,
}

impl IniSection {
    fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

pub(super) struct IniFile {
    /// Absolute path: `%(__file__)s`.
    path: PathBuf,
    /// Its directory: `%(here)s`.
    pub(super) dir: PathBuf,
    sections: Vec<IniSection>,
}

#[derive(Default)]
pub(super) struct ServerMain {
    host: Option<Entry>,
    port: Option<Entry>,
    listen: Option<Entry>,
}

impl ServerMain {
    pub(super) fn bind(&self, http_port: &str) -> Result<String, SettingsError> {
        let text = |e: &Option<Entry>| e.as_ref().map(|e| e.text.trim().to_owned()).filter(|t| !t.is_empty());
        if let (None, None, Some(listen)) = (&self.host, &self.port, &self.listen) {
            // waitress `listen = host:port ...`: Tidemark binds the first one.
            let first = listen.text.split_whitespace().next().unwrap_or_default();
            return check_bind(first, listen);
        }
        let host = text(&self.host).unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = text(&self.port).unwrap_or_else(|| http_port.to_owned());
        if port.parse::<u16>().is_err() {
            return Err(SettingsError::InvalidValue {
                key: "port".to_owned(),
                value: port,
                origin: self
                    .port
                    .as_ref()
                    .map_or_else(|| format!("{HTTP_PORT_OVERRIDE} override"), |e| e.origin.to_string()),
                expected: "a port number (0 to 65535)".to_owned(),
            });
        }
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        Ok(format!("{host}:{port}"))
    }
}

impl IniFile {
    pub(super) fn read(path: &Path) -> Result<IniFile, SettingsError> {
        let read_error = |source| SettingsError::Read { path: path.to_path_buf(), source };
        let path = std::path::absolute(path).map_err(read_error)?;
        let text = std::fs::read_to_string(&path).map_err(read_error)?;
        let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let sections = parse_ini(&path, text.trim_start_matches('\u{feff}'))?;
        Ok(IniFile { path, dir, sections })
    }

    fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// `[server:main] port` when written as a number: what `%(http_port)s` means without a
    /// caller-given port.
    pub(super) fn literal_port(&self) -> Option<String> {
        let value = self.section("server:main")?.get("port")?.value();
        (!value.contains('%') && !value.trim().is_empty()).then(|| value.trim().to_owned())
    }

    fn expand(&self, section: &IniSection, entry: &IniEntry, http_port: &str) -> Result<String, SettingsError> {
        let interpolator = Interpolator {
            section,
            defaults: self.section("DEFAULT"),
            builtins: [
                ("here", self.dir.to_string_lossy().into_owned()),
                ("__file__", self.path.to_string_lossy().into_owned()),
                (HTTP_PORT_OVERRIDE, http_port.to_owned()),
            ],
        };
        interpolator.expand(&entry.value(), 0).map_err(|message| SettingsError::Interpolation {
            path: self.path.clone(),
            line: entry.line,
            section: section.name.clone(),
            key: entry.key.clone(),
            message,
        })
    }

    fn origin(&self, entry: &IniEntry) -> Origin {
        Origin::Ini { path: self.path.clone(), line: entry.line, key: entry.key.clone() }
    }

    /// `[app:main]`, unprefixed, interpolated and JSON-unquoted.
    pub(super) fn app_settings(
        &self,
        http_port: &str,
        notes: &mut Notes,
    ) -> Result<BTreeMap<String, Entry>, SettingsError> {
        let section =
            self.section("app:main").ok_or_else(|| SettingsError::MissingAppMain { path: self.path.clone() })?;
        let mut values: BTreeMap<String, Entry> = BTreeMap::new();
        for entry in &section.entries {
            if entry.key == "use" {
                let value = entry.value();
                if value.trim() != "egg:kinto" {
                    notes.warn(format!("[app:main] use = {value} is ignored"));
                }
                continue;
            }
            let text = native_text(&self.expand(section, entry, http_port)?);
            let key = strip_project_prefix(&entry.key);
            if let Some(previous) = values.get(key) {
                if previous.text != text {
                    return Err(SettingsError::Conflict {
                        path: self.path.clone(),
                        names: format!("{} and {}", previous.origin, self.origin(entry)),
                    });
                }
                continue;
            }
            let origin = self.origin(entry);
            values.insert(key.to_owned(), Entry { text, origin });
        }
        Ok(values)
    }

    pub(super) fn server_main(&self, http_port: &str) -> Result<ServerMain, SettingsError> {
        let Some(section) = self.section("server:main") else {
            return Ok(ServerMain::default());
        };
        let read = |key: &str| -> Result<Option<Entry>, SettingsError> {
            section
                .get(key)
                .map(|entry| {
                    let text = self.expand(section, entry, http_port)?;
                    let origin = self.origin(entry);
                    Ok(Entry { text, origin })
                })
                .transpose()
        };
        Ok(ServerMain { host: read("host")?, port: read("port")?, listen: read("listen")? })
    }

    pub(super) fn warn_ignored_sections(&self, notes: &mut Notes) {
        let mut kinds: Vec<(&str, &str, Vec<String>)> = Vec::new();
        for section in &self.sections {
            let Some((kind, why)) = ignored_section_kind(&section.name) else {
                continue;
            };
            let label = format!("[{}]", section.name);
            match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, _, names)) => names.push(label),
                None => kinds.push((kind, why, vec![label])),
            }
        }
        for (kind, why, names) in kinds {
            notes.warn(format!("ignored {kind} sections {}: {why}", names.join(", ")));
        }
    }
}

fn ignored_section_kind(name: &str) -> Option<(&'static str, &'static str)> {
    let logging = ["loggers", "handlers", "formatters"].contains(&name)
        || ["logger_", "handler_", "formatter_"].iter().any(|p| name.starts_with(p));
    match name {
        "app:main" | "server:main" | "DEFAULT" => None,
        _ if logging => Some(("logging", "use RUST_LOG to configure logging")),
        "uwsgi" => Some(("uwsgi", "Tidemark is its own HTTP server")),
        _ if name.contains(':') => Some(("PasteDeploy", "Tidemark reads only [app:main] and [server:main]")),
        _ => Some(("other", "Tidemark reads only [app:main] and [server:main]")),
    }
}

fn parse_ini(path: &Path, text: &str) -> Result<Vec<IniSection>, SettingsError> {
    let syntax = |line: usize, message: String| SettingsError::Syntax { path: path.to_path_buf(), line, message };
    let mut sections: Vec<IniSection> = Vec::new();
    // Whether the last entry of the last section can still take continuation lines, and the
    // indentation of its key line (continuations must be indented deeper).
    let mut in_value = false;
    let mut key_indent = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        // Full-line comments are skipped even inside a multi-line value, as configparser does.
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let current = sections.last_mut();
        if trimmed.is_empty() {
            // Kept tentatively: blank lines inside a value survive, trailing ones are trimmed.
            if let (true, Some(entry)) = (in_value, current.and_then(|s| s.entries.last_mut())) {
                entry.lines.push(String::new());
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if in_value && indent > key_indent {
            if let Some(entry) = current.and_then(|s| s.entries.last_mut()) {
                entry.lines.push(trimmed.to_owned());
                continue;
            }
        }
        key_indent = indent;
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .rfind(']')
                .map(|end| &rest[..end])
                .filter(|name| !name.is_empty())
                .ok_or_else(|| syntax(number, format!("bad section header {trimmed:?}")))?;
            if sections.iter().any(|s| s.name == name) {
                return Err(syntax(number, format!("section [{name}] is defined twice")));
            }
            sections.push(IniSection { name: name.to_owned(), entries: Vec::new() });
            in_value = false;
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(syntax(number, format!("{trimmed:?} comes before any [section] header")));
        };
        let Some(delimiter) = trimmed.find(['=', ':']) else {
            return Err(syntax(number, format!("expected `key = value` or `key: value`, found {trimmed:?}")));
        };
        let key = trimmed[..delimiter].trim_end();
        if key.is_empty() {
            return Err(syntax(number, format!("missing key before {trimmed:?}")));
        }
        if section.get(key).is_some() {
            return Err(syntax(number, format!("'{key}' is defined twice in [{}]", section.name)));
        }
        section.entries.push(IniEntry {
            key: key.to_owned(),
            lines: vec![trimmed[delimiter + 1..].trim().to_owned()],
            line: number,
        });
        in_value = true;
    }
    Ok(sections)
}

/// configparser's BasicInterpolation: `%(name)s` and `%%`.
struct Interpolator<'a> {
    section: &'a IniSection,
    defaults: Option<&'a IniSection>,
    builtins: [(&'static str, String); 3],
}

impl Interpolator<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.section
            .get(name)
            .or_else(|| self.defaults.and_then(|d| d.get(name)))
            .map(IniEntry::value)
            .or_else(|| self.builtins.iter().find(|(builtin, _)| *builtin == name).map(|(_, value)| value.clone()))
    }

    fn expand(&self, value: &str, depth: usize) -> Result<String, String> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err("too many nested %(...)s references (a reference loop?)".to_owned());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(percent) = rest.find('%') {
            out.push_str(&rest[..percent]);
            let after = &rest[percent + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let name = tail
                    .find(")s")
                    .map(|end| &tail[..end])
                    .filter(|name| !name.is_empty() && !name.contains(')'))
                    .ok_or_else(|| format!("bad reference {:?}: write %(name)s", truncate(&rest[percent..])))?;
                let raw = self.lookup(name).ok_or_else(|| {
                    format!(
                        "nothing to substitute for %({name})s (known: here, __file__, \
                         http_port, keys of the same section and of [DEFAULT])"
                    )
                })?;
                out.push_str(&self.expand(&raw, depth + 1)?);
                rest = &tail[name.len() + 2..];
            } else {
                return Err(format!(
                    "'%' must be followed by '%' or '(' at {:?}; write '%%' for a literal '%'",
                    truncate(&rest[percent..])
                ));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn truncate(text: &str) -> &str {
    text.char_indices().nth(20).map_or(text, |(end, _)| &text[..end])
}

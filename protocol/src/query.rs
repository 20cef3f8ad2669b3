//! Parsing of a listing's query string (kinto-protocol.md §4.1–4.8) the way Kinto 26.5 does it:
//! webob's query-string decoding, colander's typed parameters (`_limit`, `_since`, `id`, …),
//! the filter grammar, `_sort`, `_fields`, pagination tokens and the `Next-Page` URL.
//!
//! Kinto reads raw values with Python semantics — JSON parsing with a raw-string fallback,
//! Python's `int()`, Python `repr` inside messages — and these semantics show on the wire (in
//! which values are accepted and in error descriptions), so the helpers below reproduce them.
//! Evaluation of the parsed filters lives in [`crate::filter`].

// `ApiError` is the crate's error type (the brief's API returns it by value); boxing it here alone
// would not make it smaller anywhere else.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{ApiError, Errno, Invalid, Location};
use crate::filter::{py_float_repr, resolve_field, truthy, Filter, Op, DELETED_FIELD, ID_FIELD, MODIFIED_FIELD};

/// Kinto's message for a query string that is not UTF-8 once decoded, followed by the raw
/// query string (the missing space in "wasreceived" is Kinto's).
pub const ENCODING_ERROR_MESSAGE: &str =
    "A request with an incorrect encoding in the querystring wasreceived. Please make sure your requests are encoded in UTF-8: ";
/// `Alert` message sent when `_to` is used (§10.1, code `soft-eol`).
pub const TO_DEPRECATION_MESSAGE: &str = "_to is now deprecated, you should use _before instead";
/// `Alert` URL sent when `_to` is used.
pub const TO_DEPRECATION_URL: &str =
    "https://kinto.readthedocs.io/en/2.4.0/api/resource.html#list-of-available-url-parameters";

/// Upper bound of typed integer parameters (colander `Range(0, 2**63)`, PostgreSQL's bigint).
const MAX_INTEGER: u64 = 1 << 63;
/// Timestamps given in filters may be at most one day in the future.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Decodes a raw query string (the part after `?`) into name/value pairs, in order, like webob:
/// `+` is a space, both `&` and `;` separate pairs, empty pairs are skipped, a pair without `=`
/// has an empty value, and undecodable `%` sequences stay literal.
///
/// Names and values must be UTF-8 once decoded, else Kinto's 400 (errno 107, `error` "Bad
/// Request", no details) whose message ends with the raw query string.
pub fn parse_pairs(raw_query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let bytes: Vec<u8> = raw_query.bytes().map(|b| if b == b'+' { b' ' } else { b }).collect();
    let decode = |raw: &[u8]| String::from_utf8(unquote(raw)).map_err(|_| encoding_error(raw_query));
    let mut pairs = Vec::new();
    for chunk in bytes.split(|b| *b == b'&').flat_map(|part| part.split(|b| *b == b';')) {
        if chunk.is_empty() {
            continue;
        }
        let (name, value) = match chunk.iter().position(|b| *b == b'=') {
            Some(i) => (&chunk[..i], &chunk[i + 1..]),
            None => (chunk, &chunk[chunk.len()..]),
        };
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

fn encoding_error(raw_query: &str) -> ApiError {
    ApiError::new(400, Errno::InvalidParameters, Some(format!("{ENCODING_ERROR_MESSAGE}{raw_query}")))
}

/// webob's `unquote`: each `%` takes the next two bytes as Python's `int(x, 16)` reads them (so
/// `%+2`, whose `+` became a space, is byte 2); what does not parse stays literal.
fn unquote(raw: &[u8]) -> Vec<u8> {
    let mut parts = raw.split(|b| *b == b'%');
    let mut out = parts.next().unwrap_or_default().to_vec();
    for item in parts {
        let head = &item[..item.len().min(2)];
        match py_hex_byte(head) {
            Some(byte) => {
                out.push(byte);
                out.extend_from_slice(&item[head.len()..]);
            }
            None => {
                out.push(b'%');
                out.extend_from_slice(item);
            }
        }
    }
    out
}

/// Python's `bytes([int(chunk, 16)])`: surrounding whitespace and a sign are allowed.
fn py_hex_byte(chunk: &[u8]) -> Option<u8> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let start = chunk.iter().position(|b| !is_space(b)).unwrap_or(chunk.len());
    let end = chunk.iter().rposition(|b| !is_space(b)).map_or(start, |i| i + 1);
    let trimmed = &chunk[start..end];
    let (negative, digits) = match trimmed.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let value = u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
    // `bytes([-n])` raises for any n but 0.
    (!negative || value == 0).then_some(value)
}

/// A parsed listing query string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListQuery {
    /// ANDed; `_since`/`_before`/`_to` become `last_modified` `Gt`/`Lt` filters holding integers.
    pub filters: Vec<Filter>,
    /// `_sort` plus a trailing `-last_modified` unless the literal item `last_modified` was given.
    pub sort: Vec<SortKey>,
    /// `_limit` as given; `None` when absent, empty, `0` or null.
    pub limit: Option<u64>,
    /// `_limit` was present (even empty or `0`): Kinto then ignores `paginate_by` unless the
    /// limit is non-zero (§4.6 quirk). See [`ListQuery::effective_limit`].
    pub limit_given: bool,
    pub token: Option<Token>,
    /// `_fields`; `None` when absent or empty. The caller ignores it for non-GET requests.
    pub fields: Option<Vec<String>>,
    /// Some filter targets `last_modified` (incl. `_since`/`_before`/`_to`): include tombstones.
    pub with_tombstones: bool,
    /// `_to` was used: the response carries an `Alert` ([`TO_DEPRECATION_MESSAGE`]).
    pub deprecated_to: bool,
}

impl ListQuery {
    /// The page size of §4.6: `_limit` capped by `paginate_by`, else `paginate_by`, always capped
    /// by `storage_max_fetch_size`. A present but zero/empty `_limit` bypasses `paginate_by`.
    pub fn effective_limit(&self, paginate_by: Option<u64>, max_fetch_size: u64) -> u64 {
        let paginate_by = paginate_by.filter(|p| *p > 0);
        let requested = if self.limit_given { self.limit } else { paginate_by };
        let limit = match (requested, paginate_by) {
            (Some(l), Some(p)) => Some(l.min(p)),
            (l, _) => l,
        };
        limit.map_or(max_fetch_size, |l| l.min(max_fetch_size))
    }
}

/// One `_sort` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Possibly dotted.
    pub field: String,
    pub descending: bool,
}

impl SortKey {
    pub fn new(field: impl Into<String>, descending: bool) -> Self {
        SortKey { field: field.into(), descending }
    }
}

/// A raw parameter value; a repeated name becomes a list (webob's `MultiDict.mixed()`).
#[derive(Debug, Clone)]
enum Raw {
    One(String),
    Many(Vec<String>),
}

/// Groups repeated names in the position of their first occurrence.
fn group(pairs: &[(String, String)]) -> Vec<(String, Raw)> {
    let mut out: Vec<(String, Raw)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (name, value) in pairs {
        if let Some(&i) = index.get(name.as_str()) {
            let slot = &mut out[i].1;
            match slot {
                Raw::One(first) => {
                    let first = std::mem::take(first);
                    *slot = Raw::Many(vec![first, value.clone()]);
                }
                Raw::Many(list) => list.push(value.clone()),
            }
        } else {
            index.insert(name, out.len());
            out.push((name.clone(), Raw::One(value.clone())));
        }
    }
    out
}

/// Kinto's `native_value`: the JSON value if the string parses, else the string itself. (Kinto
/// parses with rapidjson in native-number mode, which serde_json matches: integers beyond 64
/// bits become floats, `NaN` and out-of-range numbers stay strings.)
pub fn native_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

fn native(raw: &Raw) -> Value {
    match raw {
        Raw::One(s) => native_value(s),
        Raw::Many(list) => Value::Array(list.iter().cloned().map(Value::String).collect()),
    }
}

/// colander `QueryField` (26.5): JSON-parsed, except that booleans stay the raw string so that
/// integer fields reject `?_since=true`.
fn query_field_native(raw: &Raw) -> Value {
    match (raw, native(raw)) {
        (Raw::One(s), Value::Bool(_)) => Value::String(s.clone()),
        (_, value) => value,
    }
}

/// colander `FieldList`: comma-split (a repeated name is not split), empty items dropped.
fn field_list(raw: &Raw) -> Vec<String> {
    let items: Vec<&str> = match raw {
        Raw::One(s) => s.split(',').collect(),
        Raw::Many(list) => list.iter().map(String::as_str).collect(),
    };
    items.into_iter().filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `_fields` of an object GET: Kinto reads nothing else from an object's query string.
pub fn object_fields(pairs: &[(String, String)]) -> Option<Vec<String>> {
    let params = group(pairs);
    let fields = params.iter().find(|(name, _)| name == "_fields").map(|(_, raw)| field_list(raw))?;
    (!fields.is_empty()).then_some(fields)
}

/// A typed integer parameter (colander `Integer` + `Range(0, 2**63)`). `Ok(None)`: a falsy value
/// (empty, null, `[]`, `{}`) that colander drops.
fn colander_integer(raw: &Raw) -> Result<Option<u64>, String> {
    let cstruct = query_field_native(raw);
    // colander: `if cstruct != 0 and not cstruct: return null`.
    if !truthy(&cstruct) && !cstruct.is_number() {
        return Ok(None);
    }
    let int = py_int(&cstruct).ok_or_else(|| format!("\"{}\" is not a number", py_str(&cstruct)))?;
    if int.negative {
        return Err(format!("{int} is less than minimum value 0"));
    }
    match int.magnitude.parse::<u64>() {
        Ok(v) if v <= MAX_INTEGER => Ok(Some(v)),
        _ => Err(format!("{int} is greater than maximum value {MAX_INTEGER}")),
    }
}

/// A typed string parameter (colander `String`). `Ok(None)`: a falsy value colander drops.
fn colander_string(name: &str, raw: &Raw) -> Result<Option<String>, String> {
    match query_field_native(raw) {
        value if !truthy(&value) => Ok(None),
        Value::String(s) => Ok(Some(s)),
        // colander renders the inner `Invalid(node)` as `{'<name>': ''}`.
        other => Err(format!("{} is not a string: {{{}: ''}}", py_str(&other), py_repr_str(name))),
    }
}

/// The value Kinto's `QuerySchema` gives a non-typed parameter, chosen by the raw name's prefix.
fn filter_value(name: &str, raw: &Raw) -> Value {
    if name.starts_with("contains_") {
        match native(raw) {
            Value::Array(items) => Value::Array(items),
            other => Value::Array(vec![other]),
        }
    } else if name.starts_with("in_") || name.starts_with("exclude_") {
        // Split on commas first, then parse each piece: commas cannot be escaped.
        Value::Array(field_list(raw).iter().map(|s| native_value(s)).collect())
    } else {
        native(raw)
    }
}

/// Parses a listing's parameters (from [`parse_pairs`]) and validates them in Kinto's order:
/// typed parameters (all their errors reported at once), then filters, `_sort`, `_fields` and
/// `_token`.
///
/// `strict_fields`: `Some(names)` for resources with a closed schema (history, permissions):
/// filters, sorts and `_fields` on other top-level names are rejected (`id`, `last_modified`
/// and `deleted` are always known). `None` for open-schema resources.
pub fn parse_list_query(
    pairs: &[(String, String)],
    now_ms: u64,
    strict_fields: Option<&[&str]>,
) -> Result<ListQuery, ApiError> {
    let params = group(pairs);

    // Typed parameters, validated by the colander schema before anything else.
    let mut typed: HashMap<&str, Value> = HashMap::new();
    let mut errors = Vec::new();
    for (name, raw) in &params {
        let outcome = match name.as_str() {
            "_limit" | "_since" | "_to" | "_before" | "last_modified" => {
                colander_integer(raw).map(|v| v.map(Value::from))
            }
            "id" | "_token" => colander_string(name, raw).map(|v| v.map(Value::String)),
            _ => continue,
        };
        match outcome {
            Ok(Some(value)) => {
                typed.insert(name.as_str(), value);
            }
            Ok(None) => {}
            Err(description) => errors.push(Invalid::new(Location::Querystring, Some(name), description)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }

    let mut query = ListQuery::default();
    for (name, raw) in &params {
        let param = py_strip(name);
        if param.starts_with('_') && !matches!(param, "_since" | "_to" | "_before") {
            continue;
        }
        // A typed parameter dropped as falsy keeps its plain parsed value, as in Kinto.
        let value = typed.get(name.as_str()).cloned().unwrap_or_else(|| filter_value(name, raw));
        if let Some(filter) = parse_filter(param, value, now_ms, strict_fields, &mut query.deprecated_to)? {
            query.filters.push(filter);
        }
    }
    query.with_tombstones = query.filters.iter().any(|f| f.field == MODIFIED_FIELD);

    let param = |wanted: &str| params.iter().find(|(name, _)| name == wanted).map(|(_, raw)| raw);

    if param("_limit").is_some() {
        query.limit_given = true;
        query.limit = typed.get("_limit").and_then(Value::as_u64).filter(|l| *l > 0);
    }

    let items = param("_sort").map(field_list).unwrap_or_default();
    // Kinto looks for the untrimmed item: `-last_modified` still gets the tie-breaker appended.
    let explicit_modified = items.iter().any(|item| item == MODIFIED_FIELD);
    for item in &items {
        let item = py_strip(item);
        let (descending, field) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item.strip_prefix('+').unwrap_or(item)),
        };
        if field.is_empty() || !field.chars().all(is_word_or_dot) {
            continue; // silently ignored, like `a.b-c`
        }
        if !is_known_field(field, strict_fields) {
            return Err(ApiError::invalid_one(Location::Querystring, None, format!("Unknown sort field '{field}'")));
        }
        query.sort.push(SortKey::new(field, descending));
    }
    if !explicit_modified {
        query.sort.push(SortKey::new(MODIFIED_FIELD, true));
    }

    let fields = param("_fields").map(field_list).unwrap_or_default();
    if !fields.is_empty() {
        if strict_fields.is_some() {
            let mut unknown: Vec<&str> = Vec::new();
            for root in fields.iter().map(|f| f.split('.').next().unwrap_or(f)) {
                if !is_known_field(root, strict_fields) && !unknown.contains(&root) {
                    unknown.push(root);
                }
            }
            if !unknown.is_empty() {
                // Kinto's quirk: location `body`, the name is a sentence.
                return Err(ApiError::invalid_one(
                    Location::Body,
                    Some("Invalid _fields parameter"),
                    format!("Fields {} do not exist", unknown.join(",")),
                ));
            }
        }
        query.fields = Some(fields);
    }

    if let Some(Value::String(token)) = typed.get("_token") {
        query.token = Some(Token::decode_at(token, &query.sort, now_ms)?);
    }
    Ok(query)
}

/// One filter parameter (`param` already trimmed) as Kinto's `_extract_filters` validates it.
/// `None` for `_since=null` (and `_before`/`_to`), treated as absent (kinto-protocol.md §4.1 REC).
fn parse_filter(
    param: &str,
    value: Value,
    now_ms: u64,
    strict_fields: Option<&[&str]>,
    deprecated_to: &mut bool,
) -> Result<Option<Filter>, ApiError> {
    let invalid = |description: String| ApiError::invalid_one(Location::Querystring, Some(param), description);
    let invalid_value = || invalid(format!("Invalid value for {param}"));

    let alias = match param {
        "_since" => Some(Op::Gt),
        "_to" | "_before" => Some(Op::Lt),
        _ => None,
    };
    if let Some(op) = alias {
        *deprecated_to |= param == "_to";
        if value.is_null() {
            return Ok(None);
        }
        let ts = valid_timestamp(&value, now_ms).ok_or_else(invalid_value)?;
        return Ok(Some(Filter::new(MODIFIED_FIELD, op, Value::from(ts))));
    }

    let (op, field) = parse_filter_name(param);
    if !is_known_field(field, strict_fields) {
        return Err(invalid(format!("Unknown filter field '{param}'")));
    }
    if op == Op::Like && !value.is_string() {
        return Err(invalid_value());
    }
    let value = match value {
        // Only reachable through odd names such as ` in_x` (prefix test on the untrimmed name).
        scalar if op.takes_list() && !scalar.is_array() => Value::Array(vec![scalar]),
        other => other,
    };
    if matches!(op, Op::In | Op::Exclude) {
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        // Python's `isinstance(v, int)` also accepts booleans.
        let all_integers = items.iter().all(|v| v.is_i64() || v.is_u64() || v.is_boolean());
        let all_strings = items.iter().all(Value::is_string);
        if (field == ID_FIELD && !all_strings) || (field == MODIFIED_FIELD && !all_integers) {
            return Err(invalid_value());
        }
    }
    if field.contains('\0') || has_nul(&value) {
        return Err(invalid("Invalid character 0x00".to_owned()));
    }
    let value = if field == MODIFIED_FIELD {
        // Lists never are valid timestamps: `in_last_modified` is always rejected, as in Kinto.
        Value::from(valid_timestamp(&value, now_ms).ok_or_else(invalid_value)?)
    } else {
        value
    };
    if (field == ID_FIELD || field == MODIFIED_FIELD) && matches!(op, Op::Contains | Op::ContainsAny) {
        return Err(invalid(format!("Field '{field}' is not an array")));
    }
    Ok(Some(Filter::new(field, op, value)))
}

/// Splits a filter name into operator and field: `^(lt|min|…|contains_any|contains)_([\w.]+)$`
/// tried in that order, else `Eq` on the whole name (`in_stock` is `In` on `stock`; `foo-bar`
/// is `Eq` on `foo-bar`).
pub fn parse_filter_name(param: &str) -> (Op, &str) {
    for (prefix, op) in Op::PREFIXES {
        if let Some(field) = param.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')) {
            if !field.is_empty() && field.chars().all(is_word_or_dot) {
                return (op, field);
            }
        }
    }
    (Op::Eq, param)
}

/// Python's `[\w.]` on text.
fn is_word_or_dot(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

fn is_known_field(field: &str, strict_fields: Option<&[&str]>) -> bool {
    let Some(known) = strict_fields else {
        return true;
    };
    // Only the first level is checked: `target.data.id` is `target`.
    let root = field.split('.').next().unwrap_or(field);
    [ID_FIELD, MODIFIED_FIELD, DELETED_FIELD].contains(&root) || known.contains(&root)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Kinto's `is_valid_timestamp`: an integer (not a boolean), a digit string or a quoted digit
/// string, with `0 <= v < now + 24h`; floats are truncated like Python's `int()`. Returns the
/// timestamp.
pub fn valid_timestamp(value: &Value, now_ms: u64) -> Option<u64> {
    let limit = now_ms.saturating_add(DAY_MS);
    let ts = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u,
            (None, Some(_), _) => return None, // negative
            (None, None, Some(f)) => {
                let t = f.trunc();
                if !(0.0..limit as f64).contains(&t) {
                    return None;
                }
                t as u64
            }
            _ => return None,
        },
        Value::String(s) => {
            let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            // Python's `$` also matches before a final newline, which `int()` then ignores.
            let (body, newline) = match s.strip_suffix('\n') {
                Some(body) => (body, true),
                None => (s.as_str(), false),
            };
            let digits = if is_digits(body) {
                body
            } else {
                match body.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
                    // `'"1"\n'.strip('"')` keeps a quote, which `int()` rejects.
                    Some(inner) if is_digits(inner) && !newline => inner,
                    _ => return None,
                }
            };
            // Too many digits to parse is beyond any acceptable timestamp anyway.
            digits.parse::<u64>().ok()?
        }
        _ => return None,
    };
    (ts < limit).then_some(ts)
}

/// A continuation token (§4.7).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The sort fields' values of the last returned object, keyed by (possibly dotted) field.
    pub last_object: Map<String, Value>,
    /// Informational: cumulative count of fetched rows.
    pub offset: u64,
    /// `pagination-token-<uuid4>`; single-use for plural DELETE (checked by the caller).
    pub nonce: String,
    /// Tidemark's extension: the log position the first page was read at, so that later pages
    /// show the list as it was then. `None` for Kinto's tokens, which stay unpinned.
    pub pin: Option<Pin>,
}

/// Where a paginated listing is pinned: extra token keys `"seq"` and `"list_ts"`, which Kinto
/// ignores (it only reads `last_object`, `offset` and `nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The engine seq (last committed event) the first page was read at.
    pub seq: u64,
    /// The list timestamp read no later than `seq`: every object changed after the pin has a
    /// newer timestamp or a seq above `seq`.
    pub list_ts: u64,
}

impl Token {
    /// Standard padded base64 of the compact JSON `{"last_object":…,"offset":…,"nonce":…}`,
    /// byte-identical to Kinto's (rapidjson: non-ASCII as upper-case `\uXXXX`, Python floats).
    pub fn encode(&self) -> String {
        let mut json = String::from("{\"last_object\":");
        write_json_object(&self.last_object, &mut json);
        json.push_str(&format!(",\"offset\":{},\"nonce\":", self.offset));
        write_json_string(&self.nonce, &mut json);
        if let Some(pin) = self.pin {
            json.push_str(&format!(",\"seq\":{},\"list_ts\":{}", pin.seq, pin.list_ts));
        }
        json.push('}');
        base64_encode(json.as_bytes())
    }

    /// [`Token::decode_at`] with the system clock.
    pub fn decode(s: &str, sort: &[SortKey]) -> Result<Token, ApiError> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Token::decode_at(s, sort, now_ms)
    }

    /// Decodes and validates a `_token` against the request's sort (Kinto 26.5): an object with
    /// `last_object` (object), `offset` (integer ≥ 0) and `nonce`; for each sort field present
    /// in `last_object`, `last_modified` must be a valid timestamp (and must be present when
    /// sorted on) and other values must be scalars. `last_modified` comes back as
    /// an integer. Tidemark's optional pin keys (`seq`, `list_ts`) must come together, as
    /// non-negative integers. Failure: 400 `querystring: _token has invalid content`.
    pub fn decode_at(s: &str, sort: &[SortKey], now_ms: u64) -> Result<Token, ApiError> {
        Token::try_decode(s, sort, now_ms)
            .ok_or_else(|| ApiError::invalid_one(Location::Querystring, None, "_token has invalid content"))
    }

    fn try_decode(s: &str, sort: &[SortKey], now_ms: u64) -> Option<Token> {
        let text = String::from_utf8(base64_decode_lenient(s)?).ok()?;
        let Value::Object(info) = serde_json::from_str::<Value>(&text).ok()? else {
            return None;
        };
        let Some(Value::Object(mut last_object)) = info.get("last_object").cloned() else {
            return None;
        };
        // Booleans, floats and negatives are rejected (`as_u64` only takes JSON integers).
        let offset = info.get("offset")?.as_u64()?;
        let nonce = match info.get("nonce")? {
            Value::String(nonce) => nonce.clone(),
            other => other.to_string(),
        };
        for key in sort {
            match last_object.get(&key.field) {
                None if key.field == MODIFIED_FIELD => return None,
                None => {}
                Some(value) if key.field == MODIFIED_FIELD => {
                    let ts = valid_timestamp(value, now_ms)?;
                    last_object.insert(key.field.clone(), Value::from(ts));
                }
                // NUL is allowed (Kinto refuses it, for PostgreSQL's sake): a page ending on a value
                // with one must lead to the next page.
                Some(value) if value.is_array() || value.is_object() => return None,
                Some(_) => {}
            }
        }
        // Both pin keys or neither: a half pin cannot be honoured, and only we write them.
        let pin = match (info.get("seq"), info.get("list_ts")) {
            (None, None) => None,
            (Some(seq), Some(list_ts)) => Some(Pin { seq: seq.as_u64()?, list_ts: list_ts.as_u64()? }),
            _ => return None,
        };
        Some(Token { last_object, offset, nonce, pin })
    }

    /// The token for a page ending with `obj`: one `last_object` entry per sort field the object
    /// has (dotted fields stored under the dotted key).
    pub fn for_last(obj: &Value, sort: &[SortKey], offset: u64, nonce: String) -> Token {
        let mut last_object = Map::new();
        for key in sort {
            if let Some(value) = resolve_field(obj, &key.field) {
                last_object.insert(key.field.clone(), value.clone());
            }
        }
        Token { last_object, offset, nonce, pin: None }
    }
}

/// The 400 for a plural-DELETE token whose nonce was already consumed or expired (§4.7).
pub fn token_already_used() -> ApiError {
    ApiError::invalid_one(Location::Querystring, None, "_token was already used or has expired.")
}

/// The `Next-Page` URL: `base` (absolute, without query) with the request's parameters — a
/// repeated name once, where it first appeared, with its last value — `_limit` and `_token` set
/// in place or appended, each name and value encoded like Python's `quote_plus`.
pub fn next_page_url(base: &str, pairs: &[(String, String)], limit: u64, token: &str) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let extra = [("_limit", limit.to_string()), ("_token", token.to_owned())];
    let all = pairs.iter().map(|(n, v)| (n.as_str(), v.clone())).chain(extra);
    for (name, value) in all {
        match index.get(name) {
            Some(&i) => params[i].1 = value,
            None => {
                index.insert(name, params.len());
                params.push((name, value));
            }
        }
    }
    let query: Vec<String> = params.iter().map(|(n, v)| format!("{}={}", quote_plus(n), quote_plus(v))).collect();
    format!("{base}?{}", query.join("&"))
}

/// Python's `urllib.parse.quote_plus(s, safe='')` on UTF-8.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64_ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Python's non-strict `b64decode`: characters outside the alphabet are skipped, `=` ends the
/// data once it completes a quantum, and a truncated quantum is an error.
fn base64_decode_lenient(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut quad, mut pads, mut left) = (0u32, 0u32, 0u32);
    for byte in text.bytes() {
        if byte == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let Some(v) = BASE64_ALPHABET.iter().position(|c| *c == byte) else {
            continue;
        };
        let v = v as u32;
        pads = 0;
        match quad {
            0 => left = v,
            1 => {
                out.push(((left << 2) | (v >> 4)) as u8);
                left = v & 0x0f;
            }
            2 => {
                out.push(((left << 4) | (v >> 2)) as u8);
                left = v & 0x03;
            }
            _ => out.push(((left << 6) | v) as u8),
        }
        quad = (quad + 1) % 4;
    }
    (quad == 0).then_some(out)
}

/// rapidjson's compact output (what Kinto's tokens contain).
fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => out.push_str(&py_float_repr(n.as_f64().unwrap_or(0.0))),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_json_object(map, out),
    }
}

fn write_json_object(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(key, out);
        out.push(':');
        write_json(value, out);
    }
    out.push('}');
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `str.strip()` (Unicode whitespace, including the `\x1c`–`\x1f` separators).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A Python integer as text: sign and decimal magnitude without leading zeros.
struct PyInt {
    negative: bool,
    magnitude: String,
}

impl std::fmt::Display for PyInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", if self.negative { "-" } else { "" }, self.magnitude)
    }
}

/// Python's `int(value)`; `None` where it raises.
fn py_int(value: &Value) -> Option<PyInt> {
    match value {
        Value::String(s) => py_int_from_str(s),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(PyInt { negative: false, magnitude: u.to_string() })
            } else if let Some(i) = n.as_i64() {
                Some(PyInt { negative: i < 0, magnitude: i.unsigned_abs().to_string() })
            } else {
                let t = n.as_f64()?.trunc();
                let magnitude = integral_float_decimal(t.abs());
                Some(PyInt { negative: t < 0.0, magnitude })
            }
        }
        _ => None,
    }
}

/// `int("  +0_12 ")` is 12: whitespace, a sign and single underscores between digits.
fn py_int_from_str(s: &str) -> Option<PyInt> {
    let s = py_strip(s);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let well_formed = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !body.starts_with('_')
        && !body.ends_with('_')
        && !body.contains("__");
    if !well_formed {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0');
    let magnitude = if trimmed.is_empty() { "0" } else { trimmed }.to_owned();
    Some(PyInt { negative: negative && magnitude != "0", magnitude })
}

/// Exact decimal expansion of a non-negative integral float (`int(1e30)` is
/// 1000000000000000019884624838656).
fn integral_float_decimal(value: f64) -> String {
    if value < 18_446_744_073_709_551_616.0 {
        return (value as u64).to_string();
    }
    let bits = value.to_bits();
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let shift = ((bits >> 52) & 0x7ff) as i64 - 1075; // value = mantissa * 2^shift, shift > 0
    const BASE: u32 = 1_000_000_000;
    let mut limbs: Vec<u32> = vec![(mantissa % 1_000_000_000) as u32, (mantissa / 1_000_000_000) as u32];
    for _ in 0..shift {
        let mut carry = 0;
        for limb in &mut limbs {
            let doubled = *limb * 2 + carry;
            *limb = doubled % BASE;
            carry = doubled / BASE;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut out = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&limb.to_string());
        } else {
            out.push_str(&format!("{limb:09}"));
        }
    }
    out
}

/// Python's `str(value)`: strings as they are, everything else as `repr`.
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr` of the value Kinto parsed (`None`, `True`, `[1, 'a']`, `{'a': 1}`, `1e+30`).
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Value::Number(n) if n.is_f64() => py_float_repr(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v))).collect();
            format!("{{{}}}", pairs.join(", "))
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has some and no double quotes.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::filter::{compare_objects, is_after_token, project};
    use serde_json::json;

    /// 2026-11-29T04:18:30Z, around when the reference values below were taken from Kinto 26.5.
    const NOW: u64 = 1_795_925_910_000;
    const BASE: &str = "http://localhost:8888/v1/buckets/b/collections/c/records";

    fn pairs(raw: &str) -> Vec<(String, String)> {
        parse_pairs(raw).unwrap()
    }

    fn parse(raw: &str) -> Result<ListQuery, ApiError> {
        parse_list_query(&pairs(raw), NOW, None)
    }

    fn parse_strict(raw: &str) -> Result<ListQuery, ApiError> {
        parse_list_query(&pairs(raw), NOW, Some(&["uri", "action", "target"]))
    }

    fn message(raw: &str) -> String {
        parse(raw).unwrap_err().message.unwrap()
    }

    fn only_filter(raw: &str) -> Filter {
        let q = parse(raw).unwrap();
        assert_eq!(q.filters.len(), 1, "{raw}");
        q.filters[0].clone()
    }

    // --- query-string decoding -------------------------------------------------------------

    #[test]
    fn pairs_decode_plus_as_space_and_split_on_ampersand_and_semicolon() {
        assert_eq!(
            pairs("a=1+2&b=%C3%A9;c&&d=x=y"),
            [("a", "1 2"), ("b", "é"), ("c", ""), ("d", "x=y")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(pairs("a=%2B"), [("a".to_owned(), "+".to_owned())]);
    }

    #[test]
    fn pairs_keep_undecodable_percent_sequences_literally() {
        assert_eq!(pairs("_limit=%ZZ")[0].1, "%ZZ");
        assert_eq!(pairs("a=%")[0].1, "%");
        assert_eq!(pairs("a=%2")[0].1, "\u{2}", "a single hex digit is read, as webob does");
        assert_eq!(pairs("a=%+2")[0].1, "\u{2}", "int(' 2', 16) tolerates the space");
    }

    #[test]
    fn pairs_with_invalid_utf8_are_rejected_with_kintos_message() {
        let err = parse_pairs("a=%FF&b=1").unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.errno, Errno::InvalidParameters);
        assert_eq!(
            err.message.as_deref(),
            Some("A request with an incorrect encoding in the querystring wasreceived. Please make sure your requests are encoded in UTF-8: a=%FF&b=1")
        );
        assert!(err.details.is_none());
        assert!(parse_pairs("%C3=1").is_err(), "names too");
    }

    // --- value parsing (§4.3) ----------------------------------------------------------------

    #[test]
    fn values_are_json_when_they_parse_else_raw_strings() {
        assert_eq!(only_filter("age=24").value, json!(24));
        assert_eq!(only_filter("age=10.0").value, json!(10.0));
        assert_eq!(only_filter("flag=true").value, json!(true));
        assert_eq!(only_filter("v=null").value, json!(null));
        assert_eq!(only_filter("author=%222.0%22").value, json!("2.0"));
        assert_eq!(only_filter("v=[1,2]").value, json!([1, 2]));
        assert_eq!(only_filter("v=%7B%22a%22:1%7D").value, json!({"a": 1}));
        assert_eq!(only_filter("name=Ben").value, json!("Ben"));
        assert_eq!(only_filter("v=[1,2").value, json!("[1,2"));
        assert_eq!(only_filter("v=NaN").value, json!("NaN"));
    }

    #[test]
    fn in_and_exclude_split_on_commas_before_parsing() {
        assert_eq!(only_filter("in_age=10,20").value, json!([10, 20]));
        assert_eq!(only_filter("in_name=%22a,b%22").value, json!(["\"a", "b\""]));
        assert_eq!(only_filter("exclude_age=10,,20").value, json!([10, 20]), "empty pieces dropped");
        assert_eq!(only_filter("in_age=").value, json!([]));
    }

    #[test]
    fn contains_wraps_non_arrays() {
        assert_eq!(only_filter("contains_tags=b").value, json!(["b"]));
        assert_eq!(only_filter("contains_tags=[%22a%22,%22b%22]").value, json!(["a", "b"]));
        assert_eq!(only_filter("contains_any_tags=3,4").value, json!(["3,4"]));
        assert_eq!(only_filter("contains_any_o=%7B%22id%22:1%7D").value, json!([{"id": 1}]));
    }

    #[test]
    fn repeated_names_become_a_list_of_raw_strings() {
        assert_eq!(only_filter("a=1&a=2").value, json!(["1", "2"]));
        assert_eq!(only_filter("in_a=1&in_a=2").value, json!([1, 2]));
        assert_eq!(message("_limit=2&_limit=3"), "_limit in querystring: \"['2', '3']\" is not a number");
    }

    // --- filter names (§4.2) -----------------------------------------------------------------

    #[test]
    fn filter_names_pick_the_first_matching_operator() {
        assert_eq!(parse_filter_name("in_stock"), (Op::In, "stock"));
        assert_eq!(parse_filter_name("eq_in_stock"), (Op::Eq, "in_stock"));
        assert_eq!(parse_filter_name("contains_any_tags"), (Op::ContainsAny, "tags"));
        assert_eq!(parse_filter_name("contains_any"), (Op::Contains, "any"));
        assert_eq!(parse_filter_name("has_children"), (Op::Has, "children"));
        assert_eq!(parse_filter_name("min_person.age"), (Op::Min, "person.age"));
        assert_eq!(parse_filter_name("foo-bar"), (Op::Eq, "foo-bar"));
        assert_eq!(parse_filter_name("lt_a-b"), (Op::Eq, "lt_a-b"));
        assert_eq!(parse_filter_name("index"), (Op::Eq, "index"));
    }

    #[test]
    fn filter_names_are_trimmed_and_underscore_params_ignored() {
        let q = parse("%20age%20=1&_unknown=1&_x").unwrap();
        assert_eq!(q.filters, [Filter::new("age", Op::Eq, json!(1))]);
        assert!(!q.with_tombstones);
    }

    // --- validation (§4.1, §4.3) ---------------------------------------------------------------

    #[test]
    fn like_needs_a_string_value() {
        assert_eq!(message("like_age=1"), "Invalid value for like_age");
        let err = parse("like_age=1").unwrap_err();
        assert_eq!(
            err.details,
            Some(json!([{"location": "querystring", "name": "like_age", "description": "Invalid value for like_age"}]))
        );
        assert_eq!(only_filter("like_age=%221%22").value, json!("1"));
        assert_eq!(only_filter("like_name=ali").op, Op::Like);
    }

    #[test]
    fn unknown_filter_field_only_rejected_on_strict_resources() {
        assert_eq!(only_filter("unknown=1"), Filter::new("unknown", Op::Eq, json!(1)));
        let err = parse_strict("unknown=1").unwrap_err();
        assert_eq!(err.message.as_deref(), Some("Unknown filter field 'unknown'"));
        assert!(parse_strict("target.data.id=x&uri=y&gt_last_modified=1&id=a").is_ok());
        assert_eq!(
            parse_strict("lt_bogus.x=1").unwrap_err().message.as_deref(),
            Some("Unknown filter field 'lt_bogus.x'")
        );
    }

    #[test]
    fn nested_filters_keep_the_dotted_field() {
        assert_eq!(only_filter("nested.x=2"), Filter::new("nested.x", Op::Eq, json!(2)));
    }

    #[test]
    fn in_id_needs_strings_and_in_last_modified_is_always_rejected() {
        assert_eq!(message("in_id=1,2"), "Invalid value for in_id");
        assert_eq!(only_filter("in_id=a,b").value, json!(["a", "b"]));
        assert_eq!(message("exclude_id=a,1"), "Invalid value for exclude_id");
        assert_eq!(message("in_last_modified=1,2"), "Invalid value for in_last_modified");
    }

    #[test]
    fn nul_characters_are_rejected() {
        assert_eq!(message("q=%00"), "q in querystring: Invalid character 0x00");
        assert_eq!(message("q=[%22x%00%22]"), "q in querystring: Invalid character 0x00");
        assert_eq!(message("%00a=1"), "\u{0}a in querystring: Invalid character 0x00");
        // The name is a substring of the description: Kinto then uses the description alone.
        assert_eq!(message("a=%00"), "Invalid character 0x00");
        assert_eq!(message("id=%00"), "Invalid character 0x00");
    }

    #[test]
    fn contains_on_id_is_not_an_array_and_on_last_modified_an_invalid_value() {
        assert_eq!(message("contains_id=a"), "contains_id in querystring: Field 'id' is not an array");
        assert_eq!(message("contains_any_id=a"), "contains_any_id in querystring: Field 'id' is not an array");
        assert_eq!(message("contains_last_modified=1"), "Invalid value for contains_last_modified");
    }

    #[test]
    fn last_modified_filters_need_valid_timestamps_and_hold_integers() {
        assert_eq!(message("last_modified=abc"), "last_modified in querystring: \"abc\" is not a number");
        assert_eq!(message("gt_last_modified=abc"), "Invalid value for gt_last_modified");
        assert_eq!(message("gt_last_modified=-1"), "Invalid value for gt_last_modified");
        assert_eq!(message(&format!("lt_last_modified={}", NOW + 2 * DAY_MS)), "Invalid value for lt_last_modified");
        assert_eq!(message("last_modified="), "Invalid value for last_modified");
        let q = parse("gt_last_modified=%22123%22&last_modified=5").unwrap();
        assert_eq!(
            q.filters,
            [Filter::new("last_modified", Op::Gt, json!(123)), Filter::new("last_modified", Op::Eq, json!(5))]
        );
        assert!(q.with_tombstones, "filters on last_modified include tombstones");
    }

    #[test]
    fn id_filter_must_be_a_string() {
        assert_eq!(message("id=1"), "1 is not a string: {'id': ''}");
        assert_eq!(message("id=1e30"), "1e+30 is not a string: {'id': ''}");
        assert_eq!(message("id=1.0"), "1.0 is not a string: {'id': ''}");
        assert_eq!(message("id=[1,%22a%22]"), "[1, 'a'] is not a string: {'id': ''}");
        assert_eq!(message("id=%7B%22a%22:%22b'c%22%7D"), "{'a': \"b'c\"} is not a string: {'id': ''}");
        // Correctly rounded, as Python's float() (serde_json's float_roundtrip, which jsonschema
        // turns on); Kinto's rapidjson answers 1.2345678901234567e+23.
        assert_eq!(message("id=123456789012345678901234"), "1.2345678901234569e+23 is not a string: {'id': ''}");
        assert_eq!(only_filter("id=true").value, json!("true"), "booleans stay raw strings");
        assert_eq!(only_filter("id=0").value, json!(0), "falsy values pass unvalidated");
        assert_eq!(only_filter("not_id=1").value, json!(1));
    }

    // --- _since / _before / _to --------------------------------------------------------------

    #[test]
    fn since_must_be_a_number() {
        assert_eq!(message("_since=abc"), "_since in querystring: \"abc\" is not a number");
        assert_eq!(message("_since=true"), "_since in querystring: \"true\" is not a number");
        assert_eq!(message("_since=%22abc%22"), "_since in querystring: \"abc\" is not a number");
        assert_eq!(message("_since=[1,2]"), "_since in querystring: \"[1, 2]\" is not a number");
        assert_eq!(message("_since=-1"), "_since in querystring: -1 is less than minimum value 0");
    }

    #[test]
    fn since_accepts_integers_and_quoted_digits_up_to_a_day_ahead() {
        assert_eq!(parse("_since=123").unwrap().filters, [Filter::new("last_modified", Op::Gt, json!(123))]);
        assert_eq!(parse("_since=%22123%22").unwrap().filters[0].value, json!(123));
        assert_eq!(parse("_since=12.9").unwrap().filters[0].value, json!(12), "int() truncates");
        assert_eq!(message(&format!("_since={}", NOW + 2 * DAY_MS)), "Invalid value for _since");
        assert!(parse(&format!("_since={}", NOW + DAY_MS - 1)).is_ok());
        assert_eq!(message("_since="), "Invalid value for _since");
        assert_eq!(message("_since=[]"), "Invalid value for _since");
    }

    #[test]
    fn since_includes_tombstones_and_plain_listing_does_not() {
        assert!(parse("_since=1").unwrap().with_tombstones);
        assert!(!parse("").unwrap().with_tombstones);
    }

    #[test]
    fn since_null_is_treated_as_absent() {
        let q = parse("_since=null&_before=null").unwrap();
        assert!(q.filters.is_empty());
        assert!(!q.with_tombstones);
    }

    #[test]
    fn before_and_to_are_strictly_older_and_to_is_deprecated() {
        let q = parse("_before=100").unwrap();
        assert_eq!(q.filters, [Filter::new("last_modified", Op::Lt, json!(100))]);
        assert!(!q.deprecated_to);
        let q = parse("_to=100").unwrap();
        assert_eq!(q.filters, [Filter::new("last_modified", Op::Lt, json!(100))]);
        assert!(q.deprecated_to && q.with_tombstones);
    }

    #[test]
    fn typed_parameter_errors_are_reported_together_sorted_by_name() {
        let err = parse("_since=abc&_limit=abc").unwrap_err();
        assert_eq!(err.message.as_deref(), Some("_limit in querystring: \"abc\" is not a number"));
        assert_eq!(err.details.unwrap().as_array().unwrap().len(), 2);
    }

    // --- _limit ------------------------------------------------------------------------------

    #[test]
    fn limit_must_be_within_zero_and_two_to_the_63() {
        assert_eq!(message("_limit=-1"), "_limit in querystring: -1 is less than minimum value 0");
        assert_eq!(message("_limit=true"), "_limit in querystring: \"true\" is not a number");
        assert_eq!(
            message("_limit=1e30"),
            "_limit in querystring: 1000000000000000019884624838656 is greater than maximum value 9223372036854775808"
        );
        assert_eq!(
            message("_limit=99999999999999999999"),
            "_limit in querystring: 100000000000000000000 is greater than maximum value 9223372036854775808"
        );
        assert_eq!(
            message("_limit=9223372036854775809"),
            "_limit in querystring: 9223372036854775809 is greater than maximum value 9223372036854775808"
        );
        assert_eq!(message("_limit=1e400"), "_limit in querystring: \"1e400\" is not a number");
        assert_eq!(message("_limit=%7B%22a%22:1%7D"), "_limit in querystring: \"{'a': 1}\" is not a number");
        assert_eq!(parse("_limit=9223372036854775808").unwrap().limit, Some(1 << 63));
    }

    #[test]
    fn limit_follows_python_int() {
        assert_eq!(parse("_limit=1.9").unwrap().limit, Some(1));
        assert_eq!(parse("_limit=%22%20%2B5%22").unwrap().limit, Some(5));
        assert_eq!(parse("_limit=%225_0%22").unwrap().limit, Some(50));
        assert_eq!(message("_limit=%225.0%22"), "_limit in querystring: \"5.0\" is not a number");
    }

    #[test]
    fn limit_zero_empty_or_null_is_none_but_given() {
        for raw in ["_limit=0", "_limit=", "_limit=null", "_limit=[]", "_limit=-0.5"] {
            let q = parse(raw).unwrap();
            assert_eq!((q.limit, q.limit_given), (None, true), "{raw}");
        }
        let q = parse("").unwrap();
        assert_eq!((q.limit, q.limit_given), (None, false));
    }

    #[test]
    fn effective_limit_caps_by_paginate_by_and_zero_bypasses_it() {
        let limit = |raw: &str, paginate_by| parse(raw).unwrap().effective_limit(paginate_by, 10_000);
        assert_eq!(limit("_limit=10", Some(3)), 3);
        assert_eq!(limit("_limit=2", Some(3)), 2);
        assert_eq!(limit("", Some(3)), 3);
        assert_eq!(limit("_limit=0", Some(3)), 10_000);
        assert_eq!(limit("_limit=", Some(3)), 10_000);
        assert_eq!(limit("", None), 10_000);
        assert_eq!(limit("_limit=20000", None), 10_000);
    }

    // --- _sort (§4.5) ------------------------------------------------------------------------

    fn sort_of(raw: &str) -> Vec<(String, bool)> {
        parse(raw).unwrap().sort.into_iter().map(|k| (k.field, k.descending)).collect()
    }

    fn keys(spec: &[(&str, bool)]) -> Vec<(String, bool)> {
        spec.iter().map(|(f, d)| ((*f).to_owned(), *d)).collect()
    }

    #[test]
    fn default_sort_is_newest_first() {
        assert_eq!(sort_of(""), keys(&[("last_modified", true)]));
        assert_eq!(sort_of("_sort="), keys(&[("last_modified", true)]));
    }

    #[test]
    fn sort_items_get_a_last_modified_tie_breaker() {
        assert_eq!(sort_of("_sort=n"), keys(&[("n", false), ("last_modified", true)]));
        assert_eq!(sort_of("_sort=-n,id"), keys(&[("n", true), ("id", false), ("last_modified", true)]));
        assert_eq!(sort_of("_sort=%2Bn,%20-m%20"), keys(&[("n", false), ("m", true), ("last_modified", true)]));
        assert_eq!(sort_of("_sort=last_modified"), keys(&[("last_modified", false)]));
        assert_eq!(sort_of("_sort=-last_modified"), keys(&[("last_modified", true), ("last_modified", true)]));
        assert_eq!(sort_of("_sort=a.b"), keys(&[("a.b", false), ("last_modified", true)]));
    }

    #[test]
    fn malformed_sort_items_are_ignored_and_unknown_fields_accepted_on_open_resources() {
        assert_eq!(sort_of("_sort=a.b-c,--x,bogus"), keys(&[("bogus", false), ("last_modified", true)]));
    }

    #[test]
    fn unknown_sort_field_rejected_on_strict_resources() {
        let err = parse_strict("_sort=bogus").unwrap_err();
        assert_eq!(err.message.as_deref(), Some("querystring: Unknown sort field 'bogus'"));
        assert_eq!(
            err.details,
            Some(json!([{"location": "querystring", "name": null, "description": "Unknown sort field 'bogus'"}]))
        );
        assert!(parse_strict("_sort=-uri,target.x,id").is_ok());
    }

    // --- _fields (§4.8) ----------------------------------------------------------------------

    #[test]
    fn fields_are_a_comma_list_and_empty_means_none() {
        assert_eq!(parse("_fields=title,a.b").unwrap().fields, Some(vec!["title".to_owned(), "a.b".to_owned()]));
        assert_eq!(parse("_fields=").unwrap().fields, None);
        assert_eq!(parse("").unwrap().fields, None);
    }

    #[test]
    fn unknown_fields_on_strict_resources_report_location_body() {
        let err = parse_strict("_fields=uri,foo.x,id").unwrap_err();
        assert_eq!(err.message.as_deref(), Some("Invalid _fields parameter in body: Fields foo do not exist"));
        assert!(parse_strict("_fields=uri,target.data").is_ok());
    }

    // --- tokens (§4.7) -----------------------------------------------------------------------

    /// A token produced by Kinto 26.5 for `?_sort=age&_limit=2`.
    const KINTO_TOKEN: &str = "eyJsYXN0X29iamVjdCI6eyJhZ2UiOiIzMCIsImxhc3RfbW9kaWZpZWQiOjE3OTU5MjU5MTAzMDR9LCJvZmZzZXQiOjMsIm5vbmNlIjoicGFnaW5hdGlvbi10b2tlbi0xZjc4NzgyZC1hMWRhLTQ2YjItYTE2Ni1mY2JmZjlhZTM2NjEifQ==";

    fn age_sort() -> Vec<SortKey> {
        vec![SortKey::new("age", false), SortKey::new("last_modified", true)]
    }

    fn token_of(json: &str) -> String {
        base64_encode(json.as_bytes())
    }

    #[test]
    fn token_encoding_is_byte_identical_to_kinto() {
        let token = Token::decode_at(KINTO_TOKEN, &age_sort(), NOW).unwrap();
        assert_eq!(
            token.last_object,
            *json!({"age": "30", "last_modified": 1_795_925_910_304u64}).as_object().unwrap()
        );
        assert_eq!(token.offset, 3);
        assert_eq!(token.nonce, "pagination-token-1f78782d-a1da-46b2-a166-fcbff9ae3661");
        assert_eq!(token.encode(), KINTO_TOKEN);
        assert_eq!(token.pin, None, "Kinto's tokens are unpinned");
    }

    #[test]
    fn pinned_tokens_round_trip_and_keep_kintos_keys() {
        let mut token = Token::decode_at(KINTO_TOKEN, &age_sort(), NOW).unwrap();
        token.pin = Some(Pin { seq: 42, list_ts: 1_795_925_910_400 });
        let encoded = token.encode();
        let text = String::from_utf8(base64_decode_lenient(&encoded).unwrap()).unwrap();
        assert!(text.starts_with(r#"{"last_object":{"age":"30","#), "{text}");
        assert!(text.ends_with(r#","seq":42,"list_ts":1795925910400}"#), "{text}");
        assert_eq!(Token::decode_at(&encoded, &age_sort(), NOW).unwrap(), token);
        for json in [
            r#"{"last_object":{"last_modified":1},"offset":0,"nonce":"n","seq":1}"#,
            r#"{"last_object":{"last_modified":1},"offset":0,"nonce":"n","list_ts":1}"#,
            r#"{"last_object":{"last_modified":1},"offset":0,"nonce":"n","seq":-1,"list_ts":1}"#,
            r#"{"last_object":{"last_modified":1},"offset":0,"nonce":"n","seq":"1","list_ts":1}"#,
        ] {
            assert!(Token::decode_at(&token_of(json), &age_sort(), NOW).is_err(), "{json}");
        }
    }

    #[test]
    fn token_json_escapes_non_ascii_upper_case_and_keeps_python_floats() {
        let token = Token {
            last_object: json!({"t": "é😀\u{1}/", "f": 1e20}).as_object().unwrap().clone(),
            offset: 0,
            nonce: "n".to_owned(),
            pin: None,
        };
        let decoded = String::from_utf8(base64_decode_lenient(&token.encode()).unwrap()).unwrap();
        assert_eq!(decoded, r#"{"last_object":{"t":"\u00E9\uD83D\uDE00\u0001/","f":1e+20},"offset":0,"nonce":"n"}"#);
    }

    #[test]
    fn token_for_last_takes_sort_values_and_skips_missing_ones() {
        let obj = json!({"id": "r", "a": {"b": 1}, "last_modified": 10});
        let sort = vec![SortKey::new("a.b", false), SortKey::new("missing", true), SortKey::new("last_modified", true)];
        let token = Token::for_last(&obj, &sort, 3, "pagination-token-x".to_owned());
        assert_eq!(Value::Object(token.last_object.clone()), json!({"a.b": 1, "last_modified": 10}));
        assert_eq!(Token::decode_at(&token.encode(), &sort, NOW).unwrap(), token);
    }

    #[test]
    fn invalid_tokens_are_rejected_with_kintos_message() {
        let err = parse("_token=xyz").unwrap_err();
        assert_eq!(err.message.as_deref(), Some("querystring: _token has invalid content"));
        assert_eq!(
            err.details,
            Some(json!([{"location": "querystring", "name": null, "description": "_token has invalid content"}]))
        );
        let sort = age_sort();
        let rejected = [
            "[1]",
            r#"{"last_object":[],"offset":0,"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":1},"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":1},"offset":0}"#,
            r#"{"last_object":{"last_modified":1},"offset":-1,"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":1},"offset":true,"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":1},"offset":1.0,"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":1e20},"offset":0,"nonce":"n"}"#,
            r#"{"last_object":{"last_modified":true},"offset":0,"nonce":"n"}"#,
            r#"{"last_object":{"age":1},"offset":0,"nonce":"n"}"#,
            r#"{"last_object":{"age":{"nested":1},"last_modified":1},"offset":0,"nonce":"n"}"#,
            r#"{"last_object":{"age":["a"],"last_modified":1},"offset":0,"nonce":"n"}"#,
        ];
        for json in rejected {
            assert!(Token::decode_at(&token_of(json), &sort, NOW).is_err(), "{json}");
        }
        let with_nul = r#"{"last_object":{"age":"a\u0000","last_modified":1},"offset":0,"nonce":"n"}"#;
        assert!(Token::decode_at(&token_of(with_nul), &sort, NOW).is_ok(), "our own tokens may carry a NUL");
        let lenient = r#"{"last_object":{"last_modified":"\"5\"","other":[1]},"offset":0,"nonce":7}"#;
        let token = Token::decode_at(&token_of(lenient), &sort, NOW).unwrap();
        assert_eq!(token.last_object["last_modified"], json!(5), "normalised to an integer");
        assert_eq!(token.nonce, "7");
        assert!(Token::decode_at("", &sort, NOW).is_err());
        assert!(token_already_used().message.unwrap().ends_with("_token was already used or has expired."));
    }

    #[test]
    fn token_must_be_a_string_parameter() {
        assert_eq!(message("_token=123"), "123 is not a string: {'_token': ''}");
        assert_eq!(parse("_token=").unwrap().token, None);
    }

    #[test]
    fn base64_decoding_is_as_lenient_as_python() {
        assert_eq!(base64_decode_lenient("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode_lenient("a G\nk=").unwrap(), b"hi", "junk characters skipped");
        assert_eq!(base64_decode_lenient("aGk=trailing").unwrap(), b"hi", "data after padding ignored");
        assert_eq!(base64_decode_lenient("aG=k=").unwrap(), b"hi", "a stray pad is skipped");
        assert!(base64_decode_lenient("aGk").is_none(), "incorrect padding");
        assert!(base64_decode_lenient("a").is_none());
        assert_eq!(base64_encode(b"hi"), "aGk=");
        assert_eq!(base64_encode(b"h"), "aA==");
        assert_eq!(base64_encode(b"hi!"), "aGkh");
    }

    // --- Next-Page (§4.7) --------------------------------------------------------------------

    #[test]
    fn next_page_url_matches_kinto() {
        let pairs = pairs("_sort=age&_limit=2&_x=a%20b%2Fc~d*%27()!%2B&_x=2&_y&_z=%C3%A9;_w=1");
        let url = next_page_url("http://localhost:8899/v1/buckets/b/collections/c/records", &pairs, 2, "ab/c+d==");
        assert_eq!(
            url,
            "http://localhost:8899/v1/buckets/b/collections/c/records?_sort=age&_limit=2&_x=2&_y=&_z=%C3%A9&_w=1&_token=ab%2Fc%2Bd%3D%3D"
        );
    }

    #[test]
    fn next_page_url_encodes_like_quote_plus_and_appends_missing_params() {
        let pairs = pairs(
            "_x=a%20b%2Fc~d*%27()!%2B-_.%3A%40%2C%24%26%3D%3F%23%5B%5D%7B%7D%22%3C%3E%5C%5E%60%7C&_sp+ace=%E2%82%AC",
        );
        assert_eq!(
            next_page_url(BASE, &pairs, 5, "t"),
            format!("{BASE}?_x=a+b%2Fc~d%2A%27%28%29%21%2B-_.%3A%40%2C%24%26%3D%3F%23%5B%5D%7B%7D%22%3C%3E%5C%5E%60%7C&_sp+ace=%E2%82%AC&_limit=5&_token=t")
        );
    }

    // --- end to end: a listing driven by this module and crate::filter ------------------------

    fn records() -> Vec<Value> {
        (1..=5u64)
            .map(|i| json!({"id": format!("r{i}"), "n": i % 3, "title": format!("t{i}"), "body": "b", "last_modified": 100 + i}))
            .chain([json!({"id": "gone", "deleted": true, "last_modified": 200})])
            .collect()
    }

    /// What a server does with a query: filter, skip to the token, sort, cut, project.
    fn list(records: &[Value], raw: &str, paginate_by: Option<u64>) -> (Vec<Value>, Option<String>) {
        let pairs = pairs(raw);
        let q = parse_list_query(&pairs, NOW, None).unwrap();
        let mut rows: Vec<&Value> = records
            .iter()
            .filter(|r| q.with_tombstones || r.get("deleted").is_none())
            .filter(|r| q.filters.iter().all(|f| f.matches(r)))
            .filter(|r| q.token.as_ref().is_none_or(|t| is_after_token(r, &t.last_object, &q.sort)))
            .collect();
        rows.sort_by(|a, b| compare_objects(a, b, &q.sort));
        let limit = q.effective_limit(paginate_by, 10_000);
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next = match (more, rows.last()) {
            (true, Some(last)) => {
                let offset = q.token.as_ref().map_or(0, |t| t.offset) + rows.len() as u64 + 1;
                let token = Token::for_last(last, &q.sort, offset, "pagination-token-test".to_owned());
                Some(next_page_url(BASE, &pairs, limit, &token.encode()))
            }
            _ => None,
        };
        let data = rows.iter().map(|r| q.fields.as_ref().map_or((*r).clone(), |f| project(r, f))).collect();
        (data, next)
    }

    fn ids(data: &[Value]) -> Vec<&str> {
        data.iter().map(|r| r["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn limit_gives_a_page_and_a_next_page_url_with_the_original_params() {
        let records = records();
        let (data, next) = list(&records, "_sort=n&_limit=2&title=x", None);
        assert!(data.is_empty(), "the title filter matches nothing");
        assert!(next.is_none());
        let (data, next) = list(&records, "_sort=n&_limit=2", None);
        assert_eq!(ids(&data), ["r3", "r4"]);
        let next = next.unwrap();
        assert!(next.starts_with(&format!("{BASE}?_sort=n&_limit=2&_token=")), "{next}");
    }

    #[test]
    fn following_next_page_yields_every_object_exactly_once() {
        let records = records();
        for (query, paginate_by) in
            [("_limit=2", None), ("_sort=n&_limit=2", None), ("_sort=-n,title", Some(2)), ("_sort=body&_limit=1", None)]
        {
            let mut seen = Vec::new();
            let mut raw = query.to_owned();
            let mut pages = 0;
            loop {
                let (data, next) = list(&records, &raw, paginate_by);
                seen.extend(ids(&data).into_iter().map(str::to_owned));
                pages += 1;
                match next {
                    Some(url) => raw = url.strip_prefix(&format!("{BASE}?")).unwrap().to_owned(),
                    None => break,
                }
                assert!(pages < 10, "{query}: no end");
            }
            seen.sort();
            assert_eq!(seen, ["r1", "r2", "r3", "r4", "r5"], "{query}");
        }
    }

    #[test]
    fn paginate_by_caps_limit_and_limit_zero_returns_everything() {
        let records = records();
        let (data, next) = list(&records, "_limit=10", Some(3));
        assert_eq!(data.len(), 3);
        assert!(next.unwrap().contains("_limit=3&_token="));
        let (data, next) = list(&records, "_limit=0", Some(3));
        assert_eq!(data.len(), 5);
        assert!(next.is_none());
    }

    #[test]
    fn default_order_is_newest_first_and_tombstones_need_a_timestamp_filter() {
        let records = records();
        assert_eq!(ids(&list(&records, "", None).0), ["r5", "r4", "r3", "r2", "r1"]);
        assert_eq!(ids(&list(&records, "_since=103", None).0), ["gone", "r5", "r4"]);
        assert_eq!(ids(&list(&records, "_before=103", None).0), ["r2", "r1"]);
        assert_eq!(ids(&list(&records, "_sort=n", None).0), ["r3", "r4", "r1", "r5", "r2"]);
    }

    #[test]
    fn fields_project_each_item() {
        let records = records();
        let (data, _) = list(&records, "_fields=title&_limit=1", None);
        assert_eq!(data, [json!({"title": "t5", "id": "r5", "last_modified": 105})]);
    }
}

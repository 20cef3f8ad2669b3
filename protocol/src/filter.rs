//! Evaluation of Kinto's listing grammar (kinto-protocol.md §4.2–4.8): filters, the total value
//! order, the sort comparator, the keyset pagination rule, `_fields` projection and nested
//! field lookup.
//!
//! The reference semantics are Kinto's PostgreSQL backend: values compare in JSONB order
//! (`null < string < number < boolean < array < object`), a missing field behaves like SQL
//! `NULL` (it sorts after everything), and each operator has its own rule for missing fields.
//! Parsing the query string into [`Filter`]s lives in [`crate::query`].

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use crate::query::SortKey;

/// The object id field (a text column in Kinto: filters on it compare strings).
pub const ID_FIELD: &str = "id";
/// The timestamp field (an integer column in Kinto; filtering on it includes tombstones).
pub const MODIFIED_FIELD: &str = "last_modified";
/// The tombstone marker field.
pub const DELETED_FIELD: &str = "deleted";

/// A filter operator, named after its query-string prefix (`lt_`, `min_`, …; `Eq` also has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Not,
    Lt,
    Gt,
    Min,
    Max,
    In,
    Exclude,
    Like,
    Has,
    Contains,
    ContainsAny,
}

impl Op {
    /// Prefixes in the order Kinto's regex alternation tries them (`contains_any` before
    /// `contains`, so `contains_any_tags` is `ContainsAny` on `tags`).
    pub const PREFIXES: [(&'static str, Op); 12] = [
        ("lt", Op::Lt),
        ("min", Op::Min),
        ("max", Op::Max),
        ("not", Op::Not),
        ("eq", Op::Eq),
        ("gt", Op::Gt),
        ("in", Op::In),
        ("exclude", Op::Exclude),
        ("like", Op::Like),
        ("has", Op::Has),
        ("contains_any", Op::ContainsAny),
        ("contains", Op::Contains),
    ];

    /// The query-string prefix (without the trailing `_`).
    pub fn prefix(self) -> &'static str {
        Op::PREFIXES.iter().find(|(_, op)| *op == self).map_or("eq", |(prefix, _)| prefix)
    }

    /// Operators whose value is a list (`In`, `Exclude`, `Contains`, `ContainsAny`).
    pub fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Exclude | Op::Contains | Op::ContainsAny)
    }
}

/// One `[op_]<field>=<value>` condition; a listing keeps objects matching all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Possibly dotted (`person.name`), resolved with [`resolve_field`].
    pub field: String,
    pub op: Op,
    /// The parsed value; a `Value::Array` for `In`, `Exclude`, `Contains` and `ContainsAny`.
    /// Filters on `last_modified` built by [`crate::query`] always hold an integer.
    pub value: Value,
}

impl Filter {
    pub fn new(field: impl Into<String>, op: Op, value: Value) -> Self {
        Filter { field: field.into(), op, value }
    }

    /// Does the object (a record's JSON, or a tombstone `{id, last_modified, deleted}`) match?
    ///
    /// Missing fields follow Kinto's PostgreSQL rules (§4.4): `eq`, `lt`, `max`, `in`, `like`,
    /// `contains*` never match them; `not`, `gt`, `min`, `exclude` always do.
    pub fn matches(&self, obj: &Value) -> bool {
        let found = resolve_field(obj, &self.field);
        if self.op == Op::Has {
            // `{"x": null}` has `x`: only absence counts.
            return truthy(&self.value) == found.is_some();
        }
        let value = if self.field == ID_FIELD { coerce_id_value(&self.value) } else { Cow::Borrowed(&self.value) };
        if self.field == ID_FIELD && value.is_null() {
            // `id` is a text column: comparing it with SQL NULL is never true.
            return false;
        }
        let value = value.as_ref();
        match self.op {
            Op::Eq => found.is_some_and(|x| json_eq(x, value)),
            Op::Not => found.is_none_or(|x| !json_eq(x, value)),
            Op::Lt => found.is_some_and(|x| compare_values(Some(x), Some(value)) == Ordering::Less),
            Op::Max => found.is_some_and(|x| compare_values(Some(x), Some(value)) != Ordering::Greater),
            Op::Gt => found.is_none_or(|x| compare_values(Some(x), Some(value)) == Ordering::Greater),
            Op::Min => found.is_none_or(|x| compare_values(Some(x), Some(value)) != Ordering::Less),
            Op::In => found.is_some_and(|x| as_list(value).iter().any(|v| json_eq(x, v))),
            // `x NOT IN ()` is sent as `x NOT IN (NULL)`, which is never true: an empty list only
            // keeps objects missing the field.
            Op::Exclude => found.is_none_or(|x| {
                let list = as_list(value);
                !list.is_empty() && !list.iter().any(|v| json_eq(x, v))
            }),
            Op::Like => match (found.and_then(text_form), value) {
                (Some(text), Value::String(pattern)) => like_matches(&text, pattern),
                _ => false,
            },
            Op::Contains => match found {
                Some(Value::Array(items)) => as_list(value).iter().all(|v| items.iter().any(|x| json_eq(x, v))),
                _ => false,
            },
            Op::ContainsAny => match found {
                Some(Value::Array(items)) => as_list(value).iter().any(|v| items.iter().any(|x| json_eq(x, v))),
                _ => false,
            },
            Op::Has => false, // handled above
        }
    }
}

/// Kinto turns integer values compared with `id` into strings (`not_id=1` means `"1"`); Python's
/// `isinstance(True, int)` makes booleans `"True"`/`"False"`.
fn coerce_id_value(value: &Value) -> Cow<'_, Value> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Cow::Owned(Value::String(n.to_string())),
        Value::Bool(b) => Cow::Owned(Value::String(if *b { "True" } else { "False" }.to_owned())),
        other => Cow::Borrowed(other),
    }
}

fn as_list(value: &Value) -> Cow<'_, [Value]> {
    match value {
        Value::Array(items) => Cow::Borrowed(items.as_slice()),
        other => Cow::Owned(vec![other.clone()]),
    }
}

/// Python truthiness of a parsed value (decides `has_`).
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Kinto's nested lookup (`find_nested_value`, §4.2): a top-level key equal to the whole dotted
/// path wins; otherwise the longest top-level key that is a dotted prefix is taken and the rest
/// is resolved inside it (keys may contain dots). `None` means missing; `Some(Null)` is a null.
pub fn resolve_field<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    if let Some(value) = map.get(dotted) {
        return Some(value);
    }
    // Candidate roots are the prefixes ending just before a dot, longest first.
    let root = dotted.match_indices('.').map(|(i, _)| &dotted[..i]).rev().find(|prefix| map.contains_key(*prefix))?;
    let inner = map.get(root)?;
    if !inner.is_object() {
        return None;
    }
    resolve_field(inner, &dotted[root.len() + 1..])
}

/// The total order of listings (JSONB order): `null < string < number < boolean < array <
/// object < missing` (`None` is missing). Strings compare by code point, numbers numerically
/// across integer and float representations, arrays by length then element-wise, objects by
/// size then key/value pairs in PostgreSQL's key order.
///
/// PostgreSQL quirk kept on purpose: an empty array compared at the top level sorts before every
/// scalar (`[] < null`).
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => {
            let empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
            let scalar = |v: &Value| !v.is_array() && !v.is_object();
            if empty(a) && scalar(b) {
                Ordering::Less
            } else if scalar(a) && empty(b) {
                Ordering::Greater
            } else {
                compare_json(a, b)
            }
        }
    }
}

/// JSONB equality: like `==` on `Value` except that numbers compare numerically (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    compare_json(a, b) == Ordering::Equal
}

fn type_rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::String(_) => 1,
        Value::Number(_) => 2,
        Value::Bool(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn compare_json(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter().zip(y).map(|(p, q)| compare_json(p, q)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
        }),
        (Value::Object(x), Value::Object(y)) => x.len().cmp(&y.len()).then_with(|| {
            let (xs, ys) = (pg_key_order(x), pg_key_order(y));
            xs.iter()
                .zip(&ys)
                .map(|((kx, vx), (ky, vy))| kx.cmp(ky).then_with(|| compare_json(vx, vy)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// JSONB stores object keys shorter first, then bytewise; comparisons and text output use it.
fn pg_key_order(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut pairs: Vec<_> = map.iter().collect();
    pairs.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    pairs
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
}

/// Exact comparison of JSON numbers, whatever mix of i64/u64/f64 holds them.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => compare_int_float(x, b.as_f64().unwrap_or(0.0)),
        (None, Some(y)) => compare_int_float(y, a.as_f64().unwrap_or(0.0)).reverse(),
        (None, None) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

fn compare_int_float(i: i128, f: f64) -> Ordering {
    // Rounding is monotonic, so a strict inequality against the rounded integer is exact; a tie
    // means `f` is integral (and within i128), so compare exactly.
    match (i as f64).partial_cmp(&f) {
        Some(Ordering::Equal) => i.cmp(&(f as i128)),
        Some(order) => order,
        None => Ordering::Equal,
    }
}

/// The sort comparator: each key in turn, ascending putting missing values last and descending
/// putting them first (SQL `NULLS LAST` / `NULLS FIRST`).
pub fn compare_objects(a: &Value, b: &Value, sort: &[SortKey]) -> Ordering {
    for key in sort {
        let order = compare_values(resolve_field(a, &key.field), resolve_field(b, &key.field));
        let order = if key.descending { order.reverse() } else { order };
        if order.is_ne() {
            return order;
        }
    }
    Ordering::Equal
}

/// Is the object strictly after the token's `last_object` in the sort order (§4.7)?
///
/// Kinto's rule: an OR over k of "fields before k equal, field k beyond". Values are read from
/// `last_object` by their (possibly dotted) key. Against a value missing from `last_object`,
/// NULL semantics apply: `==` means the field is missing too, `>` never holds and `<` means the
/// field is present.
pub fn is_after_token(obj: &Value, last_object: &Map<String, Value>, sort: &[SortKey]) -> bool {
    (0..sort.len()).any(|k| {
        sort[..k].iter().all(|key| {
            let x = resolve_field(obj, &key.field);
            match last_object.get(&key.field) {
                None => x.is_none(),
                Some(last) => x.is_some_and(|x| json_eq(x, pagination_value(&key.field, last).as_ref())),
            }
        }) && {
            let key = &sort[k];
            let x = resolve_field(obj, &key.field);
            match (last_object.get(&key.field), key.descending) {
                (None, false) => false,
                (None, true) => x.is_some(),
                (Some(last), false) => x.is_none_or(|x| {
                    compare_values(Some(x), Some(pagination_value(&key.field, last).as_ref())) == Ordering::Greater
                }),
                (Some(last), true) => x.is_some_and(|x| {
                    compare_values(Some(x), Some(pagination_value(&key.field, last).as_ref())) == Ordering::Less
                }),
            }
        }
    })
}

fn pagination_value<'a>(field: &str, value: &'a Value) -> Cow<'a, Value> {
    if field == ID_FIELD {
        coerce_id_value(value)
    } else {
        Cow::Borrowed(value)
    }
}

/// `_fields` projection (§4.8, Kinto's `dict_subset`): a dotted name splits on its first dot and
/// selects inside an object (an object without the sub-key yields `{}`); if the parent is not an
/// object the whole top-level value is kept. `id` and `last_modified` are always kept; keys come
/// out in the order asked, then `id`, `last_modified`.
pub fn project(obj: &Value, fields: &[String]) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut keys: Vec<&str> = fields.iter().map(String::as_str).collect();
    keys.extend([ID_FIELD, MODIFIED_FIELD]);
    Value::Object(dict_subset(map, &keys))
}

fn dict_subset(map: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    let mut result = Map::new();
    for key in keys {
        match key.split_once('.') {
            Some((field, sub)) => match map.get(field) {
                Some(Value::Object(inner)) => {
                    let subset = dict_subset(inner, &[sub]);
                    let existing = match result.get(field) {
                        Some(Value::Object(prev)) => prev.clone(),
                        _ => Map::new(),
                    };
                    result.insert(field.to_owned(), Value::Object(dict_merge(subset, existing)));
                }
                Some(other) => {
                    result.insert(field.to_owned(), other.clone());
                }
                None => {}
            },
            None => {
                if let Some(value) = map.get(*key) {
                    result.insert((*key).to_owned(), value.clone());
                }
            }
        }
    }
    result
}

/// Kinto's `dict_merge(a, b)`: `b`'s keys first, `a`'s values win, objects merged recursively.
fn dict_merge(a: Map<String, Value>, b: Map<String, Value>) -> Map<String, Value> {
    let mut result = b;
    for (key, value) in a {
        let value = match value {
            Value::Object(inner) => {
                let existing = match result.get(&key) {
                    Some(Value::Object(prev)) => prev.clone(),
                    _ => Map::new(),
                };
                Value::Object(dict_merge(inner, existing))
            }
            other => other,
        };
        result.insert(key, value);
    }
    result
}

/// The text PostgreSQL's `->>` gives for a value (what `like_` matches): strings as is, numbers
/// in plain decimal, booleans as `true`/`false`, containers as JSONB text; `null` has none.
pub fn text_form(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(_) | Value::Object(_) => {
            let mut out = String::new();
            write_jsonb_text(value, &mut out);
            Some(out)
        }
    }
}

fn number_text(n: &Number) -> String {
    match (as_integer(n), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        // Kinto stores Python's repr of the float; PostgreSQL's numeric prints it expanded.
        (None, Some(f)) => expand_exponent(&py_float_repr(f)),
        (None, None) => n.to_string(),
    }
}

/// PostgreSQL's JSONB text output: `", "` and `": "` separators, keys in storage order.
fn write_jsonb_text(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::String(s) => {
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
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb_text(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in pg_key_order(map).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb_text(&Value::String(key.clone()), out);
                out.push_str(": ");
                write_jsonb_text(item, out);
            }
            out.push('}');
        }
    }
}

/// `like_` matching: case-insensitive, `*` is the only wildcard (`%` and `_` are literal, unlike
/// PostgreSQL's ILIKE), and a pattern without `*` matches anywhere (`*v*`).
pub fn like_matches(text: &str, pattern: &str) -> bool {
    let lower = |s: &str| -> Vec<char> { s.chars().flat_map(char::to_lowercase).collect() };
    let text = lower(text);
    let pattern = if pattern.contains('*') { lower(pattern) } else { lower(&format!("*{pattern}*")) };
    glob_matches(&text, &pattern)
}

/// Greedy wildcard matching with backtracking to the last `*` (linear in practice).
fn glob_matches(text: &[char], pattern: &[char]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Python's `repr(float)`: shortest round-trip digits, positional when the decimal exponent is
/// in `[-4, 16)`, else scientific with a signed two-digit exponent (`1e+16`, `1e-05`).
pub(crate) fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // `{:e}` is Rust's shortest round-trip representation, e.g. `1.2345e23`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exponent + 1; // digits before the decimal point
    let body = if (-3..=16).contains(&point) {
        if point <= 0 {
            format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exp_sign}{:02}", exponent.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// Rewrites a Python float repr in plain positional notation (`1e+16` → `10000000000000000`,
/// `1.5e-07` → `0.00000015`), as PostgreSQL's `numeric` prints it.
fn expand_exponent(repr: &str) -> String {
    let Some((mantissa, exponent)) = repr.split_once('e') else {
        return repr.to_owned();
    };
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac_part}");
    let point = int_part.len() as i64 + exponent;
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    };
    format!("{sign}{body}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sort(spec: &[(&str, bool)]) -> Vec<SortKey> {
        spec.iter().map(|(f, d)| SortKey { field: (*f).to_owned(), descending: *d }).collect()
    }

    fn f(field: &str, op: Op, value: Value) -> Filter {
        Filter::new(field, op, value)
    }

    /// Checklist 44's records: ages 10, 20, "30", null and missing.
    fn ages() -> Vec<Value> {
        vec![
            json!({"id": "a10", "age": 10, "last_modified": 1}),
            json!({"id": "a20", "age": 20, "last_modified": 2}),
            json!({"id": "a30", "age": "30", "last_modified": 3}),
            json!({"id": "anull", "age": null, "last_modified": 4}),
            json!({"id": "amissing", "last_modified": 5}),
        ]
    }

    fn ids_matching(records: &[Value], filter: &Filter) -> Vec<String> {
        records.iter().filter(|r| filter.matches(r)).map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn eq_matches_by_type_and_never_missing() {
        let r = ages();
        assert_eq!(ids_matching(&r, &f("age", Op::Eq, json!(10))), ["a10"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Eq, json!("30"))), ["a30"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Eq, json!(null))), ["anull"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Eq, json!(10.0))), ["a10"], "numbers compare numerically");
    }

    #[test]
    fn min_includes_missing_and_max_includes_null_and_strings() {
        let r = ages();
        assert_eq!(ids_matching(&r, &f("age", Op::Min, json!(15))), ["a20", "amissing"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Max, json!(20))), ["a10", "a20", "a30", "anull"]);
    }

    #[test]
    fn lt_and_gt_follow_the_cross_type_order() {
        let r = ages();
        assert_eq!(ids_matching(&r, &f("age", Op::Lt, json!("4"))), ["a30", "anull"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Gt, json!(1))), ["a10", "a20", "amissing"]);
    }

    #[test]
    fn not_keeps_missing_and_in_exclude_compare_each_value() {
        let r = ages();
        assert_eq!(ids_matching(&r, &f("age", Op::Not, json!(10))), ["a20", "a30", "anull", "amissing"]);
        assert_eq!(ids_matching(&r, &f("age", Op::In, json!([10, 20]))), ["a10", "a20"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Exclude, json!([10, 20]))), ["a30", "anull", "amissing"]);
    }

    #[test]
    fn empty_in_matches_nothing_and_empty_exclude_only_missing() {
        let r = ages();
        assert!(ids_matching(&r, &f("age", Op::In, json!([]))).is_empty());
        assert_eq!(ids_matching(&r, &f("age", Op::Exclude, json!([]))), ["amissing"]);
    }

    #[test]
    fn like_is_case_insensitive_substring_with_star_wildcard() {
        let alice = json!({"id": "x", "name": "Alice"});
        assert!(f("name", Op::Like, json!("ali")).matches(&alice));
        assert!(f("name", Op::Like, json!("A*")).matches(&alice));
        assert!(f("name", Op::Like, json!("*CE")).matches(&alice));
        assert!(f("name", Op::Like, json!("a*i*e")).matches(&alice));
        assert!(!f("name", Op::Like, json!("l*")).matches(&alice), "explicit star anchors the pattern");
        assert!(!f("name", Op::Like, json!("a_i")).matches(&alice), "underscore is literal");
        assert!(!f("name", Op::Like, json!("%")).matches(&alice), "percent is literal");
        assert!(!f("other", Op::Like, json!("a")).matches(&alice), "missing never matches");
    }

    #[test]
    fn like_matches_the_text_form_of_numbers_but_never_null() {
        assert!(f("age", Op::Like, json!("1")).matches(&json!({"age": 10})));
        assert!(f("age", Op::Like, json!("1.5")).matches(&json!({"age": 1.5})));
        assert!(!f("age", Op::Like, json!("null")).matches(&json!({"age": null})));
        assert!(f("flag", Op::Like, json!("tru")).matches(&json!({"flag": true})));
        assert!(f("tags", Op::Like, json!("\"a\", \"b\"")).matches(&json!({"tags": ["a", "b"]})));
    }

    #[test]
    fn has_counts_null_as_present() {
        let r = ages();
        assert_eq!(ids_matching(&r, &f("age", Op::Has, json!(true))), ["a10", "a20", "a30", "anull"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Has, json!(false))), ["amissing"]);
        assert_eq!(ids_matching(&r, &f("age", Op::Has, json!(0))), ["amissing"], "0 is falsy");
        assert_eq!(ids_matching(&r, &f("age", Op::Has, json!("x"))).len(), 4, "non-empty string is truthy");
    }

    #[test]
    fn contains_needs_all_values_and_contains_any_one() {
        let r = vec![
            json!({"id": "ab", "tags": ["a", "b"]}),
            json!({"id": "a", "tags": ["a"]}),
            json!({"id": "x", "tags": ["x", {"k": 1}]}),
            json!({"id": "scalar", "tags": "a"}),
            json!({"id": "none"}),
        ];
        assert_eq!(ids_matching(&r, &f("tags", Op::Contains, json!(["a", "b"]))), ["ab"]);
        assert_eq!(ids_matching(&r, &f("tags", Op::ContainsAny, json!(["a", "x"]))), ["ab", "a", "x"]);
        assert_eq!(ids_matching(&r, &f("tags", Op::Contains, json!([{"k": 1}]))), ["x"], "objects compare deeply");
        assert_eq!(ids_matching(&r, &f("tags", Op::Contains, json!([]))), ["ab", "a", "x"], "only arrays");
        assert!(ids_matching(&r, &f("tags", Op::ContainsAny, json!([]))).is_empty());
    }

    #[test]
    fn eq_on_array_needs_exact_equality() {
        let r = json!({"tags": ["a", "b"]});
        assert!(!f("tags", Op::Eq, json!("b")).matches(&r));
        assert!(f("tags", Op::Eq, json!(["a", "b"])).matches(&r));
        assert!(!f("tags", Op::Eq, json!(["b", "a"])).matches(&r));
    }

    #[test]
    fn filters_on_nested_fields_use_dotted_lookup() {
        let r = json!({"id": "n", "nested": {"x": 2}});
        assert!(f("nested.x", Op::Eq, json!(2)).matches(&r));
        assert!(!f("nested.x", Op::Eq, json!(3)).matches(&r));
        assert!(!f("unknown", Op::Eq, json!(1)).matches(&r), "unknown fields never match eq");
    }

    #[test]
    fn id_filters_compare_integer_values_as_strings() {
        let r = json!({"id": "1", "last_modified": 5});
        assert!(f("id", Op::Eq, json!(1)).matches(&r));
        assert!(!f("id", Op::Not, json!(1)).matches(&r));
        assert!(!f("id", Op::Not, json!(null)).matches(&r), "id <> NULL is never true");
    }

    #[test]
    fn tombstones_match_only_missing_tolerant_operators() {
        let tomb = json!({"id": "t", "last_modified": 9, "deleted": true});
        assert!(!f("age", Op::Eq, json!(1)).matches(&tomb));
        assert!(!f("age", Op::Lt, json!(1)).matches(&tomb));
        assert!(f("age", Op::Not, json!(1)).matches(&tomb));
        assert!(f("age", Op::Gt, json!(1)).matches(&tomb));
        assert!(f("age", Op::Min, json!(1)).matches(&tomb));
        assert!(f("age", Op::Exclude, json!([1])).matches(&tomb));
        assert!(f("age", Op::Has, json!(false)).matches(&tomb));
        assert!(f("last_modified", Op::Gt, json!(8)).matches(&tomb));
    }

    #[test]
    fn resolve_field_prefers_whole_key_then_longest_prefix() {
        let obj = json!({"a.b": 1, "a": {"b": 2}, "c": {"d.e": {"f": 3}}, "c.d": {"e": {"f": 4}}, "s": "x"});
        assert_eq!(resolve_field(&obj, "a.b"), Some(&json!(1)));
        assert_eq!(resolve_field(&obj, "c.d.e.f"), Some(&json!(4)), "longest root c.d wins");
        assert_eq!(resolve_field(&json!({"c": {"d.e": {"f": 3}}}), "c.d.e.f"), Some(&json!(3)));
        assert_eq!(resolve_field(&obj, "s.x"), None, "scalar parent");
        assert_eq!(resolve_field(&obj, "nope"), None);
        assert_eq!(resolve_field(&json!({"n": null}), "n"), Some(&Value::Null));
    }

    #[test]
    fn total_order_is_null_string_number_boolean_array_object_missing() {
        let ordered = [
            json!(null),
            json!("b"),
            json!(-1),
            json!(1.5),
            json!(2),
            json!(false),
            json!(true),
            json!([1]),
            json!({"a": 1}),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_values(Some(a), Some(b)), i.cmp(&j), "{a} vs {b}");
            }
            assert_eq!(compare_values(Some(a), None), Ordering::Less);
        }
        assert_eq!(compare_values(None, None), Ordering::Equal);
    }

    #[test]
    fn numbers_compare_exactly_across_representations() {
        let big = json!(9_007_199_254_740_993u64); // 2^53 + 1: not representable as f64
        assert_eq!(compare_values(Some(&big), Some(&json!(9_007_199_254_740_992.0))), Ordering::Greater);
        assert_eq!(compare_values(Some(&json!(u64::MAX)), Some(&json!(-1))), Ordering::Greater);
        assert_eq!(compare_values(Some(&json!(3)), Some(&json!(3.0))), Ordering::Equal);
        assert_eq!(compare_values(Some(&json!(2.5)), Some(&json!(3))), Ordering::Less);
    }

    #[test]
    fn containers_compare_by_size_first() {
        assert_eq!(compare_values(Some(&json!([9])), Some(&json!([1, 1]))), Ordering::Less);
        assert_eq!(compare_values(Some(&json!([1, 2])), Some(&json!([1, 3]))), Ordering::Less);
        assert_eq!(compare_values(Some(&json!({"z": 1})), Some(&json!({"a": 1, "b": 1}))), Ordering::Less);
        assert!(json_eq(&json!({"a": 1, "b": [1.0]}), &json!({"b": [1], "a": 1})));
    }

    #[test]
    fn top_level_empty_array_sorts_before_null() {
        assert_eq!(compare_values(Some(&json!([])), Some(&json!(null))), Ordering::Less);
        assert_eq!(compare_values(Some(&json!([[]])), Some(&json!([null]))), Ordering::Greater, "nested: plain order");
    }

    #[test]
    fn mixed_type_ascending_sort_puts_missing_last() {
        let mut records = [
            json!({"id": "missing", "last_modified": 1}),
            json!({"id": "object", "v": {"a": 1}, "last_modified": 2}),
            json!({"id": "array", "v": [1], "last_modified": 3}),
            json!({"id": "bool", "v": true, "last_modified": 4}),
            json!({"id": "number", "v": 3, "last_modified": 5}),
            json!({"id": "string", "v": "s", "last_modified": 6}),
            json!({"id": "null", "v": null, "last_modified": 7}),
        ];
        let keys = sort(&[("v", false), ("last_modified", true)]);
        records.sort_by(|a, b| compare_objects(a, b, &keys));
        let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["null", "string", "number", "bool", "array", "object", "missing"]);
        let keys = sort(&[("v", true)]);
        records.sort_by(|a, b| compare_objects(a, b, &keys));
        assert_eq!(records[0]["id"], "missing", "descending puts missing first");
    }

    #[test]
    fn boolean_ascending_sort_is_false_first() {
        let mut records = [json!({"b": true}), json!({"b": false})];
        records.sort_by(|a, b| compare_objects(a, b, &sort(&[("b", false)])));
        assert_eq!(records[0]["b"], false);
    }

    #[test]
    fn sort_with_tie_breaker_on_last_modified() {
        let mut records = [
            json!({"id": "a", "n": 1, "last_modified": 1}),
            json!({"id": "b", "n": 2, "last_modified": 2}),
            json!({"id": "c", "n": 1, "last_modified": 3}),
        ];
        records.sort_by(|a, b| compare_objects(a, b, &sort(&[("n", false), ("last_modified", true)])));
        let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        records.sort_by(|a, b| compare_objects(a, b, &sort(&[("n", true), ("id", false), ("last_modified", true)])));
        let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    #[test]
    fn keyset_rule_yields_strictly_following_objects() {
        let keys = sort(&[("n", false), ("last_modified", true)]);
        let mut records = [
            json!({"id": "a", "n": 1, "last_modified": 10}),
            json!({"id": "b", "n": 1, "last_modified": 5}),
            json!({"id": "c", "n": 2, "last_modified": 7}),
            json!({"id": "d", "last_modified": 8}),
            json!({"id": "e", "last_modified": 6}),
        ];
        records.sort_by(|a, b| compare_objects(a, b, &keys));
        for (i, last) in records.iter().enumerate() {
            let mut last_object = Map::new();
            for key in &keys {
                if let Some(v) = resolve_field(last, &key.field) {
                    last_object.insert(key.field.clone(), v.clone());
                }
            }
            let after: Vec<_> = records.iter().filter(|r| is_after_token(r, &last_object, &keys)).collect();
            let expected: Vec<_> = records[i + 1..].iter().collect();
            assert_eq!(after, expected, "after {}", last["id"]);
        }
    }

    #[test]
    fn keyset_rule_uses_null_semantics_for_values_missing_from_the_token() {
        let keys = sort(&[("n", true), ("last_modified", true)]);
        let last_object = Map::from_iter([("last_modified".to_owned(), json!(5))]);
        // Descending on n: the missing n came first; next are equal-missing older ones, then all with n.
        assert!(is_after_token(&json!({"last_modified": 4}), &last_object, &keys));
        assert!(!is_after_token(&json!({"last_modified": 6}), &last_object, &keys));
        assert!(is_after_token(&json!({"n": 1, "last_modified": 9}), &last_object, &keys));
    }

    #[test]
    fn project_keeps_requested_fields_plus_id_and_last_modified() {
        let obj = json!({"id": "r", "last_modified": 3, "title": "t", "other": 1});
        assert_eq!(project(&obj, &["title".to_owned()]), json!({"title": "t", "id": "r", "last_modified": 3}));
        let keys: Vec<_> = project(&obj, &["title".to_owned()]).as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["title", "id", "last_modified"]);
    }

    #[test]
    fn project_dotted_paths_select_nested_keys() {
        let obj = json!({"id": "r", "last_modified": 3, "a": {"b": 1, "c": 2}, "s": "x", "n": {"x": 1}});
        let fields: Vec<String> = ["a.b", "s.q", "n.zz", "missing.x"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(project(&obj, &fields), json!({"a": {"b": 1}, "s": "x", "n": {}, "id": "r", "last_modified": 3}));
        let fields: Vec<String> = ["a.b", "a.c"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(project(&obj, &fields)["a"], json!({"b": 1, "c": 2}));
    }

    #[test]
    fn python_float_repr_matches_cpython() {
        for (f, repr) in [
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.1, "0.1"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (1.2345678901234567e23, "1.2345678901234567e+23"),
            (-0.5, "-0.5"),
            (-0.0, "-0.0"),
            (1.5e300, "1.5e+300"),
            (123.456, "123.456"),
        ] {
            assert_eq!(py_float_repr(f), repr);
        }
    }

    #[test]
    fn text_form_expands_floats_like_postgres_numeric() {
        assert_eq!(text_form(&json!(1e20)).unwrap(), "100000000000000000000");
        assert_eq!(text_form(&json!(1.5e-7)).unwrap(), "0.00000015");
        assert_eq!(text_form(&json!(2.0)).unwrap(), "2.0");
        assert_eq!(text_form(&json!({"bb": 1, "a": [true, null]})).unwrap(), "{\"a\": [true, null], \"bb\": 1}");
    }

    #[test]
    fn op_prefixes_round_trip() {
        for (prefix, op) in Op::PREFIXES {
            assert_eq!(op.prefix(), prefix);
        }
        assert!(Op::In.takes_list() && !Op::Like.takes_list());
    }
}

//! Python's `repr` of a JSON value: Kinto's validation messages quote values that way
//! (`{'foo': 1}`, `[1, 2]`, `True`, `None`), and clients display them verbatim.

use serde_json::Value;

pub fn pyrepr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => format!("[{}]", items.iter().map(pyrepr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", quote(k), pyrepr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Python's `str`: like `repr` except that a string is shown bare.
pub fn pystr(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => pyrepr(other),
    }
}

fn quote(s: &str) -> String {
    // Python prefers single quotes unless the text holds one and no double quote.
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn renders_like_python() {
        assert_eq!(super::pyrepr(&json!({"foo": 1, "b": [true, null, "x"]})), "{'foo': 1, 'b': [True, None, 'x']}");
    }
}

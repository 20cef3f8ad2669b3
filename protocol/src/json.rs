//! Kinto's JSON rendering: compact, non-ASCII escaped as `\uXXXX`, `/` as is. Resources come out
//! of Kinto's renderer with upper-case hex; error bodies out of Python's `json` with lower-case.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

struct AsciiFormatter {
    upper: bool,
}

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                if self.upper {
                    write!(writer, "\\u{:04X}", unit)?;
                } else {
                    write!(writer, "\\u{:04x}", unit)?;
                }
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        CompactFormatter.begin_array(writer)
    }
}

/// Serialises a value the way Kinto's renderer does.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    render(value, true)
}

/// Serialises an error body the way Kinto's error responses are (lower-case escapes).
pub fn error_to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    render(value, false)
}

fn render<T: Serialize + ?Sized>(value: &T, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter { upper });
    // Serialising a serde_json::Value or a derived struct into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn non_ascii_is_escaped_upper_case_and_slash_is_not() {
        let out = super::to_vec(&json!({"s": "é/😀", "n": [1, 2]}));
        assert_eq!(String::from_utf8_lossy(&out), r#"{"s":"\u00E9/\uD83D\uDE00","n":[1,2]}"#);
    }

    #[test]
    fn error_bodies_escape_lower_case() {
        let out = super::error_to_vec(&json!({"id": "café"}));
        assert_eq!(String::from_utf8_lossy(&out), r#"{"id":"caf\u00e9"}"#);
    }
}

//! Object identifiers as Kinto validates them (kinto-protocol.md §2.2).

/// Buckets, collections, groups and records: `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        _ => false,
    }
}

/// Accounts also allow `+`, `.` and `@` after the first character (e-mail addresses).
pub fn is_valid_account_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.' | '@'))
        }
        _ => false,
    }
}

/// The id Kinto generates for buckets, collections and groups: 8 characters, the first
/// alphanumeric, from 8 random bytes.
pub fn short_id(random: [u8; 8]) -> String {
    const FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    random
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let alphabet = if i == 0 { FIRST } else { REST };
            alphabet[*b as usize % alphabet.len()] as char
        })
        .collect()
}

/// A lowercase canonical UUID4 from 16 random bytes (record ids).
pub fn uuid4(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_kintos_pattern() {
        assert!(is_valid_id("blog"));
        assert!(is_valid_id("a-b_c9"));
        for bad in ["", "_a", "-a", "a.b", "a/b", "a*", "é", "a\0"] {
            assert!(!is_valid_id(bad), "{bad:?} must be invalid");
        }
        assert!(is_valid_account_id("bob@example.com"));
        assert!(!is_valid_account_id(".bob"));
    }

    #[test]
    fn generated_ids_are_valid() {
        assert!(is_valid_id(&short_id([255, 0, 63, 64, 7, 8, 9, 10])));
        let uuid = uuid4([0xff; 16]);
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!(is_valid_id(&uuid));
    }
}

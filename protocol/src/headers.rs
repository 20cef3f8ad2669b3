//! Request headers Kinto interprets: preconditions and `Response-Behavior` (§3.2, §5.3).

use crate::error::{ApiError, Location};

/// One `If-Match` / `If-None-Match` value: `*` or one quoted timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Any,
    Timestamp(u64),
}

pub fn parse_condition(header: &str, value: &str) -> Result<Condition, ApiError> {
    let value = value.trim();
    if value == "*" {
        return Ok(Condition::Any);
    }
    let digits = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    match digits.filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).map(str::parse::<u64>) {
        Some(Ok(ts)) => Ok(Condition::Timestamp(ts)),
        _ => Err(ApiError::invalid_one(
            Location::Header,
            Some(header),
            "The value should be integer between double quotes.",
        )),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub if_match: Option<Condition>,
    pub if_none_match: Option<Condition>,
}

/// What the preconditions say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// 304 (GET/HEAD only).
    NotModified,
    /// 412.
    Failed,
}

impl Preconditions {
    /// An empty header is no header, as Kinto reads it.
    pub fn parse(if_match: Option<&str>, if_none_match: Option<&str>) -> Result<Self, ApiError> {
        let if_match = if_match.filter(|v| !v.trim().is_empty());
        let if_none_match = if_none_match.filter(|v| !v.trim().is_empty());
        Ok(Preconditions {
            if_match: if_match.map(|v| parse_condition("If-Match", v)).transpose()?,
            if_none_match: if_none_match.map(|v| parse_condition("If-None-Match", v)).transpose()?,
        })
    }

    /// Kinto's order (§3.3): `current` is the target's timestamp, `None` when it does not exist.
    pub fn evaluate(&self, current: Option<u64>, is_read: bool) -> Verdict {
        if is_read {
            if let (Some(Condition::Timestamp(v)), Some(cur)) = (self.if_none_match, current) {
                if v == cur {
                    return Verdict::NotModified;
                }
            }
        }
        if self.if_none_match == Some(Condition::Any) && current.is_some() {
            return Verdict::Failed;
        }
        match (self.if_match, current) {
            (Some(_), None) => Verdict::Failed,
            (Some(Condition::Timestamp(v)), Some(cur)) if v != cur => Verdict::Failed,
            _ => Verdict::Proceed,
        }
    }

    pub fn if_none_match_any(&self) -> bool {
        self.if_none_match == Some(Condition::Any)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResponseBehavior {
    #[default]
    Full,
    Light,
    Diff,
}

pub fn parse_response_behavior(value: Option<&str>) -> Result<ResponseBehavior, ApiError> {
    match value.map(str::trim) {
        None | Some("full") => Ok(ResponseBehavior::Full),
        Some("light") => Ok(ResponseBehavior::Light),
        Some("diff") => Ok(ResponseBehavior::Diff),
        Some(other) => Err(ApiError::invalid_one(
            Location::Header,
            Some("Response-Behavior"),
            format!("\"{other}\" is not one of full, light, diff"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_accept_star_and_quoted_integers_only() {
        assert_eq!(parse_condition("If-Match", "*").ok(), Some(Condition::Any));
        assert_eq!(parse_condition("If-Match", "\"42\"").ok(), Some(Condition::Timestamp(42)));
        for bad in ["42", "W/\"42\"", "\"4a\"", "\"1\", \"2\"", "\"\""] {
            let err = parse_condition("If-Match", bad).err().map(|e| e.message);
            assert_eq!(
                err,
                Some(Some("If-Match in header: The value should be integer between double quotes.".into()))
            );
        }
    }

    #[test]
    fn empty_headers_are_absent() {
        let p = Preconditions::parse(Some(""), Some(" ")).expect("empty headers");
        assert_eq!((p.if_match, p.if_none_match), (None, None));
    }

    #[test]
    fn evaluation_follows_kintos_order() {
        let p = |m, n| Preconditions { if_match: m, if_none_match: n };
        use Condition::*;
        assert_eq!(p(None, Some(Timestamp(5))).evaluate(Some(5), true), Verdict::NotModified);
        assert_eq!(p(None, Some(Any)).evaluate(Some(5), true), Verdict::Failed);
        assert_eq!(p(None, Some(Any)).evaluate(None, false), Verdict::Proceed);
        assert_eq!(p(Some(Any), None).evaluate(None, false), Verdict::Failed);
        assert_eq!(p(Some(Timestamp(4)), None).evaluate(Some(5), false), Verdict::Failed);
        assert_eq!(p(Some(Timestamp(5)), None).evaluate(Some(5), false), Verdict::Proceed);
        assert_eq!(p(None, Some(Timestamp(4))).evaluate(Some(5), false), Verdict::Proceed);
    }
}

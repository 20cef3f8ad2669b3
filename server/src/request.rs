//! A request as every handler sees it, whether it came over HTTP or from inside a batch.

use axum::http::{HeaderMap, Method};
use bytes::Bytes;

use crate::auth::Identity;

#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The path under the version prefix, as sent (still percent-encoded), e.g. `/buckets/b`.
    pub path: String,
    /// Percent-decoded path segments of `path`.
    pub segments: Vec<String>,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Absolute URL of the API root without trailing slash, e.g. `http://localhost:8888/v1`.
    pub base_url: String,
    pub identity: Identity,
    /// The client's address, when the request came over a socket (a batch's subrequests
    /// have their batch's).
    pub client: Option<std::net::IpAddr>,
}

impl ApiRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_read(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

/// Decodes a percent-encoded path and splits it into segments, as Pyramid routes Kinto's URLs
/// (an encoded `/` separates segments too); `None` when the path is not UTF-8.
pub fn decode_segments(path: &str) -> Option<Vec<String>> {
    let decoded = percent_decode(path)?;
    Some(decoded.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_then_split_as_pyramid_does() {
        assert_eq!(
            decode_segments("/buckets/a%2Fb"),
            Some(vec!["buckets".to_string(), "a".to_string(), "b".to_string()])
        );
        assert_eq!(decode_segments("/buckets/%C3%A9"), Some(vec!["buckets".to_string(), "é".to_string()]));
        assert_eq!(decode_segments("/buckets/%FF"), None);
        assert_eq!(decode_segments("/a%2"), Some(vec!["a%2".to_string()]));
    }
}

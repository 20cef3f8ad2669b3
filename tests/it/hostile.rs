//! Hostile input, as raw bytes over TCP: every case is refused with the right status (in Kinto's
//! JSON wherever the HTTP layer lets the request reach Tidemark), never a 5xx; the log is
//! unchanged after every refusal, and the server goes on serving.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Server;

const R: &str = "/v1/buckets/b/collections/c/records";
/// `alice:secret`
const AUTH: &str = "Authorization: Basic YWxpY2U6c2VjcmV0\r\n";

/// Who answers a case: Tidemark (Kinto JSON, an errno) or hyper's HTTP parser (a bare status).
#[derive(Clone, Copy, PartialEq, Debug)]
enum By {
    Kinto(u64),
    Http,
    /// Not refused: Kinto serves it too (and the log must not change either).
    Served,
}

struct Case {
    name: String,
    request: Vec<u8>,
    status: u16,
    by: By,
}

fn case(name: &str, request: impl Into<Vec<u8>>, status: u16, by: By) -> Case {
    Case { name: name.to_owned(), request: request.into(), status, by }
}

/// A request with `Connection: close`, our credentials and, if given, a JSON body.
fn http(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{AUTH}{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_put(path: &str, body: &str) -> Vec<u8> {
    http("PUT", path, "Content-Type: application/json\r\n", body.as_bytes())
}

fn cases() -> Vec<Case> {
    use By::*;
    let record = format!("{R}/x");
    let big = format!("{{\"data\": {{\"pad\": \"{}\"}}}}", "x".repeat(5000));
    let deep = format!("{{\"data\": {{\"a\": {}{}}}}}", "[".repeat(1500), "]".repeat(1500));
    let mut c = vec![
        // Bodies.
        case("body over the limit", json_put(&record, &big), 413, Kinto(113)),
        case("not JSON", json_put(&record, "{data"), 400, Kinto(107)),
        case("JSON but an array", json_put(&record, "[]"), 400, Kinto(107)),
        case("JSON but a string", json_put(&record, "\"x\""), 400, Kinto(107)),
        case("data not an object", json_put(&record, r#"{"data": [1]}"#), 400, Kinto(107)),
        case("data a string", json_put(&record, r#"{"data": "x"}"#), 400, Kinto(107)),
        case("nesting 1,500 deep", json_put(&record, &deep), 400, Kinto(107)),
        case("number out of range", json_put(&record, r#"{"data": {"n": 1e400}}"#), 400, Kinto(107)),
        case("bad UTF-8 in the body", http("PUT", &record, "Content-Type: application/json\r\n", b"{\"data\": {\"s\": \"\xff\xfe\"}}"), 400, Kinto(107)),
        case("trailing garbage after JSON", json_put(&record, r#"{"data": {}} x"#), 400, Kinto(107)),
        case("permissions not lists", json_put(&record, r#"{"permissions": {"read": "bob"}}"#), 400, Kinto(107)),
        case("unknown permission", json_put(&record, r#"{"permissions": {"own": ["bob"]}}"#), 400, Kinto(107)),
        case("id in body differs", json_put(&record, r#"{"data": {"id": "y"}}"#), 400, Kinto(107)),
        // Kinto itself answers this one with a 500.
        case("DELETE with last_modified not a number", http("DELETE", &format!("{R}/r0?last_modified=soon"), "", b""), 400, Kinto(107)),
        case("text/plain body", http("PUT", &record, "Content-Type: text/plain\r\n", b"{}"), 415, Kinto(107)),
        case("form body", http("POST", R, "Content-Type: application/x-www-form-urlencoded\r\n", b"a=b"), 415, Kinto(107)),
        case("merge patch not an object", http("PATCH", &format!("{R}/r0"), "Content-Type: application/merge-patch+json\r\n", b"[1]"), 400, Kinto(107)),
        case("JSON patch not a list", http("PATCH", &format!("{R}/r0"), "Content-Type: application/json-patch+json\r\n", b"{\"op\": \"add\"}"), 400, Kinto(107)),
        case("JSON patch unknown op", http("PATCH", &format!("{R}/r0"), "Content-Type: application/json-patch+json\r\n", br#"[{"op": "explode", "path": "/data/a"}]"#), 400, Kinto(107)),
        case("JSON patch bad path", http("PATCH", &format!("{R}/r0"), "Content-Type: application/json-patch+json\r\n", br#"[{"op": "remove", "path": "/data/nope"}]"#), 400, Kinto(107)),
        case("JSON patch test fails", http("PATCH", &format!("{R}/r0"), "Content-Type: application/json-patch+json\r\n", br#"[{"op": "test", "path": "/data/n", "value": 99}]"#), 400, Kinto(107)),
        // Batches.
        case("batch body not an object", http("POST", "/v1/batch", "Content-Type: application/json\r\n", b"[]"), 400, Kinto(107)),
        case("batch requests not a list", http("POST", "/v1/batch", "Content-Type: application/json\r\n", br#"{"requests": {}}"#), 400, Kinto(107)),
        case("batch of 26", http("POST", "/v1/batch", "Content-Type: application/json\r\n", batch_of(26).as_bytes()), 400, Kinto(107)),
        case("batch subrequest without path", http("POST", "/v1/batch", "Content-Type: application/json\r\n", br#"{"requests": [{"method": "GET"}]}"#), 400, Kinto(107)),
        case("batch subrequest bad method", http("POST", "/v1/batch", "Content-Type: application/json\r\n", br#"{"requests": [{"method": "BREW", "path": "/buckets"}]}"#), 400, Kinto(107)),
        case("batch in a batch", http("POST", "/v1/batch", "Content-Type: application/json\r\n", br#"{"requests": [{"method": "POST", "path": "/batch", "body": {"requests": []}}]}"#), 400, Kinto(107)),
        case("batch defaults not an object", http("POST", "/v1/batch", "Content-Type: application/json\r\n", br#"{"defaults": 3, "requests": []}"#), 400, Kinto(107)),
        // Query strings.
        case("_limit not a number", http("GET", &format!("{R}?_limit=many"), "", b""), 400, Kinto(107)),
        case("_limit negative", http("GET", &format!("{R}?_limit=-1"), "", b""), 400, Kinto(107)),
        case("_since not a number", http("GET", &format!("{R}?_since=yesterday"), "", b""), 400, Kinto(107)),
        case("_before not a number", http("GET", &format!("{R}?_before=later"), "", b""), 400, Kinto(107)),
        case("_token garbage", http("GET", &format!("{R}?_token=%%%garbage"), "", b""), 400, Kinto(107)),
        case("_token not base64 JSON", http("GET", &format!("{R}?_token=bm90IGpzb24="), "", b""), 400, Kinto(107)),
        case("_at garbage", http("GET", &format!("{R}?_at=then"), "", b""), 400, Kinto(107)),
        case("has_ not a boolean (truthy, as Kinto)", http("GET", &format!("{R}?has_n=maybe"), "", b""), 200, Served),
        case("min_ on last_modified not a number", http("GET", &format!("{R}?min_last_modified=x"), "", b""), 400, Kinto(107)),
        case("bad percent-encoding in the query (literal, as Kinto)", http("GET", &format!("{R}?n=%ZZ"), "", b""), 200, Served),
        case("history filter on an unknown field", http("GET", "/v1/buckets/b/history?color=red", "", b""), 400, Kinto(107)),
        case("plural DELETE with bad _limit", http("DELETE", &format!("{R}?_limit=x"), "", b""), 400, Kinto(107)),
        // Paths and ids.
        case("id with a star", json_put(&format!("{R}/a*b"), "{}"), 400, Kinto(107)),
        case("id with NUL", json_put(&format!("{R}/a%00b"), "{}"), 400, Kinto(107)),
        case("id of 1,000 characters", json_put(&format!("{R}/{}", "a".repeat(1000)), "{}"), 400, Kinto(107)),
        case("bad UTF-8 in the path", http("GET", &format!("{R}/%FF%FE"), "", b""), 400, Kinto(107)),
        case("bad percent-encoding in the path", http("GET", &format!("{R}/%G1"), "", b""), 400, Kinto(107)),
        case("dot segments", http("GET", "/v1/buckets/b/../../etc/passwd", "", b""), 404, Kinto(111)),
        case("unknown resource", http("GET", "/v1/buckets/b/widgets", "", b""), 404, Kinto(111)),
        case("too deep", http("GET", &format!("{R}/r0/more"), "", b""), 404, Kinto(111)),
        case("unknown version", http("GET", "/v2/buckets", "", b""), 404, Kinto(116)),
        case("unknown method", http("BREW", &format!("{R}/r0"), "", b""), 405, Kinto(115)),
        case("POST on an object", json_put(&format!("{R}/r0"), "{}").iter().copied().skip(3).fold(b"POST".to_vec(), |mut v, b| { v.push(b); v }), 405, Kinto(115)),
        // Headers.
        case("If-Match garbage", http("GET", &format!("{R}/r0"), "If-Match: garbage\r\n", b""), 400, Kinto(107)),
        case("If-None-Match garbage", http("GET", &format!("{R}/r0"), "If-None-Match: W/\"1\"\r\n", b""), 400, Kinto(107)),
        case("If-Match stale", http("DELETE", &format!("{R}/r0"), "If-Match: \"1\"\r\n", b""), 412, Kinto(114)),
        case("Accept an image", http("GET", &format!("{R}/r0"), "Accept: image/png\r\n", b""), 406, Kinto(107)),
        case("Basic auth not base64", b"GET /v1/buckets HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic !!!\r\n\r\n".to_vec(), 401, Kinto(104)),
        case("Basic auth without a colon", b"GET /v1/buckets/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic YWxpY2U=\r\n\r\n".to_vec(), 401, Kinto(104)),
        case("unknown auth scheme", b"GET /v1/buckets/b HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Negotiate abc\r\n\r\n".to_vec(), 401, Kinto(104)),
        case("Origin not a URL with CORS on", http("OPTIONS", R, "Origin: \r\n", b""), 400, Kinto(107)),
        case("preflight without a method", http("OPTIONS", R, "Origin: http://x\r\n", b""), 400, Kinto(107)),
        // The HTTP layer itself.
        case("huge header", format!("GET {R} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "a".repeat(1_000_000)), 431, Http),
        case("200 headers", format!("GET {R} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n", (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()), 431, Http),
        case("huge URL", format!("GET {R}/{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "a".repeat(200_000)), 414, Http),
        case("not HTTP at all", b"HELLO THERE\r\n\r\n".to_vec(), 400, Http),
        case("Content-Length not a number", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: ten\r\n\r\n"), 400, Http),
        case("two different Content-Lengths", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"), 400, Http),
        // RFC 9112: chunked wins over a Content-Length; then the missing credentials.
        case("Content-Length and chunked", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 401, Kinto(104)),
        case("bad chunk size", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{{}}\r\n0\r\n\r\n"), 400, Kinto(107)),
        case("chunked body past the limit", {
            let mut out = format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
            for _ in 0..10 { out.extend_from_slice(format!("400\r\n{}\r\n", "a".repeat(1024)).as_bytes()); }
            out
        }, 413, Kinto(113)),
        case("Content-Length larger than the body", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{AUTH}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{}}"), 408, Kinto(999)),
        case("declared Content-Length over the limit", format!("PUT {R}/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{AUTH}Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{{}}"), 413, Kinto(113)),
    ];
    // Every write endpoint with a body that is not JSON.
    for (method, path) in [
        ("PUT", "/v1/buckets/b".to_owned()),
        ("PATCH", "/v1/buckets/b".to_owned()),
        ("PUT", "/v1/buckets/b/collections/c".to_owned()),
        ("PATCH", "/v1/buckets/b/collections/c".to_owned()),
        ("POST", "/v1/buckets/b/collections".to_owned()),
        ("PUT", "/v1/buckets/b/groups/g".to_owned()),
        ("POST", "/v1/buckets/b/groups".to_owned()),
        ("POST", R.to_owned()),
        ("PATCH", format!("{R}/r0")),
        ("POST", "/v1/buckets".to_owned()),
    ] {
        c.push(case(
            &format!("{method} {path} with a broken body"),
            http(method, &path, "Content-Type: application/json\r\n", b"{\"data\": "),
            400,
            By::Kinto(107),
        ));
    }
    // Groups whose members are not principals.
    for members in [r#""bob""#, "[1, 2]", "[null]", r#"{"a": 1}"#] {
        c.push(case(
            &format!("group members {members}"),
            json_put("/v1/buckets/b/groups/g", &format!(r#"{{"data": {{"members": {members}}}}}"#)),
            400,
            By::Kinto(107),
        ));
    }
    c
}

fn batch_of(n: usize) -> String {
    let requests: Vec<String> =
        (0..n).map(|i| format!(r#"{{"method": "GET", "path": "/buckets/b/collections/c/records/r{i}"}}"#)).collect();
    format!(r#"{{"requests": [{}]}}"#, requests.join(","))
}

/// Sends raw bytes, returns the status and the body (an empty status when the server closed
/// the connection without an answer).
async fn send(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Value, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading everything: a write error is fine.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null), text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn hostile_requests_are_refused_and_change_nothing() {
    let s = Server::start_with(&[
        ("max_body_bytes", "4096"),
        ("body_read_timeout_seconds", "1"),
        ("includes", "kinto.plugins.history"),
    ])
    .await;
    s.seed().await;
    assert_eq!(
        s.put("/buckets/b/collections/c/records/r0", Some(crate::common::ALICE), serde_json::json!({"data": {"n": 1}}))
            .await
            .status,
        201
    );
    let head = || async { s.get("/__heartbeat__", None).await.body["engine"]["head_seq"].as_u64().expect("head") };
    let before = head().await;
    let cases = cases();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (status, body, line) = send(s.addr, &case.request).await;
        let shaped = body["code"].as_u64() == Some(u64::from(status)) && body["error"].is_string();
        let ok = status == case.status
            && match case.by {
                By::Kinto(errno) => shaped && body["errno"].as_u64() == Some(errno),
                By::Http | By::Served => true,
            };
        if !ok || status >= 500 {
            failures.push(format!("{}: expected {} {:?}, got {line} {body}", case.name, case.status, case.by));
        }
        if head().await != before {
            failures.push(format!("{}: the log changed", case.name));
            break;
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(
        s.get("/buckets/b/collections/c/records/r0", Some(crate::common::ALICE)).await.body["data"]["n"],
        1,
        "still serving"
    );
    s.stop().await;
}

//! Bad input: every failure is Kinto JSON, never a 500, and never changes the log.

use serde_json::json;

use crate::common::{Server, ALICE};

const R: &str = "/buckets/b/collections/c/records";

#[tokio::test]
async fn invalid_ids_in_the_path_are_400_invalid_object_id() {
    let s = Server::start().await;
    s.seed().await;
    let long = "a".repeat(1000);
    for id in ["in*valid", "a%00b", "%C3%A9", long.as_str()] {
        let r = s.put(&format!("{R}/{id}"), Some(ALICE), json!({})).await;
        assert_eq!(r.status, 400, "{id}");
        assert_eq!(r.errno(), 107);
        assert_eq!(r.body["message"], "path: Invalid object id");
        assert_eq!(r.body["details"][0], json!({"location": "path", "name": null, "description": "Invalid object id"}));
    }
    // An encoded `/` separates segments, as Pyramid routes Kinto's URLs: no such endpoint.
    let split = s.put(&format!("{R}/a%2Fb"), Some(ALICE), json!({})).await;
    assert_eq!((split.status.as_u16(), split.errno()), (404, 111));
    // A 300-character id is fine, as in Kinto.
    assert_eq!(s.put(&format!("{R}/{}", "b".repeat(300)), Some(ALICE), json!({})).await.status, 201);
    let post = s.post(R, Some(ALICE), json!({"data": {"id": "in*valid"}})).await;
    assert_eq!(post.body["message"], "path: Invalid object id");
    // A parent with an invalid id is a missing parent: a missing bucket is a denial (Kinto).
    let parent = s.get("/buckets/in*valid/collections", Some(ALICE)).await;
    assert_eq!(parent.status, 403);
    assert_eq!(parent.errno(), 121);
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_bodies_are_400_and_leave_no_trace() {
    let s = Server::start().await;
    s.seed().await;
    let before = s.get(R, Some(ALICE)).await.etag();
    let nested = "[".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        b"{bad".to_vec(),
        b"{\"data\": {}} trailing".to_vec(),
        vec![0xff, 0xfe, 0x7b],
        b"{\"data\": {\"s\": \"\xff\"}}".to_vec(),
        nested.into_bytes(),
        b"{\"data\": NaN}".to_vec(),
    ];
    for body in bodies {
        let r =
            s.raw("PUT", &format!("{R}/r1"), Some(ALICE), body.clone(), &[("Content-Type", "application/json")]).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&body));
        assert_eq!(r.errno(), 107);
        assert!(r.body["message"].as_str().unwrap_or_default().contains("Invalid JSON"));
    }
    let shapes =
        [json!([1, 2]), json!({"data": [1]}), json!({"data": {}, "foo": 1}), json!({"permissions": {"read": "abc"}})];
    for body in shapes {
        let r = s.put(&format!("{R}/r1"), Some(ALICE), body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.errno(), 107);
    }
    assert_eq!(s.get(R, Some(ALICE)).await.etag(), before, "rejected requests never change the log");
    assert_eq!(s.get(&format!("{R}/r1"), Some(ALICE)).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_in_kinto_json() {
    let s = Server::start_with(&[("max_body_bytes", "1024")]).await;
    s.seed().await;
    let big = json!({"data": {"s": "x".repeat(4096)}});
    let r = s.put(&format!("{R}/big"), Some(ALICE), big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.errno(), 113);
    assert_eq!(r.body["code"], 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    s.stop().await;
}

#[tokio::test]
async fn negotiation_errors_are_406_and_415() {
    let s = Server::start().await;
    s.seed().await;
    let html = s.call("GET", "/buckets", Some(ALICE), None, &[("Accept", "text/html")]).await;
    assert_eq!(html.status, 406);
    assert_eq!(html.errno(), 107);
    assert_eq!(html.body["details"][0]["name"], "Accept");
    let fine = s.call("GET", "/buckets", Some(ALICE), None, &[("Accept", "text/html,application/json;q=0.9")]).await;
    assert_eq!(fine.status, 200);
    let text = s.raw("PUT", "/buckets/x", Some(ALICE), b"{}".to_vec(), &[("Content-Type", "text/plain")]).await;
    assert_eq!(text.status, 415);
    assert_eq!(text.body["details"][0]["name"], "Content-Type");
    let none = s.raw("PUT", "/buckets/x", Some(ALICE), b"{}".to_vec(), &[]).await;
    assert_eq!(none.status, 201, "a missing Content-Type is accepted");
    s.stop().await;
}

#[tokio::test]
async fn unknown_urls_methods_and_versions() {
    let s = Server::start().await;
    let nope = s.get("/nope", Some(ALICE)).await;
    assert_eq!(nope.status, 404);
    assert_eq!(nope.body["message"], "The resource you are looking for could not be found.");
    assert_eq!(nope.errno(), 111);
    let patch = s.patch("/buckets", Some(ALICE), json!({})).await;
    assert_eq!(patch.status, 405);
    assert_eq!(patch.errno(), 115);
    assert_eq!(patch.header("allow"), Some("HEAD, GET, POST, DELETE, OPTIONS"));
    let post = s.post("/buckets/b", Some(ALICE), json!({})).await;
    assert_eq!(post.header("allow"), Some("GET, HEAD, PUT, PATCH, DELETE, OPTIONS"));
    let v2 = s.get(&format!("http://{}/v2/buckets", s.addr), None).await;
    assert_eq!(v2.status, 404);
    assert_eq!(v2.errno(), 116);
    let bad_utf8 = s.raw("GET", "/buckets/%FF", Some(ALICE), Vec::new(), &[]).await;
    assert_eq!(bad_utf8.status, 400);
    assert_eq!(bad_utf8.body["message"], "Invalid URL path.");
    s.stop().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let s = Server::start().await;
    for path in ["/", "/buckets", "/nope"] {
        let r = s.get(path, None).await;
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(r.header("content-security-policy").is_some_and(|v| v.starts_with("default-src 'none'")));
        assert!(r.header("access-control-expose-headers").is_some());
    }
    s.stop().await;
}

/// Slow-header clients (one header byte per second, for ever) are cut off by the header-read
/// timeout while ordinary requests keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_are_dropped_and_others_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start_with(&[("header_read_timeout_seconds", "2")]).await;
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let addr = s.addr;
        slow.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = b"GET /v1/ HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let mut sent = 0;
            loop {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if socket.write_all(&[byte]).await.is_err() {
                    return started.elapsed();
                }
                sent += 1;
                // A closed connection reads as EOF (or an error) within the next second.
                let mut buffer = [0u8; 256];
                match tokio::time::timeout(std::time::Duration::from_secs(1), socket.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                    Ok(Ok(_)) | Err(_) => {}
                }
                if started.elapsed() > std::time::Duration::from_secs(20) {
                    panic!("a slow client held its connection for 20 s");
                }
            }
        }));
    }
    // Meanwhile, the server serves everyone else.
    for _ in 0..20 {
        assert_eq!(s.get("/", None).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for client in slow {
        let dropped_after = client.await.expect("slow client");
        assert!(dropped_after < std::time::Duration::from_secs(6), "dropped after {dropped_after:?}");
    }
    s.stop().await;
}

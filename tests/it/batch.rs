//! `POST /v1/batch`.

use serde_json::json;

use crate::common::{Server, ALICE};

#[tokio::test]
async fn batch_applies_defaults_and_answers_in_order() {
    let s = Server::start().await;
    let body = json!({"defaults": {"method": "PUT"}, "requests": [
        {"path": "/buckets/bb"},
        {"method": "GET", "path": "/buckets/bb"},
        {"path": "/v1/buckets/bb/collections/c?x=1", "body": {"data": {"title": "t"}}},
        {"method": "GET", "path": "/buckets/missing"},
    ]});
    let r = s.post("/batch", Some(ALICE), body).await;
    assert_eq!(r.status, 200);
    let responses = r.body["responses"].as_array().cloned().unwrap_or_default();
    assert_eq!(responses.len(), 4);
    assert_eq!(responses[0]["status"], 201);
    assert_eq!(responses[0]["path"], "/v1/buckets/bb");
    assert!(responses[0]["headers"]["ETag"].is_string());
    assert_eq!(responses[1]["status"], 200);
    assert_eq!(responses[1]["body"]["data"]["id"], "bb");
    assert_eq!(responses[2]["status"], 201);
    assert_eq!(responses[2]["path"], "/v1/buckets/bb/collections/c");
    assert_eq!(responses[2]["body"]["data"]["title"], "t");
    assert_eq!(responses[3]["status"], 403);
    assert_eq!(responses[3]["body"]["errno"], 121);
    s.stop().await;
}

#[tokio::test]
async fn subresponses_carry_kintos_length_and_security_headers() {
    let s = Server::start().await;
    let body = json!({"requests": [
        {"method": "PUT", "path": "/buckets/hh", "body": {"data": {"é": "\"q\" /"}}},
        {"method": "HEAD", "path": "/buckets/hh"},
        {"method": "GET", "path": "/buckets/missing"},
    ]});
    let r = s.post("/batch", Some(ALICE), body).await;
    let responses = r.body["responses"].as_array().cloned().unwrap_or_default();
    assert_eq!(responses.len(), 3);
    // Content-Length is the compact, ASCII-escaped JSON body's length, as Kinto renders it.
    let created = &responses[0];
    let rendered = serde_json::to_string(&created["body"]).unwrap_or_default();
    let escaped: usize = rendered.chars().map(|c| if c.is_ascii() { 1 } else { 6 }).sum();
    assert_eq!(created["headers"]["Content-Length"], escaped.to_string());
    assert_eq!(created["headers"]["X-Content-Type-Options"], "nosniff");
    assert!(created["headers"]["Content-Security-Policy"].as_str().is_some_and(|v| v.contains("default-src 'none'")));
    // A HEAD has an empty body but the length of what a GET would send.
    assert_eq!(responses[1]["body"], "");
    assert_eq!(responses[1]["headers"]["Content-Length"], created["headers"]["Content-Length"]);
    // Errors carry their length, not the security headers (as in Kinto).
    let error = &responses[2];
    assert_eq!(error["status"], 403);
    let length = serde_json::to_string(&error["body"]).map(|t| t.len()).unwrap_or_default();
    assert_eq!(error["headers"]["Content-Length"], length.to_string());
    assert!(error["headers"].get("X-Content-Type-Options").is_none());
    s.stop().await;
}

#[tokio::test]
async fn batch_validation_errors() {
    let s = Server::start().await;
    let too_many: Vec<_> = (0..26).map(|_| json!({"path": "/buckets"})).collect();
    let r = s.post("/batch", Some(ALICE), json!({"requests": too_many})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], "Number of requests is limited to 25");
    let recursive = s.post("/batch", Some(ALICE), json!({"requests": [{"path": "/batch"}]})).await;
    assert_eq!(recursive.body["message"], "requests in body: Recursive call on /batch endpoint is forbidden.");
    let extra = s.post("/batch", Some(ALICE), json!({"requests": [{"path": "/buckets", "foo": 1}]})).await;
    assert_eq!(extra.status, 400);
    assert_eq!(extra.body["details"][0]["name"], "requests.0");
    let relative = s.post("/batch", Some(ALICE), json!({"requests": [{"path": "buckets"}]})).await;
    assert_eq!(relative.status, 400);
    let empty = s.post("/batch", Some(ALICE), json!({"requests": []})).await;
    assert_eq!(empty.body, json!({"responses": []}));
    s.stop().await;
}

#[tokio::test]
async fn batch_subrequests_without_credentials_are_401_inline() {
    let s = Server::start().await;
    let r = s.post("/batch", None, json!({"requests": [{"method": "PUT", "path": "/buckets/x"}]})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["responses"][0]["status"], 401);
    assert_eq!(r.body["responses"][0]["body"]["errno"], 104);
    s.stop().await;
}

#[tokio::test]
async fn a_conflict_inside_a_batch_rolls_back_every_write_of_the_batch() {
    let s = Server::start().await;
    s.seed().await;
    let before = s.get("/buckets/b/collections/c/records", Some(ALICE)).await.etag();
    let body = json!({"requests": [
        {"method": "PUT", "path": "/buckets/b/collections/c/records/r1", "body": {"data": {"last_modified": 1_000_000_000_000u64}}},
        {"method": "PUT", "path": "/buckets/b/collections/c/records/r2", "body": {"data": {"last_modified": 1_000_000_000_000u64}}},
    ]});
    let r = s.post("/batch", Some(ALICE), body).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.errno(), 122);
    assert_eq!(s.get("/buckets/b/collections/c/records/r1", Some(ALICE)).await.status, 404, "r1 was rolled back");
    assert_eq!(s.get("/buckets/b/collections/c/records", Some(ALICE)).await.etag(), before);
    s.stop().await;
}

#[tokio::test]
async fn batch_writes_see_each_other_and_commit_together() {
    let s = Server::start().await;
    let body = json!({"defaults": {"method": "PUT"}, "requests": [
        {"path": "/buckets/t"},
        {"path": "/buckets/t/collections/c"},
        {"path": "/buckets/t/collections/c/records/r1", "body": {"data": {"n": 1}}},
        {"method": "PATCH", "path": "/buckets/t/collections/c/records/r1", "body": {"data": {"m": 2}}},
        {"method": "GET", "path": "/buckets/t/collections/c/records/r1"},
        {"method": "PUT", "path": "/buckets/t/collections/c/records/r2", "headers": {"If-Match": "\"1\""}},
    ]});
    let r = s.post("/batch", Some(ALICE), body).await;
    let statuses: Vec<u64> =
        r.body["responses"].as_array().into_iter().flatten().filter_map(|x| x["status"].as_u64()).collect();
    assert_eq!(statuses, vec![201, 201, 201, 200, 200, 412], "a failed precondition is reported inline");
    assert_eq!(r.body["responses"][4]["body"]["data"]["m"], 2);
    let stored = s.get("/buckets/t/collections/c/records/r1", Some(ALICE)).await;
    assert_eq!(
        stored.body["data"], r.body["responses"][4]["body"]["data"],
        "what the batch answered is what was committed"
    );
    s.stop().await;
}

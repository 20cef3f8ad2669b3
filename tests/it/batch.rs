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

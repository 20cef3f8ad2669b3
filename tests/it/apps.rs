//! Application contexts: `Kinto-App-Id` (and `Kinto-App-Env`) select a namespace of buckets of
//! their own, isolated in storage, permissions, history and streams.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{user_id, Reply, Server, ALICE, BOB};

async fn as_app(s: &Server, app: Option<&str>, method: &str, path: &str, auth: &str, body: Option<Value>) -> Reply {
    let mut headers = Vec::new();
    if let Some(app) = app {
        headers.push(("Kinto-App-Id", app));
    }
    s.call(method, path, Some(auth), body, &headers).await
}

#[tokio::test]
async fn two_apps_with_the_same_bucket_name_never_see_each_other() {
    let s = Server::start_with(&[("includes", "kinto.plugins.history"), ("experimental_permissions_endpoint", "true")])
        .await;
    for app in [Some("notes"), Some("todo"), None] {
        let tag = app.unwrap_or("default");
        assert_eq!(as_app(&s, app, "PUT", "/buckets/b", ALICE, Some(json!({}))).await.status, 201, "{tag}");
        assert_eq!(as_app(&s, app, "PUT", "/buckets/b/collections/c", ALICE, Some(json!({}))).await.status, 201);
        let record = json!({"data": {"app": tag}});
        assert_eq!(as_app(&s, app, "PUT", "/buckets/b/collections/c/records/r", ALICE, Some(record)).await.status, 201);
    }
    for app in [Some("notes"), Some("todo"), None] {
        let tag = app.unwrap_or("default");
        let records = as_app(&s, app, "GET", "/buckets/b/collections/c/records", ALICE, None).await;
        assert_eq!(
            records.body["data"],
            json!([{"app": tag, "id": "r", "last_modified": records.body["data"][0]["last_modified"]}])
        );
        let history = as_app(&s, app, "GET", "/buckets/b/history", ALICE, None).await;
        assert_eq!(history.body["data"].as_array().map(Vec::len), Some(3), "{tag}: its own three changes");
        assert_eq!(history.body["data"][0]["context"]["app_id"], json!(app), "{tag}");
        assert!(history.body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["uri"].as_str().is_some_and(|u| u.starts_with("/buckets/b"))));
        let permissions = as_app(&s, app, "GET", "/permissions", ALICE, None).await;
        let uris: Vec<&str> =
            permissions.body["data"].as_array().into_iter().flatten().filter_map(|e| e["uri"].as_str()).collect();
        assert!(uris.contains(&"/buckets/b/collections/c/records/r") && uris.len() <= 4, "{tag}: {uris:?}");
    }
    // Another environment of the same app is another namespace too.
    let staging = s
        .call("GET", "/buckets/b", Some(ALICE), None, &[("Kinto-App-Id", "notes"), ("Kinto-App-Env", "staging")])
        .await;
    assert_eq!(staging.status, 403, "no bucket b in notes/staging");
    let bad = s.call("GET", "/buckets", Some(ALICE), None, &[("Kinto-App-Id", "no/such app")]).await;
    assert_eq!((bad.status.as_u16(), bad.errno()), (400, 107));
    s.stop().await;
}

#[tokio::test]
async fn group_principals_belong_to_their_app() {
    let s = Server::start().await;
    for app in ["notes", "todo"] {
        as_app(&s, Some(app), "PUT", "/buckets/b", ALICE, Some(json!({}))).await;
    }
    // In notes, Bob is in group g, which may read bucket b; in todo, g exists without him.
    let members = json!({"data": {"members": [user_id(BOB)]}});
    as_app(&s, Some("notes"), "PUT", "/buckets/b/groups/g", ALICE, Some(members)).await;
    as_app(&s, Some("todo"), "PUT", "/buckets/b/groups/g", ALICE, Some(json!({"data": {"members": []}}))).await;
    for app in ["notes", "todo"] {
        let grant = json!({"permissions": {"read": ["/buckets/b/groups/g"]}});
        let granted = as_app(&s, Some(app), "PATCH", "/buckets/b", ALICE, Some(grant)).await;
        assert_eq!(granted.body["permissions"]["read"], json!(["/buckets/b/groups/g"]), "shown as the client wrote it");
    }
    assert_eq!(as_app(&s, Some("notes"), "GET", "/buckets/b", BOB, None).await.status, 200);
    assert_eq!(as_app(&s, Some("todo"), "GET", "/buckets/b", BOB, None).await.status, 403);
    let hello = as_app(&s, Some("notes"), "GET", "/", BOB, None).await;
    assert!(hello.body["user"]["principals"].as_array().expect("principals").contains(&json!("/buckets/b/groups/g")));
    let elsewhere = as_app(&s, Some("todo"), "GET", "/", BOB, None).await;
    assert!(!elsewhere.body["user"]["principals"].to_string().contains("groups"), "{}", elsewhere.body);
    s.stop().await;
}

#[tokio::test]
async fn streams_carry_only_their_apps_changes() {
    let s = Server::start().await;
    let mut request = format!("ws://{}/v1/ws", s.addr).into_client_request().expect("request");
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ALICE);
    request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
    request.headers_mut().insert("Kinto-App-Id", "notes".parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let subscribe = json!({"type": "subscribe", "id": "s", "filter": {"bucket": "b"}, "since": "now"});
    socket.send(Message::Text(subscribe.to_string().into())).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;
    as_app(&s, Some("todo"), "PUT", "/buckets/b", ALICE, Some(json!({"data": {"app": "todo"}}))).await;
    as_app(&s, None, "PUT", "/buckets/b", ALICE, Some(json!({"data": {"app": "default"}}))).await;
    as_app(&s, Some("notes"), "PUT", "/buckets/b", ALICE, Some(json!({"data": {"app": "notes"}}))).await;
    let mut changes = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        let frame: Value = serde_json::from_str(&text).expect("json");
        if frame["type"] == "change" {
            changes.push(frame);
        }
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["data"]["app"], "notes");
    assert_eq!(changes[0]["uri"], "/buckets/b");
    s.stop().await;
}

#[tokio::test]
async fn settings_can_require_an_app_and_list_the_allowed_ones() {
    let s = Server::start_with(&[("app_id_required", "true"), ("app_ids", "notes todo")]).await;
    let missing = s.get("/buckets", Some(ALICE)).await;
    assert_eq!((missing.status.as_u16(), missing.errno()), (400, 107));
    assert_eq!(missing.body["details"][0]["name"], "Kinto-App-Id");
    let unknown = s.call("GET", "/buckets", Some(ALICE), None, &[("Kinto-App-Id", "games")]).await;
    assert_eq!(unknown.status, 400);
    let known = s.call("GET", "/buckets", Some(ALICE), None, &[("Kinto-App-Id", "todo")]).await;
    assert_eq!(known.status, 200);
    s.stop().await;
}

//! Durability over HTTP: the real binary, 8 concurrent writers, `kill -9`, restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::common::{spawn_binary, ALICE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("tidemark.ini");
    std::fs::write(
        &ini,
        "[app:main]\nkinto.userid_hmac_secret = s3cret\nmultiauth.policies = basicauth\nkinto.bucket_create_principals = system.Authenticated\n",
    )
    .expect("ini");
    let data = dir.path().join("data");
    let mut server = spawn_binary(&data, &ini, None).await;
    let client = reqwest::Client::new();
    let (user, password) = ALICE.split_once(':').unwrap_or_default();
    for path in ["/buckets/b", "/buckets/b/collections/c"] {
        let r =
            client.put(format!("{}{path}", server.base)).basic_auth(user, Some(password)).send().await.expect("seed");
        assert!(r.status().is_success());
    }

    let acked: Arc<Mutex<HashMap<String, (u64, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), server.base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}-{i}");
                let url = format!("{base}/buckets/b/collections/c/records/{id}");
                let sent =
                    client.put(url).basic_auth("alice", Some("secret")).json(&json!({"data": {"n": i}})).send().await;
                let Ok(response) = sent else { break };
                if !response.status().is_success() {
                    break;
                }
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim_matches('"').parse().ok());
                let Ok(body) = response.json::<serde_json::Value>().await else { break };
                if let Some(etag) = etag {
                    acked.lock().await.insert(id, (etag, i));
                }
                let _ = body;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    for writer in writers {
        let _ = writer.await;
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 50, "only {} writes were acknowledged", acked.len());

    let mut restarted = spawn_binary(&data, &ini, None).await;
    for (id, (etag, n)) in &acked {
        let url = format!("{}/buckets/b/collections/c/records/{id}", restarted.base);
        let r = client.get(url).basic_auth(user, Some(password)).send().await.expect("get");
        assert_eq!(r.status(), 200, "acknowledged write {id} is missing after kill -9");
        let got = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(got, format!("\"{etag}\""), "{id}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["data"]["n"], *n);
    }
    let _ = restarted.child.kill();
    let _ = restarted.child.wait();
}

/// SIGTERM during writes: in-flight writes finish, nothing acknowledged is lost, the process
/// exits cleanly, and a stream gets a "going away" close frame whose cursor resumes it on the
/// restarted server with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_writes_and_closes_streams_with_their_cursor() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("tidemark.ini");
    std::fs::write(&ini, "[app:main]\nkinto.userid_hmac_secret = s3cret\nmultiauth.policies = basicauth\n")
        .expect("ini");
    let data = dir.path().join("data");
    let mut server = spawn_binary(&data, &ini, None).await;
    let client = reqwest::Client::new();
    for path in ["/buckets/b", "/buckets/b/collections/c"] {
        let r = client
            .put(format!("{}{path}", server.base))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .expect("seed");
        assert!(r.status().is_success());
    }
    let connect = |base: String| async move {
        let mut request =
            format!("{}/ws", base.replacen("http://", "ws://", 1)).into_client_request().expect("request");
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ALICE);
        request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
        tokio_tungstenite::connect_async(request).await.expect("connect").0
    };
    let mut socket = connect(server.base.clone()).await;
    let filter = json!({"bucket": "b", "collection": "c"});
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "id": "s", "filter": filter, "since": "now"}).to_string().into(),
        ))
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base, acked) = (client.clone(), server.base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let id = format!("w{w}-{i}");
                let url = format!("{base}/buckets/b/collections/c/records/{id}");
                match client.put(url).basic_auth("alice", Some("secret")).json(&json!({"data": {}})).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().await.push(id),
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());

    // The stream: changes, then a 1001 close frame naming the cursor to resume from.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match message {
            Message::Text(text) => {
                let frame: serde_json::Value = serde_json::from_str(&text).expect("json");
                if frame["type"] == "change" {
                    assert!(seen.insert(frame["id"].as_str().unwrap_or_default().to_owned()), "no duplicate");
                }
            }
            Message::Close(Some(close)) => {
                assert_eq!(u16::from(close.code), 1001, "going away");
                cursor = Some(close.reason.to_string());
                break;
            }
            _ => {}
        }
    }
    let cursor = cursor.expect("a close frame with the cursor");
    for writer in writers {
        let _ = writer.await;
    }
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server stops");
    assert!(status.success(), "a clean exit: {status:?}");

    // Restarted: every acknowledged write is there, and the stream resumes where it closed.
    let mut server = spawn_binary(&data, &ini, None).await;
    let acked = acked.lock().await.clone();
    assert!(!acked.is_empty());
    for id in &acked {
        let url = format!("{}/buckets/b/collections/c/records/{id}", server.base);
        let r = client.get(url).basic_auth("alice", Some("secret")).send().await.expect("get");
        assert_eq!(r.status(), 200, "{id} was acknowledged");
    }
    let mut socket = connect(server.base.clone()).await;
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "id": "s", "filter": filter, "since": cursor}).to_string().into(),
        ))
        .await
        .expect("resume");
    while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        let frame: serde_json::Value = serde_json::from_str(&text).expect("json");
        if frame["type"] == "change" {
            assert!(seen.insert(frame["id"].as_str().unwrap_or_default().to_owned()), "no duplicate after resuming");
        }
    }
    for id in &acked {
        assert!(seen.contains(id), "{id} reached the stream, before or after the restart");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}

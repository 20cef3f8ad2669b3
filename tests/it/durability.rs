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

//! `_since` polling is complete: a client that polls `?_since=<last ETag>` while others write
//! sees every created record, even with pages (`Next-Page`) and concurrent group commits.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Server, ALICE};

const WRITERS: usize = 8;
const CREATES_PER_WRITER: usize = 1000;

/// One `_since` poll, following `Next-Page`: the ids seen and the first page's ETag.
async fn poll(client: &reqwest::Client, records: &str, since: &str) -> (Vec<String>, String) {
    let mut url = Some(format!("{records}?_since={since}"));
    let mut etag = None;
    let mut ids = Vec::new();
    while let Some(current) = url {
        let reply = client.get(&current).basic_auth("alice", Some("secret")).send().await.expect("poll");
        assert_eq!(reply.status(), 200);
        let header = |name: &str| reply.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Later pages carry the list's current ETag; only the first page's matches its snapshot.
        etag = etag.or_else(|| header("etag"));
        url = header("next-page");
        let body: Value = reply.json().await.expect("poll body");
        ids.extend(body["data"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_owned)));
    }
    (ids, etag.expect("an ETag").trim_matches('"').to_owned())
}

#[tokio::test]
async fn since_polling_sees_every_concurrent_create() {
    // Small pages, so that polls also follow Next-Page while writes go on.
    let s = Server::start_with(&[("paginate_by", "100")]).await;
    s.seed().await;
    let records = format!("{}/buckets/b/collections/c/records", s.base);
    let start = s.get("/buckets/b/collections/c/records", Some(ALICE)).await.etag().to_string();

    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (client, records, done) = (s.client.clone(), records.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut since = start;
            loop {
                // Read the flag before polling: the poll after the last write is then guaranteed.
                let last = done.load(Ordering::SeqCst);
                let (ids, etag) = poll(&client, &records, &since).await;
                seen.extend(ids);
                since = etag;
                if last {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, records) = (s.client.clone(), records.clone());
            tokio::spawn(async move {
                let mut created = Vec::with_capacity(CREATES_PER_WRITER);
                for i in 0..CREATES_PER_WRITER {
                    let reply = client
                        .post(&records)
                        .basic_auth("alice", Some("secret"))
                        .json(&json!({"data": {"writer": w, "i": i}}))
                        .send()
                        .await
                        .expect("create");
                    assert_eq!(reply.status(), 201);
                    let body: Value = reply.json().await.expect("create body");
                    created.push(body["data"]["id"].as_str().expect("id").to_owned());
                }
                created
            })
        })
        .collect();
    let mut created = HashSet::new();
    for writer in writers {
        created.extend(writer.await.expect("writer"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = poller.await.expect("poller");

    assert_eq!(created.len(), WRITERS * CREATES_PER_WRITER);
    let missed: Vec<_> = created.difference(&seen).take(5).collect();
    let extra: Vec<_> = seen.difference(&created).take(5).collect();
    assert!(missed.is_empty() && extra.is_empty(), "missed {missed:?}, unexpected {extra:?}");
    assert_eq!(seen, created);
    s.stop().await;
}

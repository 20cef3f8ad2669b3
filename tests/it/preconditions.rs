//! ETags, 304 and 412 (kinto-protocol.md §3).

use serde_json::json;

use crate::common::{Server, ALICE};

const R: &str = "/buckets/b/collections/c/records";

#[tokio::test]
async fn get_with_matching_if_none_match_returns_304() {
    let s = Server::start().await;
    s.seed().await;
    let r1 = s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    let etag = format!("\"{}\"", r1.etag());
    let cached = s.call("GET", &format!("{R}/r1"), Some(ALICE), None, &[("If-None-Match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.raw.is_empty());
    assert_eq!(cached.etag(), r1.etag());
    let list_etag = format!("\"{}\"", s.get(R, Some(ALICE)).await.etag());
    let list = s.call("GET", &format!("{R}?x=1"), Some(ALICE), None, &[("If-None-Match", &list_etag)]).await;
    assert_eq!(list.status, 304);
    let star = s.call("GET", R, Some(ALICE), None, &[("If-None-Match", "*")]).await;
    assert_eq!(star.status, 412);
    assert!(star.body.get("details").is_none());
    s.stop().await;
}

#[tokio::test]
async fn patch_with_stale_if_match_returns_412_with_the_current_object() {
    let s = Server::start().await;
    s.seed().await;
    let r1 = s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"v": 1}})).await;
    let stale = format!("\"{}\"", r1.etag() - 1);
    let refused = s
        .call("PATCH", &format!("{R}/r1"), Some(ALICE), Some(json!({"data": {"v": 2}})), &[("If-Match", &stale)])
        .await;
    assert_eq!(refused.status, 412);
    assert_eq!(refused.errno(), 114);
    assert_eq!(refused.body["message"], "Resource was modified meanwhile");
    assert_eq!(refused.body["details"]["existing"]["v"], 1);
    assert!(refused.body["details"]["existing"].get("permissions").is_none());
    assert_eq!(refused.etag(), r1.etag());
    let current = format!("\"{}\"", r1.etag());
    let accepted = s
        .call("PATCH", &format!("{R}/r1"), Some(ALICE), Some(json!({"data": {"v": 2}})), &[("If-Match", &current)])
        .await;
    assert_eq!(accepted.status, 200);
    assert_eq!(s.get(&format!("{R}/r1"), Some(ALICE)).await.body["data"]["v"], 2);
    s.stop().await;
}

#[tokio::test]
async fn put_with_if_none_match_star_is_safe_creation() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"v": 1}})).await;
    let refused = s
        .call("PUT", &format!("{R}/r1"), Some(ALICE), Some(json!({"data": {"v": 2}})), &[("If-None-Match", "*")])
        .await;
    assert_eq!(refused.status, 412);
    assert_eq!(refused.body["details"]["existing"]["v"], 1);
    let created = s.call("PUT", &format!("{R}/new"), Some(ALICE), Some(json!({})), &[("If-None-Match", "*")]).await;
    assert_eq!(created.status, 201);
    let missing = s.call("PUT", &format!("{R}/new2"), Some(ALICE), Some(json!({})), &[("If-Match", "*")]).await;
    assert_eq!(missing.status, 412);
    assert!(missing.body.get("details").is_none());
    s.stop().await;
}

#[tokio::test]
async fn list_preconditions_compare_with_the_list_timestamp() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    let list_etag = format!("\"{}\"", s.get(R, Some(ALICE)).await.etag());
    let post = s.call("POST", R, Some(ALICE), Some(json!({})), &[("If-Match", &list_etag)]).await;
    assert_eq!(post.status, 412, "POST without id and any If-Match: 412 (Kinto)");
    let stale = s.call("DELETE", R, Some(ALICE), None, &[("If-Match", "\"1\"")]).await;
    assert_eq!(stale.status, 412);
    let deleted = s.call("DELETE", R, Some(ALICE), None, &[("If-Match", &list_etag)]).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["data"][0]["deleted"], true);
    s.stop().await;
}

#[tokio::test]
async fn malformed_preconditions_are_400_and_modified_since_is_ignored() {
    let s = Server::start().await;
    s.seed().await;
    let bad = s.call("GET", R, Some(ALICE), None, &[("If-Match", "abc")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["message"], "If-Match in header: The value should be integer between double quotes.");
    let ignored = s.call("GET", R, Some(ALICE), None, &[("If-Modified-Since", "Mon, 23 Nov 2026 07:54:41 GMT")]).await;
    assert_eq!(ignored.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_if_match_updates_let_exactly_one_win() {
    let s = Server::start().await;
    s.seed().await;
    let r1 = s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"n": 0}})).await;
    let etag = format!("\"{}\"", r1.etag());
    let mut tasks = Vec::new();
    let s = std::sync::Arc::new(s);
    for i in 0..8 {
        let (s, etag) = (s.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            s.call("PATCH", &format!("{R}/r1"), Some(ALICE), Some(json!({"data": {"n": i}})), &[("If-Match", &etag)])
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap_or(0));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 7, "{statuses:?}");
}

/// 16 clients × 250 increments of one counter, each a GET then a PATCH with `If-Match`, retried
/// on 412: no increment is lost or doubled, and the history is one unbroken chain.
#[tokio::test]
async fn concurrent_increments_with_if_match_lose_nothing() {
    const CLIENTS: u64 = 16;
    const EACH: u64 = 250;
    let s = std::sync::Arc::new(Server::start_with(&[("includes", "kinto.plugins.history")]).await);
    s.seed().await;
    let url = format!("{R}/counter");
    assert_eq!(s.put(&url, Some(ALICE), json!({"data": {"n": 0}})).await.status, 201);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (s, url) = (s.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut done, mut refused) = (0u64, 0u64);
            while done < EACH {
                let current = s.get(&url, Some(ALICE)).await;
                let n = current.body["data"]["n"].as_u64();
                let n = n.unwrap_or_else(|| panic!("GET answered {}: {}", current.status, current.body));
                let etag = format!("\"{}\"", current.etag());
                let body = json!({"data": {"n": n + 1}});
                let r = s.call("PATCH", &url, Some(ALICE), Some(body), &[("If-Match", &etag)]).await;
                match r.status.as_u16() {
                    200 => done += 1,
                    412 => refused += 1,
                    other => panic!("unexpected {other}: {}", r.body),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.expect("client");
    }
    let total = CLIENTS * EACH;
    assert_eq!(s.get(&url, Some(ALICE)).await.body["data"]["n"], total, "after {refused} refusals");
    let history = s.get("/buckets/b/history?record_id=counter&_sort=seq&_limit=10000", Some(ALICE)).await;
    let entries = history.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len() as u64, total + 1, "one entry per write");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["target"]["data"]["n"], i as u64, "entry {i}");
        if i > 0 {
            assert_eq!(entry["before"]["n"], i as u64 - 1, "entry {i} follows the one before");
        }
    }
}

/// 32 concurrent `PUT If-None-Match: *` of one new id: exactly one creates it.
#[tokio::test]
async fn concurrent_safe_creations_let_exactly_one_win() {
    let s = std::sync::Arc::new(Server::start().await);
    s.seed().await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"data": {"by": i}});
            let r = s.call("PUT", &format!("{R}/once"), Some(ALICE), Some(body), &[("If-None-Match", "*")]).await;
            (r.status.as_u16(), i)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("client"));
    }
    let winners: Vec<u64> = outcomes.iter().filter(|(status, _)| *status == 201).map(|(_, i)| *i).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|(status, _)| *status == 201 || *status == 412), "{outcomes:?}");
    assert_eq!(s.get(&format!("{R}/once"), Some(ALICE)).await.body["data"]["by"], winners[0], "the winner's data");
}

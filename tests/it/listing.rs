//! Plural GET/HEAD/DELETE over the views: filters, sort, pagination, `_since`, counts.

use serde_json::{json, Value};

use crate::common::{Server, ALICE};

const R: &str = "/buckets/b/collections/c/records";

fn ids(body: &Value) -> Vec<String> {
    body["data"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect()
}

async fn seed_ages(s: &Server) {
    s.seed().await;
    for (id, data) in [
        ("a", json!({"age": 10, "name": "Alice", "tags": ["a", "b"]})),
        ("b", json!({"age": 20, "name": "Bob", "tags": ["b"]})),
        ("c", json!({"age": "30", "name": "Carol"})),
        ("d", json!({"age": null})),
        ("e", json!({})),
    ] {
        assert_eq!(s.put(&format!("{R}/{id}"), Some(ALICE), json!({ "data": data })).await.status, 201);
    }
}

#[tokio::test]
async fn default_order_is_newest_first_and_filters_apply() {
    let s = Server::start().await;
    seed_ages(&s).await;
    assert_eq!(ids(&s.get(R, Some(ALICE)).await.body), ["e", "d", "c", "b", "a"]);
    assert_eq!(ids(&s.get(&format!("{R}?age=10"), Some(ALICE)).await.body), ["a"]);
    assert_eq!(ids(&s.get(&format!("{R}?age=\"30\""), Some(ALICE)).await.body), ["c"]);
    assert_eq!(
        ids(&s.get(&format!("{R}?min_age=15"), Some(ALICE)).await.body),
        ["e", "b"],
        "a string age sorts below numbers"
    );
    assert_eq!(ids(&s.get(&format!("{R}?in_age=10,20"), Some(ALICE)).await.body), ["b", "a"]);
    assert_eq!(ids(&s.get(&format!("{R}?like_name=ali"), Some(ALICE)).await.body), ["a"]);
    assert_eq!(ids(&s.get(&format!("{R}?has_age=false"), Some(ALICE)).await.body), ["e"]);
    assert_eq!(ids(&s.get(&format!("{R}?contains_tags=b"), Some(ALICE)).await.body), ["b", "a"]);
    assert_eq!(ids(&s.get(&format!("{R}?_sort=age"), Some(ALICE)).await.body), ["d", "c", "a", "b", "e"]);
    let bad = s.get(&format!("{R}?like_age=1"), Some(ALICE)).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["message"], "Invalid value for like_age");
    s.stop().await;
}

#[tokio::test]
async fn since_returns_changes_with_tombstones_and_plain_lists_never_do() {
    let s = Server::start().await;
    seed_ages(&s).await;
    let etag = s.get(R, Some(ALICE)).await.etag();
    s.patch(&format!("{R}/a"), Some(ALICE), json!({"data": {"age": 11}})).await;
    let deleted = s.delete(&format!("{R}/b"), Some(ALICE)).await;
    let since = s.get(&format!("{R}?_since={etag}"), Some(ALICE)).await;
    assert_eq!(ids(&since.body), ["b", "a"]);
    assert_eq!(since.body["data"][0], json!({"id": "b", "last_modified": deleted.etag(), "deleted": true}));
    let quoted = s.get(&format!("{R}?_since=\"{etag}\""), Some(ALICE)).await;
    assert_eq!(ids(&quoted.body), ["b", "a"]);
    assert!(!ids(&s.get(R, Some(ALICE)).await.body).contains(&"b".to_string()));
    let before = s.get(&format!("{R}?_before={etag}"), Some(ALICE)).await;
    assert_eq!(ids(&before.body), ["d", "c"], "a and b changed after the ETag");
    let bad = s.get(&format!("{R}?_since=abc"), Some(ALICE)).await;
    assert_eq!(bad.body["message"], "_since in querystring: \"abc\" is not a number");
    s.stop().await;
}

#[tokio::test]
async fn pagination_follows_next_page_to_the_end() {
    let s = Server::start().await;
    seed_ages(&s).await;
    let first = s.get(&format!("{R}?_limit=2"), Some(ALICE)).await;
    assert_eq!(ids(&first.body).len(), 2);
    let mut next = first.header("next-page").map(str::to_owned);
    assert!(next.as_deref().is_some_and(|n| n.starts_with(&s.base) && n.contains("_limit=2") && n.contains("_token=")));
    let mut seen = ids(&first.body);
    while let Some(url) = next {
        let page = s.get(&url, Some(ALICE)).await;
        assert_eq!(page.status, 200);
        seen.extend(ids(&page.body));
        next = page.header("next-page").map(str::to_owned);
    }
    assert_eq!(seen, ["e", "d", "c", "b", "a"]);
    let sorted = s.get(&format!("{R}?_sort=name&_limit=2"), Some(ALICE)).await;
    let mut seen = ids(&sorted.body);
    let mut next = sorted.header("next-page").map(str::to_owned);
    while let Some(url) = next {
        let page = s.get(&url, Some(ALICE)).await;
        seen.extend(ids(&page.body));
        next = page.header("next-page").map(str::to_owned);
    }
    assert_eq!(seen, ["a", "b", "c", "e", "d"]);
    assert_eq!(s.get(&format!("{R}?_token=xyz"), Some(ALICE)).await.status, 400);
    assert_eq!(s.get(&format!("{R}?_limit=-1"), Some(ALICE)).await.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn head_counts_without_tombstones_and_fields_project() {
    let s = Server::start().await;
    seed_ages(&s).await;
    s.delete(&format!("{R}/e"), Some(ALICE)).await;
    let head = s.call("HEAD", R, Some(ALICE), None, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("total-objects"), Some("4"));
    assert_eq!(head.header("total-records"), Some("4"));
    assert!(head.raw.is_empty());
    let since = s.call("HEAD", &format!("{R}?_since=0"), Some(ALICE), None, &[]).await;
    assert_eq!(since.header("total-objects"), Some("4"));
    let filtered = s.call("HEAD", &format!("{R}?min_age=15"), Some(ALICE), None, &[]).await;
    assert_eq!(filtered.header("total-objects"), Some("1"), "b only: e is deleted, c's age is a string");
    assert!(s.get(R, Some(ALICE)).await.header("total-objects").is_none());
    let fields = s.get(&format!("{R}?_fields=name&age=10"), Some(ALICE)).await;
    let first = fields.body["data"][0].as_object().cloned().unwrap_or_default();
    let mut keys: Vec<&String> = first.keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "last_modified", "name"]);
    s.stop().await;
}

#[tokio::test]
async fn plural_delete_removes_matching_objects() {
    let s = Server::start().await;
    seed_ages(&s).await;
    let deleted = s.delete(&format!("{R}?age=20"), Some(ALICE)).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(ids(&deleted.body), ["b"]);
    assert_eq!(deleted.body["data"][0]["deleted"], true);
    let none = s.delete(&format!("{R}?age=99"), Some(ALICE)).await;
    assert_eq!(none.body, json!({"data": []}));
    let all = s.delete(R, Some(ALICE)).await;
    assert_eq!(ids(&all.body).len(), 4);
    assert_eq!(ids(&s.get(R, Some(ALICE)).await.body).len(), 0);
    s.stop().await;
}

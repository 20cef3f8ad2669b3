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

/// Follows `Next-Page` from `first`, running `between(page number)` before each next fetch.
async fn pages<F, Fut>(s: &Server, first: &str, mut between: F) -> Vec<Vec<Value>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::new();
    let mut url = Some(first.to_owned());
    while let Some(current) = url {
        if !out.is_empty() {
            between(out.len()).await;
        }
        let page = s.get(&current, Some(ALICE)).await;
        assert_eq!(page.status, 200, "{current}: {}", page.body);
        out.push(page.body["data"].as_array().cloned().unwrap_or_default());
        url = page.header("next-page").map(str::to_owned);
        assert!(out.len() < 20, "no end");
    }
    out
}

async fn seed_numbered(s: &Server, n: usize) {
    s.seed().await;
    for i in 0..n {
        let put = s.put(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"n": i, "v": 0}})).await;
        assert_eq!(put.status, 201);
    }
}

fn sorted_ids(pages: &[Vec<Value>]) -> Vec<String> {
    let mut all: Vec<String> = pages.iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect();
    all.sort();
    all
}

#[tokio::test]
async fn pages_are_pinned_to_the_first_page_while_the_collection_changes() {
    for query in ["?_limit=3", "?_limit=3&_sort=n", "?_limit=3&_sort=-v,n"] {
        let s = Server::start().await;
        seed_numbered(&s, 10).await;
        let expected: Vec<String> = {
            let mut ids: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
            ids.sort();
            ids
        };
        let server = &s;
        let got = pages(server, &format!("{R}{query}"), |page| async move {
            let s = server;
            // Touch every record (returned or not: unreturned ones jump to the front of the
            // default order), add new ones and delete one not yet seen.
            for i in 0..10 {
                let patch = s.patch(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"v": page}})).await;
                assert!(patch.status == 200 || patch.status == 404, "{}", patch.body);
            }
            assert_eq!(s.post(R, Some(ALICE), json!({"data": {"n": 100 + page}})).await.status, 201);
            if page == 2 {
                assert_eq!(s.delete(&format!("{R}/r9"), Some(ALICE)).await.status, 200);
                assert_eq!(s.delete(&format!("{R}/r0"), Some(ALICE)).await.status, 200);
            }
        })
        .await;
        assert_eq!(sorted_ids(&got), expected, "{query}: each record of the first page's snapshot, once");
        for record in got.iter().flatten() {
            assert_eq!(record["v"], 0, "{query}: shown as it was when paging started: {record}");
            assert!(record.get("deleted").is_none(), "{query}: deleted meanwhile, shown as it was");
        }
        assert!(got.iter().all(|p| p.len() <= 3));
        assert!(ids(&s.get(&format!("{R}?v=0"), Some(ALICE)).await.body).is_empty(), "the list itself moved on");
        s.stop().await;
    }
}

#[tokio::test]
async fn pinned_pages_include_tombstones_of_the_snapshot_with_since() {
    let s = Server::start().await;
    seed_numbered(&s, 6).await;
    let start = s.get(R, Some(ALICE)).await.etag();
    for i in 0..3 {
        s.patch(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"v": 1}})).await;
    }
    s.delete(&format!("{R}/r3"), Some(ALICE)).await;
    let server = &s;
    let got = pages(server, &format!("{R}?_since={start}&_limit=2"), |_| async move {
        // r3 re-created, r0 deleted: the snapshot still has r3's tombstone and r0 alive.
        server.put(&format!("{R}/r3"), Some(ALICE), json!({"data": {"v": 9}})).await;
        server.delete(&format!("{R}/r0"), Some(ALICE)).await;
    })
    .await;
    assert_eq!(sorted_ids(&got), ["r0", "r1", "r2", "r3"]);
    let all: Vec<&Value> = got.iter().flatten().collect();
    assert!(all.iter().any(|r| r["id"] == "r3" && r["deleted"] == true));
    assert!(all.iter().any(|r| r["id"] == "r0" && r["v"] == 1));
    s.stop().await;
}

#[tokio::test]
async fn kinto_tokens_without_a_pin_still_work_unpinned() {
    use base64::Engine as _;
    let s = Server::start().await;
    seed_numbered(&s, 5).await;
    let first = s.get(&format!("{R}?_limit=2"), Some(ALICE)).await;
    assert_eq!(ids(&first.body), ["r4", "r3"]);
    let next = first.header("next-page").unwrap_or_default().to_owned();
    let raw =
        next.split("_token=").nth(1).unwrap_or_default().replace("%3D", "=").replace("%2B", "+").replace("%2F", "/");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut token: Value = serde_json::from_slice(&b64.decode(&raw).expect("base64")).expect("json");
    assert!(token["seq"].is_u64() && token["list_ts"].is_u64(), "{token}");
    for key in ["last_object", "offset", "nonce"] {
        assert!(token.get(key).is_some(), "Kinto's {key} kept");
    }
    let map = token.as_object_mut().expect("object");
    map.remove("seq");
    map.remove("list_ts");
    let unpinned = b64.encode(token.to_string());
    // r2 changes: unpinned, it moves ahead of the token and is skipped (Kinto #1584).
    s.patch(&format!("{R}/r2"), Some(ALICE), json!({"data": {"v": 1}})).await;
    let page = s.call("GET", &format!("{R}?_limit=2&_token={}", encode(&unpinned)), Some(ALICE), None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(ids(&page.body), ["r1", "r0"]);
    let pinned = s.get(&next, Some(ALICE)).await;
    assert_eq!(ids(&pinned.body), ["r2", "r1"]);
    assert_eq!(pinned.body["data"][0]["v"], 0);
    s.stop().await;
}

fn encode(token: &str) -> String {
    token.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

#[tokio::test]
async fn plural_delete_tokens_are_single_use() {
    let s = Server::start().await;
    seed_numbered(&s, 8).await;
    let first = s.delete(&format!("{R}?_limit=2"), Some(ALICE)).await;
    assert_eq!(ids(&first.body), ["r7", "r6"]);
    let next = first.header("next-page").unwrap_or_default().to_owned();
    assert!(next.contains("_token="), "{next}");
    // A DELETE token works in a GET, any number of times, without using it up.
    for _ in 0..2 {
        assert_eq!(ids(&s.get(&next, Some(ALICE)).await.body), ["r5", "r4"]);
    }
    let second = s.delete(&next, Some(ALICE)).await;
    assert_eq!(ids(&second.body), ["r5", "r4"]);
    let reused = s.delete(&next, Some(ALICE)).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.body["message"], "querystring: _token was already used or has expired.");
    assert_eq!(reused.body["details"][0]["description"], "_token was already used or has expired.");
    assert_eq!(ids(&s.get(R, Some(ALICE)).await.body), ["r3", "r2", "r1", "r0"], "nothing more deleted");
    // A GET token was never issued for deletion.
    let listed = s.get(&format!("{R}?_limit=1"), Some(ALICE)).await;
    let get_token = listed.header("next-page").unwrap_or_default().to_owned();
    assert_eq!(s.delete(&get_token, Some(ALICE)).await.status, 400);
    // The precondition is checked before the token is used up.
    let third = second.header("next-page").unwrap_or_default().to_owned();
    let failed = s.call("DELETE", &third, Some(ALICE), None, &[("If-Match", "\"1\"")]).await;
    assert_eq!(failed.status, 412);
    assert_eq!(ids(&s.delete(&third, Some(ALICE)).await.body), ["r3", "r2"]);
    s.stop().await;
}

#[tokio::test]
async fn plural_delete_tokens_expire() {
    let s = Server::start_with(&[("pagination_token_validity_seconds", "1")]).await;
    seed_numbered(&s, 3).await;
    let first = s.delete(&format!("{R}?_limit=1"), Some(ALICE)).await;
    let next = first.header("next-page").unwrap_or_default().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = s.delete(&next, Some(ALICE)).await;
    assert_eq!(late.status, 400);
    assert_eq!(late.body["message"], "querystring: _token was already used or has expired.");
    s.stop().await;
}

#[tokio::test]
async fn plain_pages_render_non_ascii_as_kinto_does() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/a"), Some(ALICE), json!({"data": {"s": "é/😀"}})).await;
    s.put(&format!("{R}/b"), Some(ALICE), json!({"data": {"s": "plain"}})).await;
    let list = s.get(R, Some(ALICE)).await;
    let text = String::from_utf8_lossy(&list.raw).into_owned();
    assert!(text.contains(r#""s":"\u00E9/\uD83D\uDE00""#), "{text}");
    assert!(text.is_ascii());
    assert_eq!(ids(&list.body), ["b", "a"]);
    assert_eq!(list.header("content-type"), Some("application/json"));
    s.stop().await;
}

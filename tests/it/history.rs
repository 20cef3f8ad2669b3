//! kinto.plugins.history, derived from the log: Kinto's entry shape and filters, plus `seq`,
//! `before`, `patch` and the request context.

use serde_json::{json, Value};

use crate::common::{user_id, Server, ALICE, BOB};

const R: &str = "/buckets/b/collections/c/records";

async fn server() -> Server {
    Server::start_with(&[("includes", "kinto.plugins.flush kinto.plugins.history")]).await
}

fn data(reply: &crate::common::Reply) -> Vec<Value> {
    reply.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn every_change_has_an_entry_equal_to_what_the_log_says() {
    let s = server().await;
    s.seed().await;
    assert!(s.get("/", None).await.body["capabilities"]["history"].is_object());
    s.put("/buckets/b/groups/g", Some(ALICE), json!({"data": {"members": ["x"]}})).await;
    let created = s
        .call(
            "PUT",
            &format!("{R}/r1"),
            Some(ALICE),
            Some(json!({"data": {"n": 1}})),
            &[("Kinto-Session-Id", "s-1"), ("X-Request-Id", "req-1")],
        )
        .await;
    let updated = s.patch(&format!("{R}/r1"), Some(ALICE), json!({"data": {"n": 2}})).await;
    s.put(&format!("{R}/r2"), Some(ALICE), json!({"data": {"n": 3}})).await;
    // A plural delete: one entry per record.
    let deleted = s.delete(R, Some(ALICE)).await;
    assert_eq!(data(&deleted).len(), 2);

    let history = s.get("/buckets/b/history", Some(ALICE)).await;
    assert_eq!(history.status, 200);
    let entries = data(&history);
    let summary: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (e["action"].as_str().unwrap_or_default().to_owned(), e["uri"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected = [
        ("delete", format!("{R}/r1")),
        ("delete", format!("{R}/r2")),
        ("create", format!("{R}/r2")),
        ("update", format!("{R}/r1")),
        ("create", format!("{R}/r1")),
        ("create", "/buckets/b/groups/g".to_owned()),
        ("create", "/buckets/b/collections/c".to_owned()),
        ("create", "/buckets/b".to_owned()),
    ];
    let mut got = summary.clone();
    let mut want: Vec<(String, String)> = expected.iter().map(|(a, u)| ((*a).to_owned(), u.clone())).collect();
    // The two deletes of one plural delete share a commit; their relative order is the log's.
    got[..2].sort();
    want[..2].sort();
    assert_eq!(got, want);
    assert_eq!(history.etag(), entries[0]["last_modified"].as_u64().unwrap_or_default(), "ETag: the newest entry");

    let update = entries.iter().find(|e| e["action"] == "update").expect("update entry");
    assert_eq!(update["resource_name"], "record");
    assert_eq!(update["collection_id"], "c");
    assert_eq!(update["record_id"], "r1");
    assert!(update.get("bucket_id").is_none(), "as Kinto: bucket_id only on bucket entries");
    assert_eq!(update["user_id"], user_id(ALICE));
    assert_eq!(update["target"]["data"], updated.body["data"]);
    assert_eq!(update["target"]["permissions"]["write"], json!([user_id(ALICE)]));
    assert_eq!(update["last_modified"], updated.body["data"]["last_modified"], "the object's own timestamp");
    assert_eq!(update["before"], created.body["data"]);
    assert!(update["patch"].as_array().expect("patch").contains(&json!({"op": "replace", "path": "/n", "value": 2})));
    assert!(update["date"].as_str().is_some_and(|d| d.ends_with("+00:00")));
    let create = entries.iter().find(|e| e["action"] == "create" && e["record_id"] == "r1").expect("create entry");
    assert_eq!(create["context"]["session_id"], "s-1");
    assert_eq!(create["context"]["request_id"], "req-1");
    assert_eq!(create["context"]["app_id"], Value::Null, "the default namespace");
    assert!(create["seq"].as_u64().expect("seq") < update["seq"].as_u64().expect("seq"));
    let bucket = entries.last().expect("bucket entry");
    assert_eq!(bucket["bucket_id"], "b");
    s.stop().await;
}

#[tokio::test]
async fn filters_sorts_and_pages_like_kinto() {
    let s = server().await;
    s.seed().await;
    for i in 0..5 {
        s.put(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"i": i}})).await;
    }
    let records = s.get("/buckets/b/history?resource_name=record&_limit=2", Some(ALICE)).await;
    assert_eq!(data(&records).len(), 2);
    let mut seen: Vec<Value> = data(&records).iter().map(|e| e["record_id"].clone()).collect();
    let mut next = records.header("next-page").map(str::to_owned);
    while let Some(url) = next {
        let page = s.get(&url, Some(ALICE)).await;
        seen.extend(data(&page).iter().map(|e| e["record_id"].clone()));
        next = page.header("next-page").map(str::to_owned);
    }
    assert_eq!(seen, [json!("r4"), json!("r3"), json!("r2"), json!("r1"), json!("r0")]);
    let one = s.get(&format!("/buckets/b/history?uri={R}/r3"), Some(ALICE)).await;
    assert_eq!(data(&one).len(), 1);
    let oldest = s.get("/buckets/b/history?_sort=last_modified&_limit=1", Some(ALICE)).await;
    assert_eq!(data(&oldest)[0]["resource_name"], "bucket");
    let since = data(&records)[1]["last_modified"].as_u64().expect("ts");
    let newer = s.get(&format!("/buckets/b/history?_since={since}"), Some(ALICE)).await;
    assert_eq!(data(&newer).len(), 1);
    let by_value = s.get("/buckets/b/history?target.data.i=2", Some(ALICE)).await;
    assert_eq!(data(&by_value)[0]["record_id"], "r2");
    let unknown = s.get("/buckets/b/history?foo=1", Some(ALICE)).await;
    assert_eq!((unknown.status.as_u16(), unknown.errno()), (400, 107));
    s.stop().await;
}

#[tokio::test]
async fn history_is_visible_to_bucket_readers_and_to_the_writers_of_each_object() {
    let s = server().await;
    s.seed().await;
    s.put(&format!("{R}/mine"), Some(ALICE), json!({"data": {}})).await;
    assert_eq!(s.get("/buckets/b/history", None).await.status, 401);
    assert_eq!(s.get("/buckets/b/history", Some(BOB)).await.status, 403, "nothing of Bob's in it");
    assert_eq!(s.get("/buckets/nope/history", Some(ALICE)).await.status, 403);
    // Bob may add records to c: he sees the entries of his own records only.
    let grant = json!({"permissions": {"record:create": ["system.Authenticated"]}});
    s.patch("/buckets/b/collections/c", Some(ALICE), grant).await;
    s.put(&format!("{R}/bobs"), Some(BOB), json!({"data": {}})).await;
    let bobs = s.get("/buckets/b/history", Some(BOB)).await;
    assert_eq!(bobs.status, 200);
    let uris: Vec<Value> = data(&bobs).iter().map(|e| e["uri"].clone()).collect();
    assert_eq!(uris, [json!(format!("{R}/bobs"))]);
    // Bucket readers see everything.
    let read = json!({"permissions": {"read": [user_id(BOB)]}});
    s.patch("/buckets/b", Some(ALICE), read).await;
    assert!(data(&s.get("/buckets/b/history", Some(BOB)).await).len() > 3);
    // Deleting the bucket ends its history, as in Kinto (the log keeps it for audits).
    s.delete("/buckets/b", Some(ALICE)).await;
    s.put("/buckets/b", Some(ALICE), json!({})).await;
    let fresh = s.get("/buckets/b/history", Some(ALICE)).await;
    assert_eq!(data(&fresh).len(), 1);
    assert_eq!(s.call("POST", "/buckets/b/history", Some(ALICE), Some(json!({})), &[]).await.status, 405);
    s.stop().await;
}

#[tokio::test]
async fn without_the_plugin_there_is_no_history() {
    let s = Server::start().await;
    s.seed().await;
    assert_eq!(s.get("/buckets/b/history", Some(ALICE)).await.status, 404);
    s.stop().await;
}

/// Kinto leaves no entry for the objects a collection's deletion takes with it (kinto-http.js
/// #963, Kinto #1649): here each one is deleted by an event of its own, before the collection.
#[tokio::test]
async fn a_cascaded_delete_has_an_entry_per_object() {
    let s = server().await;
    s.seed().await;
    s.put("/buckets/b/collections/gone", Some(ALICE), json!({})).await;
    for id in ["x", "y"] {
        s.put(&format!("/buckets/b/collections/gone/records/{id}"), Some(ALICE), json!({"data": {}})).await;
    }
    assert_eq!(s.delete("/buckets/b/collections/gone", Some(ALICE)).await.status, 200);
    let deletes = s.get("/buckets/b/history?action=delete", Some(ALICE)).await;
    let uris: Vec<String> = data(&deletes).iter().map(|e| e["uri"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(
        uris,
        [
            "/buckets/b/collections/gone".to_owned(),
            "/buckets/b/collections/gone/records/y".to_owned(),
            "/buckets/b/collections/gone/records/x".to_owned(),
        ]
    );
    let record = &data(&deletes)[1];
    assert_eq!(record["target"]["data"]["deleted"], true);
    assert_eq!(record["before"], json!({"id": "y", "last_modified": record["before"]["last_modified"]}));
    assert_eq!(record["user_id"], user_id(ALICE), "the cascade is the deleter's");
    // Nothing is left under the collection, tombstones included, as in Kinto.
    s.put("/buckets/b/collections/gone", Some(ALICE), json!({})).await;
    let since = s.get("/buckets/b/collections/gone/records?_since=0", Some(ALICE)).await;
    assert_eq!(data(&since), Vec::<Value>::new());
    s.stop().await;
}

#[tokio::test]
async fn delete_purges_matching_entries_as_kinto_and_the_log_keeps_them() {
    let s = server().await;
    s.seed().await;
    s.put("/buckets/b", Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    for i in 1..=3 {
        s.put(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"n": i}})).await;
    }
    let before = s.get("/buckets/b/history", Some(ALICE)).await;
    assert_eq!(data(&before).len(), 6);
    let refused = s.delete("/buckets/b/history", Some(BOB)).await;
    assert_eq!((refused.status.as_u16(), refused.errno()), (403, 121), "readers may not purge");
    assert_eq!(s.delete("/buckets/b/history", None).await.status, 401);

    let purged = s.delete("/buckets/b/history?resource_name=record&_limit=2", Some(ALICE)).await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let tombstones = data(&purged);
    let newest: Vec<Value> = data(&before).iter().take(2).map(|e| e["id"].clone()).collect();
    assert_eq!(tombstones.iter().map(|t| t["id"].clone()).collect::<Vec<_>>(), newest, "newest first, as listed");
    assert!(tombstones.iter().all(|t| t["deleted"] == true && t["last_modified"].as_u64() == Some(purged.etag())));
    assert!(purged.header("next-page").is_some_and(|n| n.contains("_limit=2")), "r1 still matches");

    let after = s.get("/buckets/b/history", Some(ALICE)).await;
    let after_entries = data(&after);
    let uris: Vec<&str> = after_entries.iter().filter_map(|e| e["uri"].as_str()).collect();
    assert_eq!(uris, [&format!("{R}/r1")[..], "/buckets/b", "/buckets/b/collections/c", "/buckets/b"]);
    assert_eq!(after.etag(), purged.etag(), "the purge is the bucket history's newest change");
    assert_eq!(
        s.get("/buckets/b/history?_since=0&resource_name=record", Some(BOB)).await.body["data"][0]["uri"],
        format!("{R}/r1")
    );
    // The log keeps every change: the purged versions are still readable at their time.
    let r3 = &data(&before)[0];
    let at = r3["last_modified"].as_u64().expect("ts");
    let past = s.get(&format!("{R}/r3?_at={at}"), Some(ALICE)).await;
    assert_eq!(past.body["data"]["n"], 3, "{}", past.body);
    // Nothing left to purge: an empty list, no event.
    let again = s.delete("/buckets/b/history?record_id=r2", Some(ALICE)).await;
    assert_eq!((again.status.as_u16(), data(&again).len(), again.etag()), (200, 0, purged.etag()));
    s.stop().await;
}

#[tokio::test]
async fn history_settings_exclude_and_trim_entries() {
    let s = Server::start_with(&[
        ("includes", "kinto.plugins.history"),
        ("history.exclude_resources", "/buckets/b/collections/secret"),
        ("history.exclude_user_ids", &user_id(BOB)),
        ("history.auto_trim_max_count", "2"),
    ])
    .await;
    s.seed().await;
    s.put("/buckets/b", Some(ALICE), json!({"permissions": {"write": [user_id(BOB)]}})).await;
    s.put("/buckets/b/collections/secret", Some(ALICE), json!({})).await;
    s.put("/buckets/b/collections/secret/records/x", Some(ALICE), json!({})).await;
    s.put("/buckets/b/collections/secretive", Some(ALICE), json!({})).await;
    s.put(&format!("{R}/by-bob"), Some(BOB), json!({})).await;
    for i in 1..=3 {
        s.put(&format!("{R}/r{i}"), Some(ALICE), json!({})).await;
    }
    let history = s.get("/buckets/b/history?_fields=uri", Some(ALICE)).await;
    let entries = data(&history);
    let uris: Vec<&str> = entries.iter().filter_map(|e| e["uri"].as_str()).collect();
    // Two newest per resource name: records r3, r2; collections secretive, c (secret excluded);
    // buckets: both; Bob's change is not shown.
    assert_eq!(
        uris,
        [
            &format!("{R}/r3")[..],
            &format!("{R}/r2"),
            "/buckets/b/collections/secretive",
            "/buckets/b",
            "/buckets/b/collections/c",
            "/buckets/b"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_bucket_deleted_and_created_again_starts_a_fresh_history() {
    let s = server().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    assert_eq!(s.delete("/buckets/b", Some(ALICE)).await.status, 200);
    assert_eq!(s.get("/buckets/b/history", Some(ALICE)).await.status, 403, "no bucket, no history");
    s.put("/buckets/b", Some(ALICE), json!({})).await;
    let history = s.get("/buckets/b/history", Some(ALICE)).await;
    let entries = data(&history);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!((entries[0]["action"].clone(), entries[0]["uri"].clone()), (json!("create"), json!("/buckets/b")));
    s.stop().await;
}

/// Filters on what an entry names (`record_id`, `collection_id`, `resource_name`, `uri`…) are
/// decided on the history index without reading the events: the same entries as filtering the
/// whole history, with purges and excluded resources still honoured.
#[tokio::test]
async fn filters_on_the_object_give_what_filtering_the_whole_history_gives() {
    let s = Server::start_with(&[
        ("includes", "kinto.plugins.history"),
        ("history.exclude_resources", "/buckets/b/collections/hidden"),
    ])
    .await;
    s.seed().await;
    s.put("/buckets/b/collections/other", Some(ALICE), json!({})).await;
    s.put("/buckets/b/collections/hidden", Some(ALICE), json!({})).await;
    for round in 0..3 {
        for coll in ["c", "other", "hidden"] {
            for id in ["r1", "r2"] {
                let path = format!("/buckets/b/collections/{coll}/records/{id}");
                s.put(&path, Some(ALICE), json!({"data": {"round": round}})).await;
            }
        }
    }
    s.delete("/buckets/b/collections/other/records/r2", Some(ALICE)).await;
    // A purge of r1's entries in `c`: hidden from then on, by index or not.
    let purged = s.delete("/buckets/b/history?collection_id=c&record_id=r1&_limit=1", Some(ALICE)).await;
    assert_eq!(data(&purged).len(), 1, "{}", purged.body);

    let all = data(&s.get("/buckets/b/history?_limit=1000", Some(ALICE)).await);
    assert!(all.iter().all(|e| !e["uri"].as_str().unwrap_or_default().contains("/hidden")), "excluded");
    type Keep = fn(&Value) -> bool;
    let cases: [(&str, Keep); 6] = [
        ("record_id=r2", |e| e["record_id"] == "r2"),
        ("collection_id=c&record_id=r1", |e| e["collection_id"] == "c" && e["record_id"] == "r1"),
        ("resource_name=collection", |e| e["resource_name"] == "collection"),
        ("uri=/buckets/b/collections/other/records/r2", |e| e["uri"] == "/buckets/b/collections/other/records/r2"),
        ("record_id=r2&action=delete", |e| e["record_id"] == "r2" && e["action"] == "delete"),
        ("in_collection_id=c,other&exclude_record_id=r1", |e| {
            (e["collection_id"] == "c" || e["collection_id"] == "other") && e["record_id"] != "r1"
        }),
    ];
    for (filter, keep) in cases {
        let expected: Vec<Value> = all.iter().filter(|e| keep(e)).cloned().collect();
        let got = s.get(&format!("/buckets/b/history?{filter}&_limit=1000"), Some(ALICE)).await;
        assert_eq!(got.status, 200, "{filter}: {}", got.body);
        assert!(!expected.is_empty(), "{filter} matches something");
        assert_eq!(data(&got), expected, "{filter}");
    }
    // A page of one, by index, still links to the next.
    let page = s.get("/buckets/b/history?record_id=r2&_limit=1", Some(ALICE)).await;
    assert_eq!(data(&page).len(), 1);
    assert!(page.header("next-page").is_some());
    s.stop().await;
}

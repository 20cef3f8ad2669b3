//! Buckets, collections, groups and records over HTTP: create, read, replace, patch, delete.

use serde_json::json;

use crate::common::{user_id, Server, ALICE, BOB};

const R: &str = "/buckets/b/collections/c/records";

#[tokio::test]
async fn put_bucket_without_body_creates_it_with_the_creator_as_writer() {
    let s = Server::start().await;
    let created = s.call("PUT", "/buckets/blog", Some(ALICE), None, &[]).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["data"]["id"], "blog");
    let ts = created.body["data"]["last_modified"].as_u64().expect("timestamp");
    assert_eq!(created.etag(), ts);
    assert_eq!(created.body["permissions"], json!({"write": [user_id(ALICE)]}));
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert!(created.header("last-modified").is_some_and(|v| v.ends_with("GMT")));

    let again = s.call("PUT", "/buckets/blog", Some(ALICE), None, &[]).await;
    assert_eq!(again.status, 200);
    assert!(again.etag() > ts);
    s.stop().await;
}

#[tokio::test]
async fn post_generates_ids_of_kintos_shape() {
    let s = Server::start().await;
    s.seed().await;
    let bucket = s.post("/buckets", Some(ALICE), json!({})).await;
    assert_eq!(bucket.status, 201);
    let id = bucket.body["data"]["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 8);
    let record = s.post(R, Some(ALICE), json!({"data": {"x": 1}})).await;
    assert_eq!(record.status, 201);
    let rid = record.body["data"]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(rid.len(), 36);
    assert_eq!(&rid[14..15], "4");
    assert_eq!(record.body["data"]["x"], 1);
    s.stop().await;
}

#[tokio::test]
async fn post_with_an_existing_id_returns_the_stored_object_unchanged() {
    let s = Server::start().await;
    s.seed().await;
    let first = s.post(R, Some(ALICE), json!({"data": {"id": "r1", "x": 1}})).await;
    assert_eq!(first.status, 201);
    let second = s.post(R, Some(ALICE), json!({"data": {"id": "r1", "x": 9}})).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body["data"], first.body["data"]);
    assert_eq!(second.etag(), first.etag());
    s.stop().await;
}

#[tokio::test]
async fn timestamps_strictly_increase_and_list_etag_is_the_max() {
    let s = Server::start().await;
    s.seed().await;
    let mut last = 0;
    for i in 0..5 {
        let r = s.post(R, Some(ALICE), json!({"data": {"i": i}})).await;
        let ts = r.body["data"]["last_modified"].as_u64().unwrap_or(0);
        assert!(ts > last, "{ts} <= {last}");
        last = ts;
    }
    let list = s.get(R, Some(ALICE)).await;
    assert_eq!(list.etag(), last);
    // Record writes leave the collection object's own timestamp alone.
    let collection = s.get("/buckets/b/collections/c", Some(ALICE)).await;
    assert!(collection.etag() < last);
    s.stop().await;
}

#[tokio::test]
async fn put_replaces_data_and_checks_the_body_id() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"a": 1, "b": 2}})).await;
    let replaced = s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"c": 3}})).await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body["data"]["c"], 3);
    assert!(replaced.body["data"].get("a").is_none());
    let mismatch = s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"id": "r2"}})).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.body["details"][0]["name"], "id");
    assert_eq!(mismatch.body["message"], "Object id does not match existing object");
    s.stop().await;
}

#[tokio::test]
async fn explicit_last_modified_is_honoured_as_kinto_does() {
    let s = Server::start().await;
    s.seed().await;
    let before = s.get(R, Some(ALICE)).await.etag();
    let past = s.put(&format!("{R}/p"), Some(ALICE), json!({"data": {"last_modified": 1_234_567_890_123u64}})).await;
    assert_eq!(past.status, 201);
    assert_eq!(past.etag(), 1_234_567_890_123);
    assert_eq!(s.get(R, Some(ALICE)).await.etag(), before.max(1_234_567_890_123));
    // An older value on update is ignored: a fresh server timestamp is used.
    let update = s.put(&format!("{R}/p"), Some(ALICE), json!({"data": {"last_modified": 1u64}})).await;
    assert!(update.etag() > 1_234_567_890_123);
    // The same past timestamp on another record of the list is a conflict.
    let dup = s.put(&format!("{R}/q"), Some(ALICE), json!({"data": {"last_modified": 1_234_567_890_123u64}})).await;
    assert_eq!(dup.status, 201, "the first record moved on, so the value is free again");
    let dup = s.put(&format!("{R}/z"), Some(ALICE), json!({"data": {"last_modified": 1_234_567_890_123u64}})).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.errno(), 122);
    s.stop().await;
}

#[tokio::test]
async fn patch_flavours_merge_as_kinto_does() {
    let s = Server::start().await;
    s.seed().await;
    let x = format!("{R}/x");
    s.put(&x, Some(ALICE), json!({"data": {"a": "b", "sub": {"p": 1}}})).await;
    let kinto = s.patch(&x, Some(ALICE), json!({"data": {"a": null, "sub": {"z": 3}}})).await;
    assert_eq!(kinto.status, 200);
    assert_eq!(kinto.body["data"]["a"], json!(null));
    assert_eq!(kinto.body["data"]["sub"], json!({"z": 3}));

    let merge = s.call("PATCH", &x, Some(ALICE), None, &[("Content-Type", "application/merge-patch+json")]).await;
    assert_eq!(merge.status, 400, "an empty body provides neither data nor permissions");
    let merge = s
        .raw(
            "PATCH",
            &x,
            Some(ALICE),
            json!({"data": {"a": null, "sub": {"y": 2}}}).to_string().into_bytes(),
            &[("Content-Type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(merge.status, 200);
    assert!(merge.body["data"].get("a").is_none());
    assert_eq!(merge.body["data"]["sub"], json!({"z": 3, "y": 2}));

    let ops = json!([
        {"op": "add", "path": "/data/n", "value": 1},
        {"op": "add", "path": "/permissions/read/system.Everyone"}
    ]);
    let jp = s
        .raw("PATCH", &x, Some(ALICE), ops.to_string().into_bytes(), &[("Content-Type", "application/json-patch+json")])
        .await;
    assert_eq!(jp.status, 200);
    assert_eq!(jp.body["data"]["n"], 1);
    assert_eq!(jp.body["permissions"]["read"], json!(["system.Everyone"]));
    let failing = json!([{"op": "test", "path": "/data/n", "value": 2}]);
    let failed = s
        .raw(
            "PATCH",
            &x,
            Some(ALICE),
            failing.to_string().into_bytes(),
            &[("Content-Type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(failed.status, 400);
    assert!(failed.body["message"].as_str().unwrap_or_default().starts_with("body: JSON Patch operation failed"));
    s.stop().await;
}

#[tokio::test]
async fn patch_always_bumps_and_response_behavior_trims_the_body() {
    let s = Server::start().await;
    s.seed().await;
    let x = format!("{R}/x");
    let created = s.put(&x, Some(ALICE), json!({"data": {"a": 1, "b": 2}})).await;
    let same = s.patch(&x, Some(ALICE), json!({"data": {"a": 1}})).await;
    assert!(same.etag() > created.etag(), "every PATCH bumps last_modified");
    let light = s
        .call("PATCH", &x, Some(ALICE), Some(json!({"data": {"a": 5, "b": 2}})), &[("Response-Behavior", "light")])
        .await;
    assert_eq!(light.body, json!({"data": {"a": 5}}));
    let diff =
        s.call("PATCH", &x, Some(ALICE), Some(json!({"data": {"a": 6}})), &[("Response-Behavior", "diff")]).await;
    assert_eq!(diff.body, json!({"data": {}}));
    let bad = s.call("PATCH", &x, Some(ALICE), Some(json!({"data": {}})), &[("Response-Behavior", "nope")]).await;
    assert_eq!(bad.status, 400);
    let empty = s.patch(&x, Some(ALICE), json!({})).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["message"], "Provide at least one of data or permissions");
    s.stop().await;
}

#[tokio::test]
async fn delete_leaves_a_tombstone_and_put_recreates() {
    let s = Server::start().await;
    s.seed().await;
    let r1 = format!("{R}/r1");
    s.put(&r1, Some(ALICE), json!({"data": {"x": 1}})).await;
    let deleted = s.delete(&r1, Some(ALICE)).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["data"]["deleted"], true);
    assert_eq!(deleted.body["data"]["id"], "r1");
    assert_eq!(deleted.etag(), deleted.body["data"]["last_modified"].as_u64().unwrap_or(0));
    let gone = s.get(&r1, Some(ALICE)).await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.body,
        json!({"code": 404, "errno": 110, "error": "Not Found", "details": {"id": "r1", "resource_name": "record"}})
    );
    assert_eq!(s.delete(&r1, Some(ALICE)).await.status, 404);
    assert_eq!(s.put(&r1, Some(ALICE), json!({})).await.status, 201);
    let future = s.delete(&format!("{r1}?last_modified=9999999999999"), Some(ALICE)).await;
    assert_eq!(future.body["data"]["last_modified"], 9_999_999_999_999u64);
    s.stop().await;
}

#[tokio::test]
async fn deleting_a_collection_purges_its_records_and_their_tombstones() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    s.put(&format!("{R}/r2"), Some(ALICE), json!({})).await;
    s.delete(&format!("{R}/r2"), Some(ALICE)).await;
    assert_eq!(s.delete("/buckets/b/collections/c", Some(ALICE)).await.status, 200);
    assert_eq!(s.put("/buckets/b/collections/c", Some(ALICE), json!({})).await.status, 201);
    let since = s.get(&format!("{R}?_since=0"), Some(ALICE)).await;
    assert_eq!(since.status, 200);
    assert_eq!(since.body["data"], json!([]));
    // Deleting the bucket takes everything below with it.
    s.put(&format!("{R}/r3"), Some(ALICE), json!({})).await;
    assert_eq!(s.delete("/buckets/b", Some(ALICE)).await.status, 200);
    assert_eq!(s.put("/buckets/b", Some(ALICE), json!({})).await.status, 201);
    assert_eq!(s.get("/buckets/b/collections/c", Some(ALICE)).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn groups_validate_members() {
    let s = Server::start().await;
    s.seed().await;
    let group = s.put("/buckets/b/groups/g", Some(ALICE), json!({"data": {}})).await;
    assert_eq!(group.status, 201);
    assert_eq!(group.body["data"]["members"], json!([]));
    let bad = s.put("/buckets/b/groups/g", Some(ALICE), json!({"data": {"members": ["system.Everyone"]}})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["message"], "data.members.0 in body: 'system.Everyone' is not a valid user ID.");
    s.stop().await;
}

#[tokio::test]
async fn permissions_follow_put_and_patch_rules_and_show_to_writers_only() {
    let s = Server::start().await;
    s.seed().await;
    let p = format!("{R}/p");
    let created = s.put(&p, Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["data"].as_object().map(|o| o.len()), Some(2));
    let replaced = s.put(&p, Some(ALICE), json!({"data": {}, "permissions": {"write": ["x"]}})).await;
    let mut writers: Vec<String> =
        serde_json::from_value(replaced.body["permissions"]["write"].clone()).unwrap_or_default();
    writers.sort();
    let mut expected = vec!["x".to_string(), user_id(ALICE)];
    expected.sort();
    assert_eq!(writers, expected);
    assert!(replaced.body["permissions"].get("read").is_none(), "PUT replaces the whole ACL");

    s.put(&p, Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    let by_bob = s.get(&p, Some(BOB)).await;
    assert_eq!(by_bob.status, 200);
    assert_eq!(by_bob.body["permissions"], json!({}));
    let bogus = s.put("/buckets/b/collections/c", Some(ALICE), json!({"permissions": {"bogus": []}})).await;
    assert_eq!(bogus.status, 400);
    assert_eq!(bogus.body["message"], "permissions in body: \"bogus\" is not one of read, write, record:create");
    s.stop().await;
}

#[tokio::test]
async fn authorization_answers_401_403_404_without_leaking_existence() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    let anonymous = s.get("/buckets/b", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.errno(), 104);
    assert_eq!(anonymous.header("www-authenticate"), Some("Basic realm=\"Realm\""));
    let other = s.get("/buckets/b", Some(BOB)).await;
    assert_eq!(other.status, 403);
    assert_eq!(other.errno(), 121);
    assert_eq!(s.get("/buckets/missing", Some(BOB)).await.status, 403);
    assert_eq!(s.get(&format!("{R}/missing"), Some(ALICE)).await.errno(), 110);
    assert_eq!(s.get(&format!("{R}/missing"), Some(BOB)).await.status, 403);
    let no_collection = s.get("/buckets/b/collections/zz/records", Some(ALICE)).await;
    assert_eq!(no_collection.status, 404);
    assert_eq!(no_collection.body["details"], json!({"id": "zz", "resource_name": "collection"}));
    let buckets = s.get("/buckets", Some(BOB)).await;
    assert_eq!(buckets.status, 200);
    assert_eq!(buckets.body["data"], json!([]));
    assert_eq!(s.get("/buckets", None).await.status, 401);
    // A record shared with bob is the only one he lists.
    s.put(&format!("{R}/shared"), Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    let listed = s.get(R, Some(BOB)).await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> =
        listed.body["data"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, vec!["shared"]);
    s.stop().await;
}

#[tokio::test]
async fn record_create_permission_lets_others_add_records() {
    let s = Server::start().await;
    s.seed().await;
    let grant = json!({"permissions": {"record:create": [user_id(BOB)]}});
    assert_eq!(s.patch("/buckets/b/collections/c", Some(ALICE), grant).await.status, 200);
    assert_eq!(s.get("/buckets/b/collections/c", Some(BOB)).await.status, 200);
    let created = s.put(&format!("{R}/bobs"), Some(BOB), json!({})).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["permissions"], json!({"write": [user_id(BOB)]}));
    assert_eq!(s.get(&format!("{R}/nothere"), Some(BOB)).await.status, 403);
    s.stop().await;
}

//! Point-in-time reads (`?_at=`) and Kinto's history snapshots, checked against the state
//! captured by plain GETs at chosen moments of a scripted run of random writes.

use serde_json::{json, Value};

use crate::common::{Server, ALICE, BOB};

const R: &str = "/buckets/b/collections/c/records";

/// A small deterministic generator: the run is the same every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

struct Capture {
    etag: u64,
    list: Value,
    objects: Vec<(String, Option<Value>)>,
}

fn ids() -> Vec<String> {
    (0..12).map(|i| format!("r{i}")).collect()
}

#[tokio::test]
async fn reads_at_a_past_moment_equal_what_was_read_then() {
    let s = Server::start_with(&[("includes", "kinto.plugins.history")]).await;
    s.seed().await;
    let mut rng = Lcg(7);
    let mut captures = Vec::new();
    for step in 0..1000 {
        let id = format!("r{}", rng.next(12));
        let path = format!("{R}/{id}");
        match rng.next(10) {
            0..=5 => {
                s.put(&path, Some(ALICE), json!({"data": {"n": step, "tag": rng.next(3)}})).await;
            }
            6..=7 => {
                s.patch(&path, Some(ALICE), json!({"data": {"m": step}})).await;
            }
            _ => {
                s.delete(&path, Some(ALICE)).await;
            }
        }
        if step % 100 == 99 {
            let list = s.get(&format!("{R}?_sort=id&_limit=100"), Some(ALICE)).await;
            let mut objects = Vec::new();
            for id in ids() {
                let one = s.get(&format!("{R}/{id}"), Some(ALICE)).await;
                objects.push((id, (one.status == 200).then(|| one.body["data"].clone())));
            }
            captures.push(Capture { etag: list.etag(), list: list.body["data"].clone(), objects });
        }
    }
    assert_eq!(captures.len(), 10);
    // Changesets: what changed between two captures, as of the second, deletions included.
    for pair in captures.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let url = format!("{R}?_since={}&_until={}&_sort=id&_limit=100", from.etag, to.etag);
        let changes = s.get(&url, Some(ALICE)).await;
        assert_eq!(changes.status, 200);
        assert!(
            changes.header("cache-control").is_some_and(|c| c.contains("immutable")),
            "a past changeset never changes"
        );
        assert_eq!(changes.etag(), to.etag);
        let entries = changes.body["data"].as_array().cloned().unwrap_or_default();
        let live: Vec<&Value> = entries.iter().filter(|e| e.get("deleted").is_none()).collect();
        let expected: Vec<&Value> = to
            .list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["last_modified"].as_u64().is_some_and(|lm| lm > from.etag))
            .collect();
        assert_eq!(live, expected, "changes from {} to {}", from.etag, to.etag);
        let deleted: Vec<&str> =
            entries.iter().filter(|e| e["deleted"] == json!(true)).filter_map(|e| e["id"].as_str()).collect();
        for (id, then) in &from.objects {
            let now = to.objects.iter().find(|(other, _)| other == id).and_then(|(_, v)| v.as_ref());
            if then.is_some() && now.is_none() {
                assert!(deleted.contains(&id.as_str()), "{id} was deleted between the two");
            }
        }
        for id in &deleted {
            assert!(to.objects.iter().any(|(other, v)| other == id && v.is_none()), "{id} is gone at the end");
        }
    }
    for capture in &captures {
        let at = capture.etag;
        let list = s.get(&format!("{R}?_sort=id&_limit=100&_at={at}"), Some(ALICE)).await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["data"], capture.list, "list at {at}");
        for (id, then) in &capture.objects {
            let one = s.get(&format!("{R}/{id}?_at={at}"), Some(ALICE)).await;
            match then {
                Some(data) => assert_eq!(&one.body["data"], data, "{id} at {at}"),
                None => assert_eq!(one.status, 404, "{id} did not exist at {at}"),
            }
        }
        // Filters and pages apply to the past as to the present.
        let tagged = s.get(&format!("{R}?tag=1&_sort=id&_at={at}"), Some(ALICE)).await;
        let expected: Vec<&Value> =
            capture.list.as_array().into_iter().flatten().filter(|r| r["tag"] == json!(1)).collect();
        assert_eq!(tagged.body["data"].as_array().map(|a| a.iter().collect::<Vec<_>>()), Some(expected));
        let first = s.get(&format!("{R}?_sort=id&_limit=3&_at={at}"), Some(ALICE)).await;
        let mut paged: Vec<Value> = first.body["data"].as_array().cloned().unwrap_or_default();
        let mut next = first.header("next-page").map(str::to_owned);
        while let Some(url) = next {
            let page = s.get(&url, Some(ALICE)).await;
            paged.extend(page.body["data"].as_array().cloned().unwrap_or_default());
            next = page.header("next-page").map(str::to_owned);
        }
        assert_eq!(Value::Array(paged), capture.list, "pages at {at}");
        // Kinto's snapshot endpoint: the same records, newest first.
        let snapshot = s.get(&format!("/buckets/b/snapshot/collections/c@{at}"), Some(ALICE)).await;
        let mut got: Vec<Value> = snapshot.body["data"].as_array().cloned().unwrap_or_default();
        got.sort_by_key(|r| r["id"].as_str().map(str::to_owned));
        assert_eq!(Value::Array(got), capture.list, "snapshot at {at}");
    }
    s.stop().await;
}

#[tokio::test]
async fn point_in_time_reads_are_authorized_today_and_refuse_bad_points() {
    let s = Server::start_with(&[("includes", "kinto.plugins.history")]).await;
    s.seed().await;
    let created = s.put(&format!("{R}/r"), Some(ALICE), json!({"data": {"v": 1}})).await;
    let then = created.etag();
    s.put(&format!("{R}/r"), Some(ALICE), json!({"data": {"v": 2}})).await;
    let old = s.get(&format!("{R}/r?_at={then}"), Some(ALICE)).await;
    assert_eq!(old.body["data"]["v"], 1);
    assert_eq!(old.etag(), then, "the version's own timestamp");
    assert_eq!(s.get(&format!("{R}/r?_at={}", then - 1), Some(ALICE)).await.status, 404, "not created yet");
    assert_eq!(s.get(&format!("{R}/r?_at={then}"), Some(BOB)).await.status, 403, "today's permissions decide");
    let bad = s.get(&format!("{R}?_at=yesterday"), Some(ALICE)).await;
    assert_eq!((bad.status.as_u16(), bad.errno()), (400, 107));
    let snapshot_bad = s.get("/buckets/b/snapshot/collections/c@-1", Some(ALICE)).await;
    assert_eq!(snapshot_bad.status, 400);
    assert_eq!(s.get(&format!("/buckets/b/snapshot/collections/c@{then}"), Some(BOB)).await.status, 403);
    assert_eq!(s.get(&format!("/buckets/b/snapshot/collections/c@{then}"), None).await.status, 401);
    s.stop().await;
}

/// `/permissions?_at=` lists what the caller held then: grants revoked since are back, grants
/// made since are not.
#[tokio::test]
async fn permissions_at_a_past_moment() {
    let s = Server::start_with(&[("experimental_permissions_endpoint", "true")]).await;
    s.seed().await;
    let bob = crate::common::user_id(BOB);
    let granted = s.put("/buckets/b/collections/c", Some(ALICE), json!({"permissions": {"read": [bob.clone()]}})).await;
    let then = granted.etag();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.put("/buckets/b/collections/c", Some(ALICE), json!({"permissions": {"read": []}})).await;
    s.put("/buckets/b/collections/later", Some(ALICE), json!({"permissions": {"write": [bob.clone()]}})).await;

    let uris = |reply: &crate::common::Reply| -> Vec<(String, Value)> {
        reply.body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["uri"].as_str().unwrap_or("").to_owned(), e["permissions"].clone()))
            .filter(|(uri, _)| uri != "/")
            .collect()
    };
    let now = s.get("/permissions", Some(BOB)).await;
    assert_eq!(
        uris(&now),
        [("/buckets/b/collections/later".to_owned(), json!(["read", "read:attributes", "record:create", "write"]))]
    );
    let past = s.get(&format!("/permissions?_at={then}"), Some(BOB)).await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!(uris(&past), [("/buckets/b/collections/c".to_owned(), json!(["read", "read:attributes"]))]);
    assert_eq!(past.etag(), then);
    let bad = s.get("/permissions?_at=yesterday", Some(BOB)).await;
    assert_eq!(bad.status, 400);
    s.stop().await;
}

//! Several servers on one PostgreSQL database (`TM_TEST_BACKEND=postgresql`; skipped on the
//! other backends, which one process owns): writes from any node are serialised into one log,
//! every node reads and polls every change, and a subscriber on either node receives every
//! change, once, in seq order.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::common::{backend, test_settings, Server, ALICE};
use crate::streams::{changes, connect, subscribe};

const R: &str = "/buckets/b/collections/c/records";

/// Two servers sharing the test configuration and so its database (and its Redis cache); None
/// on the other backends, which one process owns.
async fn two_nodes() -> Option<(Server, Server)> {
    two_nodes_with(&[]).await
}

async fn two_nodes_with(overrides: &[(&str, &str)]) -> Option<(Server, Server)> {
    if backend() != "postgresql" {
        return None;
    }
    let (settings, dir) = test_settings(overrides);
    let a = tidemark_server::open_engine(&settings).expect("engine a");
    let b = tidemark_server::open_engine(&settings).expect("engine b");
    let a = Server::start_engine(a, settings.clone(), dir).await;
    let b = Server::start_engine(b, settings, tempfile::tempdir().expect("tempdir")).await;
    Some((a, b))
}

#[tokio::test]
async fn two_servers_on_one_database_serialise_writes_and_stream_every_change_to_both() {
    let Some((a, b)) = two_nodes().await else { return };
    a.seed().await;
    let filter = json!({"bucket": "b", "collection": "c"});
    let mut on_a = connect(&a, Some(ALICE)).await;
    let mut on_b = connect(&b, Some(ALICE)).await;
    assert_eq!(subscribe(&mut on_a, "s", filter.clone(), json!("now"), false).await["type"], "subscribed");
    assert_eq!(subscribe(&mut on_b, "s", filter, json!("now"), false).await["type"], "subscribed");

    // Four writers, two per node, 25 records each; a poller on node b follows `_since` meanwhile,
    // from each answer's ETag as Kinto's clients do (an ETag newer than its page would skip
    // records).
    let nodes = [&a, &b];
    let writes = (0..4).map(|w| async move {
        let node = nodes[w % 2];
        for i in 0..25 {
            let r = node.put(&format!("{R}/w{w}-{i}"), Some(ALICE), json!({"data": {"w": w}})).await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
    });
    let poll = async {
        let (mut since, mut seen) = (0u64, HashSet::new());
        for _ in 0..400 {
            let page = b.get(&format!("{R}?_since={since}&_sort=last_modified"), Some(ALICE)).await;
            for record in page.body["data"].as_array().cloned().unwrap_or_default() {
                seen.insert(record["id"].as_str().unwrap_or_default().to_owned());
            }
            assert!(page.header("etag").is_some(), "{}", page.body);
            since = page.etag();
            if seen.len() == 100 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        seen
    };
    let (_, polled) = tokio::join!(futures_util::future::join_all(writes), poll);
    assert_eq!(polled.len(), 100, "polling node b with _since missed none of both nodes' writes");

    for (name, socket) in [("a", &mut on_a), ("b", &mut on_b)] {
        let got = changes(socket, 100).await;
        assert_eq!(got.len(), 100, "subscriber on node {name}");
        let cursors: Vec<&str> = got.iter().filter_map(|f| f["cursor"].as_str()).collect();
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "node {name}: in seq order");
        let ids: HashSet<&str> = got.iter().filter_map(|f| f["id"].as_str()).collect();
        assert_eq!(ids.len(), 100, "node {name}: each change once");
    }
    // One list, whichever node answers; its timestamps strictly increase with the log.
    let on_a_list = a.get(&format!("{R}?_sort=last_modified"), Some(ALICE)).await;
    let on_b_list = b.get(&format!("{R}?_sort=last_modified"), Some(ALICE)).await;
    assert_eq!(on_a_list.body, on_b_list.body);
    assert_eq!(on_a_list.etag(), on_b_list.etag());
    let stamps: Vec<u64> =
        on_a_list.body["data"].as_array().into_iter().flatten().filter_map(|r| r["last_modified"].as_u64()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "per-collection timestamps strictly increase");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn preconditions_hold_across_servers() {
    let Some((a, b)) = two_nodes().await else { return };
    a.seed().await;
    // The same id created on both nodes at once: exactly one 201, the other 412.
    for round in 0..10 {
        let path = format!("{R}/once-{round}");
        let body = json!({"data": {"round": round}});
        let star = [("If-None-Match", "*")];
        let (ra, rb) = tokio::join!(
            a.call("PUT", &path, Some(ALICE), Some(body.clone()), &star),
            b.call("PUT", &path, Some(ALICE), Some(body.clone()), &star)
        );
        let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 412], "round {round}");
    }
    // An update on node a with the version node b read: then b's stale If-Match fails.
    let created = b.put(&format!("{R}/shared"), Some(ALICE), json!({"data": {"n": 0}})).await;
    let etag = format!("\"{}\"", created.etag());
    let path = format!("{R}/shared");
    let if_match = [("If-Match", etag.as_str())];
    let first = a.call("PUT", &path, Some(ALICE), Some(json!({"data": {"n": 1}})), &if_match).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let stale = b.call("PUT", &path, Some(ALICE), Some(json!({"data": {"n": 2}})), &if_match).await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    let current: Value = b.get(&format!("{R}/shared"), Some(ALICE)).await.body;
    assert_eq!(current["data"]["n"], 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_plural_deletes_next_page_from_one_server_works_once_on_the_other() {
    let Some((a, b)) = two_nodes().await else { return };
    a.seed().await;
    for i in 0..4 {
        a.put(&format!("{R}/r{i}"), Some(ALICE), json!({})).await;
    }
    let first = a.delete(&format!("{R}?_limit=2"), Some(ALICE)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let next = first.header("next-page").expect("Next-Page").to_owned();
    let path = next.split("/v1").nth(1).expect("a /v1 URL").to_owned();
    let second = b.delete(&path, Some(ALICE)).await;
    assert_eq!(second.status, 200, "node b honours node a's token: {}", second.body);
    assert_eq!(second.body["data"].as_array().map(Vec::len), Some(2));
    let again = a.delete(&path, Some(ALICE)).await;
    assert_eq!(again.status, 400, "a token is used once, whichever server: {}", again.body);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_rate_limit_holds_across_servers() {
    let Some((a, b)) = two_nodes_with(&[("rate_limit_per_second", "0.01"), ("rate_limit_burst", "3")]).await else {
        return;
    };
    let statuses = [
        a.get("/buckets", Some(ALICE)).await.status.as_u16(),
        b.get("/buckets", Some(ALICE)).await.status.as_u16(),
        a.get("/buckets", Some(ALICE)).await.status.as_u16(),
        b.get("/buckets", Some(ALICE)).await.status.as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 200, 429], "one bucket of 3 for both servers");
    let heartbeat = b.get("/__heartbeat__", None).await;
    assert_eq!(heartbeat.body["cache"], true, "{}", heartbeat.body);
    a.stop().await;
    b.stop().await;
}

/// Pending logins live in the cache backend: a login begun on one server ends on the other,
/// once.
#[tokio::test]
async fn an_openid_login_begun_on_one_server_ends_on_the_other() {
    use crate::openid::{openid_settings, provider, urlencode};
    let issuer = provider().await;
    let Some((a, b)) = two_nodes_with(&openid_settings(&issuer)).await else { return };
    let login = format!("/openid/openid/login?callback={}&scope=openid", urlencode("http://app.example/cb#"));
    let sent = a.get(&login, None).await;
    assert_eq!(sent.status, 307, "{}", sent.body);
    let location = sent.header("location").expect("location").to_owned();
    let state = location.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state").to_owned();
    let back = b.get(&format!("/openid/openid/token?code=good&state={state}"), None).await;
    assert_eq!(back.status, 307, "{}", back.body);
    assert!(back.header("location").is_some_and(|l| l.starts_with("http://app.example/cb#")));
    let again = a.get(&format!("/openid/openid/token?code=good&state={state}"), None).await;
    assert_eq!(again.status, 400, "a login's state is used once, whichever server");
    a.stop().await;
    b.stop().await;
}

//! The utility endpoints and the version-prefix redirects.

use serde_json::json;

use crate::common::{user_id, Server, ALICE};

#[tokio::test]
async fn hello_describes_the_server_and_the_user() {
    let s = Server::start().await;
    let anonymous = s.get("/", None).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.body["http_api_version"], "1.23");
    assert_eq!(anonymous.body["url"], format!("{}/", s.base));
    assert_eq!(anonymous.body["settings"]["batch_max_requests"], 25);
    assert!(anonymous.body["capabilities"].get("basicauth").is_some());
    assert!(anonymous.body.get("user").is_none());
    let alice = s.get("/", Some(ALICE)).await;
    assert_eq!(alice.body["user"]["id"], user_id(ALICE));
    let principals = alice.body["user"]["principals"].as_array().cloned().unwrap_or_default();
    assert_eq!(principals[0], json!(user_id(ALICE)));
    assert!(principals.contains(&json!("system.Authenticated")));
    assert!(principals.contains(&json!("system.Everyone")));
    s.stop().await;
}

#[tokio::test]
async fn heartbeats_version_and_contribute_answer() {
    let s = Server::start().await;
    let heartbeat = s.get("/__heartbeat__", None).await;
    assert_eq!(heartbeat.status, 200);
    for check in ["storage", "permission", "cache"] {
        assert_eq!(heartbeat.body[check], true, "{}", heartbeat.body);
    }
    let engine = &heartbeat.body["engine"];
    assert_eq!((engine["writable"].clone(), engine["view_lag"].clone()), (json!(true), json!(0)), "{engine}");
    assert_eq!(engine["head_seq"], 0, "{engine}");
    s.seed().await;
    let engine = s.get("/__heartbeat__", None).await.body["engine"].clone();
    assert!(engine["head_seq"].as_u64().is_some_and(|seq| seq > 0), "{engine}");
    if crate::common::backend() == "sled" {
        assert!(engine["last_flush_ms"].as_f64().is_some(), "a flush has run: {engine}");
    }
    assert_eq!(s.get("/__lbheartbeat__", None).await.body, json!({}));
    assert_eq!(s.get("/__version__", None).await.body["name"], "tidemark");
    assert!(s.get("/contribute.json", None).await.body.get("repository").is_some());
    s.stop().await;
}

#[tokio::test]
async fn unprefixed_paths_redirect_to_v1_keeping_method_and_query() {
    let s = Server::start().await;
    let root = format!("http://{}", s.addr);
    let r = s.call("GET", &format!("{root}/buckets?x=1"), None, None, &[]).await;
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(format!("{root}/v1/buckets?x=1").as_str()));
    assert!(r.header("cache-control").is_none());
    let put = s.call("PUT", &format!("{root}/accounts/bob"), None, Some(json!({})), &[]).await;
    assert_eq!(put.status, 307);
    assert_eq!(put.header("location"), Some(format!("{root}/v1/accounts/bob").as_str()));
    let v1 = s.call("GET", &format!("{root}/v1"), None, None, &[]).await;
    assert_eq!(v1.status, 307);
    assert_eq!(v1.header("location"), Some(format!("{root}/v1/").as_str()));
    assert_eq!(v1.header("cache-control"), Some("max-age=3600"));
    let slash = s.get("/buckets/", Some(ALICE)).await;
    assert_eq!(slash.status, 307);
    assert_eq!(slash.header("location"), Some(format!("{root}/v1/buckets").as_str()));
    let bare = s.call("GET", &format!("{root}/"), None, None, &[]).await;
    assert_eq!(bare.header("location"), Some(format!("{root}/v1/").as_str()));
    s.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let s = Server::start().await;
    let pre = s
        .call(
            "OPTIONS",
            "/buckets/b",
            None,
            None,
            &[("Origin", "http://example.org"), ("Access-Control-Request-Method", "PUT")],
        )
        .await;
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre.header("access-control-allow-methods").is_some_and(|m| m.contains("PUT")));
    assert_eq!(pre.header("access-control-max-age"), Some("3600"));
    let missing = s.call("OPTIONS", "/buckets/b", None, None, &[]).await;
    assert_eq!(missing.status, 400);
    let simple = s.call("GET", "/", None, None, &[("Origin", "http://example.org")]).await;
    assert_eq!(simple.header("access-control-allow-origin"), Some("*"));
    s.stop().await;
}

#[tokio::test]
async fn flush_endpoint_empties_the_server() {
    let s = Server::start().await;
    s.seed().await;
    let flushed = s.post("/__flush__", None, json!({})).await;
    assert_eq!(flushed.status, 202);
    assert_eq!(s.get("/buckets/b", Some(ALICE)).await.status, 403);
    assert_eq!(s.put("/buckets/b", Some(ALICE), json!({})).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn end_of_service_warns_before_and_answers_410_after() {
    let future = Server::start_with(&[("eos", "2999-01-01"), ("eos_message", "Moving on")]).await;
    let r = future.get("/", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["eos"], "2999-01-01");
    let alert: serde_json::Value = serde_json::from_str(r.header("alert").unwrap_or("{}")).unwrap_or_default();
    assert_eq!(alert["code"], "soft-eol");
    assert_eq!(alert["message"], "Moving on");
    future.stop().await;
    let past = Server::start_with(&[("eos", "2000-01-01")]).await;
    let r = past.get("/buckets", Some(ALICE)).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.errno(), 202);
    assert!(r.header("alert").is_some_and(|a| a.contains("hard-eol")));
    past.stop().await;
}

#[tokio::test]
async fn backoff_is_sent_on_every_response() {
    let s = Server::start_with(&[("backoff", "10")]).await;
    assert_eq!(s.get("/", None).await.header("backoff"), Some("10"));
    assert_eq!(s.get("/buckets", None).await.header("backoff"), Some("10"), "401s too");
    s.stop().await;
    // `backoff_percentage`: only that share of responses carries it.
    for (share, low, high) in [("0", 0, 0), ("100", 200, 200), ("50", 40, 160)] {
        let s = Server::start_with(&[("backoff", "10"), ("backoff_percentage", share)]).await;
        let mut backing_off = 0;
        for _ in 0..200 {
            backing_off += usize::from(s.get("/__lbheartbeat__", None).await.header("backoff").is_some());
        }
        assert!((low..=high).contains(&backing_off), "{share}%: {backing_off} of 200");
        s.stop().await;
    }
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_request_ids_travel_with_them() {
    let s = Server::start_with(&[("includes", "kinto.plugins.prometheus kinto.plugins.history")]).await;
    s.seed().await;
    let created = s
        .call(
            "PUT",
            "/buckets/b/collections/c/records/r",
            Some(ALICE),
            Some(json!({"data": {}})),
            &[("X-Request-Id", "trace-me")],
        )
        .await;
    assert_eq!(created.header("x-request-id"), Some("trace-me"), "a client's id is kept");
    let fresh = s.get("/buckets/b", Some(ALICE)).await;
    let id = fresh.header("x-request-id").expect("an id is made when none is sent");
    assert_eq!(id.len(), 36, "{id}");
    let history = s.get("/buckets/b/history?record_id=r", Some(ALICE)).await;
    assert_eq!(history.body["data"][0]["context"]["request_id"], "trace-me", "the event remembers it");
    s.get("/buckets/b/collections/c/records/nope", Some(ALICE)).await;

    let scraped = s.get("/__metrics__", None).await;
    assert_eq!(scraped.status, 200);
    assert!(scraped.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    let text = String::from_utf8_lossy(&scraped.raw).into_owned();
    let value = |line: &str| -> Option<f64> {
        text.lines().find(|l| l.starts_with(line)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value(r#"tidemark_requests_total{endpoint="bucket-object",method="PUT",status="201"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(r#"tidemark_requests_total{endpoint="record-object",method="GET",status="404"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(r#"tidemark_requests_total{endpoint="history",method="GET",status="200"}"#), Some(1.0), "{text}");
    assert!(
        value(r#"tidemark_request_duration_seconds_count{endpoint="record-object",method="PUT"}"#) == Some(1.0),
        "{text}"
    );
    assert_eq!(value("tidemark_log_head_seq"), Some(3.0), "{text}");
    // Three commits, one event each: the engine told the metrics of every one.
    assert_eq!(value("tidemark_commit_events_count"), Some(3.0), "{text}");
    assert_eq!(value("tidemark_commit_events_sum"), Some(3.0), "{text}");
    assert!(value("tidemark_commit_apply_seconds_count").is_some_and(|n| n >= 1.0), "{text}");
    if crate::common::backend() == "sled" {
        assert!(value("tidemark_flush_seconds_count").is_some_and(|n| n >= 1.0), "{text}");
    }
    assert_eq!(value("tidemark_stream_connections"), Some(0.0), "{text}");
    assert_eq!(value("tidemark_view_lag_events"), Some(0.0), "{text}");
    s.stop().await;
    // Without the plugin, no endpoint.
    let plain = Server::start().await;
    assert_eq!(plain.get("/__metrics__", None).await.status, 404);
    plain.stop().await;
}

#[tokio::test]
async fn each_principal_is_rate_limited_on_its_own_bucket() {
    let s = Server::start_with(&[("rate_limit_per_second", "1"), ("rate_limit_burst", "3")]).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(s.get("/buckets", Some(ALICE)).await.status.as_u16());
        }
        out
    };
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    let refused = s.get("/buckets", Some(ALICE)).await;
    assert_eq!((refused.status.as_u16(), refused.errno()), (429, 999));
    assert!(refused.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1));
    assert_eq!(s.get("/buckets", Some(crate::common::BOB)).await.status, 200, "another principal, another bucket");
    s.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_bound_are_shed_with_503() {
    // A wrong password of an account is checked by bcrypt: long enough for requests to overlap.
    let s = Server::start_with(&[
        ("max_concurrent_requests", "1"),
        ("includes", "kinto.plugins.accounts"),
        ("multiauth.policies", "account"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
        ("account_create_principals", "system.Everyone"),
    ])
    .await;
    assert_eq!(s.put("/accounts/somebody", None, json!({"data": {"password": "right"}})).await.status, 201);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (client, url) = (s.client.clone(), format!("{}/buckets", s.base));
        calls.push(tokio::spawn(async move {
            let reply = client.get(url).basic_auth("somebody", Some("wrong")).send().await.expect("request");
            let retry = reply.headers().get("retry-after").is_some();
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            (status, body["errno"].as_u64(), retry)
        }));
    }
    let mut shed = 0;
    for call in calls {
        let (status, errno, retry) = call.await.expect("task");
        match status {
            503 => {
                shed += 1;
                assert_eq!(errno, Some(201));
                assert!(retry, "503 says when to retry");
            }
            401 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "one place, eight overlapping requests: some are shed");
    s.stop().await;
}

/// kinto.plugins.admin serves the Kinto Admin build from `admin_assets_path` as Kinto does.
#[tokio::test]
async fn the_admin_app_is_served_under_the_prefix() {
    let assets = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(assets.path().join("assets")).expect("dir");
    std::fs::write(assets.path().join("index.html"), "<html><script src=\"/v1/admin/assets/app.js\"></script></html>")
        .expect("index");
    std::fs::write(assets.path().join("assets/app.js"), "console.log('admin')").expect("js");
    std::fs::write(assets.path().join("VERSION"), "6.2.0\n").expect("version");
    let path = assets.path().display().to_string();
    let s = Server::start_with(&[("includes", "kinto.plugins.admin"), ("admin_assets_path", &path)]).await;
    let hello = s.get("/", None).await;
    assert_eq!(hello.body["capabilities"]["admin"]["version"], "6.2.0");
    assert!(hello.body["capabilities"]["permissions_endpoint"].is_object(), "the admin needs /permissions");
    let redirect = s.get("/admin", None).await;
    assert_eq!(redirect.status, 307);
    assert!(redirect.header("location").is_some_and(|l| l.ends_with("/v1/admin/")));
    let page = s.get("/admin/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.starts_with("default-src 'self'")));
    assert!(String::from_utf8_lossy(&page.raw).contains("/v1/admin/assets/app.js"));
    let script = s.get("/admin/assets/app.js", None).await;
    assert_eq!((script.status.as_u16(), script.header("content-type")), (200, Some("text/javascript; charset=UTF-8")));
    assert_eq!(script.raw, b"console.log('admin')");
    for missing in ["/admin/assets/nope.js", "/admin/..%2FCargo.toml", "/admin/assets/..%2F..%2Findex.html"] {
        assert_eq!(s.get(missing, None).await.status, 404, "{missing}");
    }
    s.stop().await;
    let bare = Server::start_with(&[("includes", "kinto.plugins.admin")]).await;
    let help = bare.get("/admin/", None).await;
    assert_eq!(help.status, 200);
    assert!(String::from_utf8_lossy(&help.raw).contains("admin_assets_path"));
    bare.stop().await;
    let without = Server::start().await;
    assert_eq!(without.get("/admin/", None).await.status, 307, "as any path with a trailing slash");
    assert_eq!(without.get("/admin", None).await.status, 404, "no plugin, no admin");
    without.stop().await;
}

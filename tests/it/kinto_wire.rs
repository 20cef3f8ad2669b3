//! Responses compared side by side with Kinto 26.5.0: each test pins what Kinto answered to
//! the same request (status, headers, body), so that a client switching over sees no change.

use serde_json::{json, Value};

use crate::common::{Server, ALICE, BOB};

const R: &str = "/buckets/b/collections/c/records";

/// The test server with the plugins and the schema validation of the reference Kinto.
async fn kinto_like(extra: &[(&str, &str)]) -> Server {
    let mut settings = vec![
        ("includes", "kinto.plugins.accounts kinto.plugins.flush"),
        ("multiauth.policies", "account basicauth"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
        ("account_create_principals", "system.Everyone"),
        ("experimental_permissions_endpoint", "true"),
        ("experimental_collection_schema_validation", "true"),
    ];
    settings.extend_from_slice(extra);
    Server::start_with(&settings).await
}

#[tokio::test]
async fn an_empty_userid_hmac_secret_is_the_hmac_key_as_given() {
    let s = Server::start_with(&[("userid_hmac_secret", "")]).await;
    let hello = s.get("/", Some("mat:secret")).await;
    // Kinto's id for mat:secret under `kinto.userid_hmac_secret =`.
    assert_eq!(hello.body["user"]["id"], "basicauth:8a931a10fc88ab2f6d1cc02a07d3a81b5d4768f6f13e85c5d8d4180419acb1b4");
    s.stop().await;
}

#[tokio::test]
async fn collection_cache_expires_is_an_integer_that_caches_anonymous_record_reads() {
    let s = Server::start().await;
    s.seed().await;
    let bad = s.put("/buckets/b/collections/x", Some(ALICE), json!({"data": {"cache_expires": "abc"}})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["message"], "data.cache_expires in body: \"abc\" is not a number");
    assert_eq!(bad.body["details"][0]["name"], "data.cache_expires");
    for (sent, stored) in [(json!("10"), json!(10)), (json!(1.5), json!(1)), (json!(-5), json!(-5))] {
        let ok = s.put("/buckets/b/collections/x", Some(ALICE), json!({"data": {"cache_expires": sent}})).await;
        assert_eq!(ok.body["data"]["cache_expires"], stored);
    }

    let public = json!({"read": ["system.Everyone"]});
    let collection = json!({"data": {"cache_expires": 3600}, "permissions": public});
    assert_eq!(s.put("/buckets/b/collections/cached", Some(ALICE), collection).await.status, 201);
    s.put("/buckets/b/collections/cached/records/r1", Some(ALICE), json!({"data": {"title": "hello"}})).await;
    for path in ["/buckets/b/collections/cached/records/r1", "/buckets/b/collections/cached/records"] {
        let anonymous = s.get(path, None).await;
        assert_eq!(anonymous.header("cache-control"), Some("max-age=3600"), "{path}");
        assert!(anonymous.header("expires").is_some(), "{path}");
        let authenticated = s.get(path, Some(ALICE)).await;
        assert_eq!(authenticated.header("cache-control"), Some("no-cache, no-store"), "{path}");
        assert!(authenticated.header("expires").is_none());
    }
    let collection = json!({"data": {"cache_expires": 0}, "permissions": public});
    s.put("/buckets/b/collections/cached", Some(ALICE), collection).await;
    let anonymous = s.get("/buckets/b/collections/cached/records/r1", None).await;
    assert_eq!(anonymous.header("cache-control"), Some("max-age=0, must-revalidate, no-cache, no-store"));
    assert_eq!(anonymous.header("pragma"), Some("no-cache"));
    assert!(anonymous.header("expires").is_some());
    s.stop().await;
}

#[tokio::test]
async fn group_members_default_only_with_data_and_hello_lists_group_principals() {
    let s = Server::start().await;
    s.seed().await;
    let only_permissions = json!({"permissions": {"read": ["system.Everyone"]}});
    let g = s.put("/buckets/b/groups/g2", Some(ALICE), only_permissions).await;
    assert_eq!(g.status, 201);
    assert!(g.body["data"].get("members").is_none(), "{}", g.body);
    assert_eq!(
        s.put("/buckets/b/groups/g3", Some(ALICE), json!({"data": {}})).await.body["data"]["members"],
        json!([])
    );
    let bad = s.put("/buckets/b/groups/g4", Some(ALICE), json!({"data": {"members": [1, 2]}})).await;
    assert_eq!(bad.body["message"], "data.members.0 in body: 1 is not a string: {'': ''}");
    assert_eq!(bad.body["details"].as_array().map(Vec::len), Some(2));

    let alice = crate::common::user_id(ALICE);
    s.put("/buckets/b/groups/g1", Some(ALICE), json!({"data": {"members": [alice]}})).await;
    let hello = s.get("/", Some(ALICE)).await;
    assert_eq!(
        hello.body["user"]["principals"],
        json!([alice, "system.Authenticated", "/buckets/b/groups/g1", "system.Everyone"])
    );
    let keys: Vec<&str> = hello.body.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(keys.iter().rev().take(2).collect::<Vec<_>>(), [&"capabilities", &"user"], "Kinto's key order");
    s.stop().await;
}

#[tokio::test]
async fn a_parent_with_an_invalid_id_is_a_missing_parent() {
    let s = Server::start().await;
    s.seed().await;
    for parent in ["/buckets/b/collections/%22quoted%22", "/buckets/b/collections/caf%C3%A9"] {
        let owner = s.get(&format!("{parent}/records"), Some(ALICE)).await;
        assert_eq!(owner.status, 404, "{parent}");
        assert_eq!(owner.errno(), 111);
        assert_eq!(owner.body["details"]["resource_name"], "collection");
        assert_eq!(s.get(&format!("{parent}/records"), Some(BOB)).await.status, 403);
        assert_eq!(s.get(&format!("{parent}/records"), None).await.status, 401);
    }
    // Error bodies are rendered by Python's json in Kinto: lower-case escapes.
    let owner = s.get("/buckets/b/collections/caf%C3%A9/records", Some(ALICE)).await;
    assert!(
        String::from_utf8_lossy(&owner.raw).contains(r#""id":"caf\u00e9""#),
        "{}",
        String::from_utf8_lossy(&owner.raw)
    );
    assert_eq!(s.get("/buckets/%22qb%22/collections/c/records", Some(ALICE)).await.status, 403);

    // An encoded `/` is a separator, as in Kinto (Pyramid decodes before routing): the path is
    // the one it spells, authorized as such.
    let grant = json!({"permissions": {"write": [crate::common::user_id(BOB)]}});
    assert_eq!(s.put("/buckets/b/collections/x", Some(ALICE), grant).await.status, 201);
    let nested = "/buckets/b%2Fcollections%2Fx/collections/y";
    assert_eq!(s.put(nested, Some(BOB), json!({})).await.status, 404, "no collections in a collection");
    let aliased = "/buckets/b%2Fcollections%2Fx/records";
    assert_eq!(s.get(aliased, Some(BOB)).await.status, 200, "collection x's records, which bob may read");
    assert_eq!(s.get("/buckets/b%2Fcollections%2Fz/records", Some(BOB)).await.status, 403);
    s.stop().await;
}

#[tokio::test]
async fn filter_values_are_read_as_json() {
    let s = Server::start().await;
    s.seed().await;
    for (id, data) in [
        ("ra", json!({"x": 1, "flavor": "strawberry", "done": true, "v": null, "tag": [1, 2]})),
        ("rb", json!({"x": "1", "done": "true", "v": "null", "tag": [2, 1]})),
    ] {
        s.put(&format!("{R}/{id}"), Some(ALICE), json!({ "data": data })).await;
    }
    let ids = |reply: crate::common::Reply| -> Vec<String> {
        let data = reply.body["data"].as_array().cloned().unwrap_or_default();
        let mut ids: Vec<String> = data.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect();
        ids.sort();
        ids
    };
    for (query, expected) in [
        ("x=1", vec!["ra"]),
        ("x=%221%22", vec!["rb"]),
        ("flavor=%22strawberry%22", vec!["ra"]),
        ("flavor=strawberry", vec!["ra"]),
        ("done=true", vec!["ra"]),
        ("done=%22true%22", vec!["rb"]),
        ("v=null", vec!["ra"]),
        ("tag=%5B1,2%5D", vec!["ra"]),
    ] {
        assert_eq!(ids(s.get(&format!("{R}?{query}"), Some(ALICE)).await), expected, "{query}");
    }
    s.stop().await;
}

#[tokio::test]
async fn schema_documents_must_be_valid_even_with_validation_off() {
    let s = Server::start().await;
    s.seed().await;
    let washmachine = json!({"type": "Washmachine"});
    let collection = s.put("/buckets/b/collections/x", Some(ALICE), json!({"data": {"schema": washmachine}})).await;
    assert_eq!(collection.status, 400);
    assert_eq!(
        collection.body["message"],
        "data.schema in body: type'Washmachine' is not valid under any of the given schemas"
    );
    for field in ["record:schema", "collection:schema", "group:schema"] {
        let bucket = s.put("/buckets/other", Some(ALICE), json!({"data": {field: washmachine}})).await;
        assert_eq!(bucket.status, 400, "{field}");
        assert_eq!(bucket.body["details"][0]["name"], format!("data.{field}"));
    }
    let not_an_object = s.put("/buckets/b/collections/x", Some(ALICE), json!({"data": {"schema": "nope"}})).await;
    assert_eq!(
        not_an_object.body["message"],
        "data.schema in body: \"nope\" is not a mapping type: Does not implement dict-like functionality."
    );
    // Off by default: data is not validated.
    let schema = json!({"type": "object", "required": ["title"]});
    s.put("/buckets/b/collections/x", Some(ALICE), json!({"data": {"schema": schema}})).await;
    assert_eq!(s.put("/buckets/b/collections/x/records/r", Some(ALICE), json!({"data": {}})).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn records_collections_and_groups_are_validated_against_their_schemas() {
    // A listener that counts connections: a `$ref` to it must never be fetched.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let remote = format!("http://{}/schema.json", listener.local_addr().expect("addr"));

    let s = kinto_like(&[]).await;
    let hello = s.get("/", None).await;
    assert!(hello.body["capabilities"].get("schema").is_some());
    s.seed().await;
    let schema = json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]});
    let collection = s.put("/buckets/b/collections/s", Some(ALICE), json!({"data": {"schema": schema}})).await;
    let version = collection.body["data"]["last_modified"].clone();
    let r = "/buckets/b/collections/s/records";
    let wrong_type = s.put(&format!("{r}/r1"), Some(ALICE), json!({"data": {"title": 5}})).await;
    assert_eq!(wrong_type.status, 400);
    assert_eq!(wrong_type.body["message"], "title in body: 5 is not of type 'string'");
    assert_eq!(
        wrong_type.body["details"][0],
        json!({"location": "body", "name": "title", "description": "5 is not of type 'string'"})
    );
    let missing = s.post(r, Some(ALICE), json!({"data": {}})).await;
    assert_eq!(missing.body["message"], "'title' is a required property");
    assert_eq!(missing.body["details"][0]["name"], "title");
    let ok = s.put(&format!("{r}/r1"), Some(ALICE), json!({"data": {"title": "ok"}})).await;
    assert_eq!(ok.status, 201);
    assert_eq!(ok.body["data"]["schema"], version, "the record carries its schema's version");
    let patched = s.patch(&format!("{r}/r1"), Some(ALICE), json!({"data": {"title": 5}})).await;
    assert_eq!(patched.body["message"], "title in body: 5 is not of type 'string'");

    let by_ref = json!({"type": "object", "properties": {"title": {"$ref": remote}}});
    assert_eq!(s.put("/buckets/b/collections/ref", Some(ALICE), json!({"data": {"schema": by_ref}})).await.status, 201);
    let unresolvable =
        s.put("/buckets/b/collections/ref/records/r", Some(ALICE), json!({"data": {"title": "x"}})).await;
    assert_eq!(unresolvable.status, 400);
    assert_eq!(unresolvable.body["message"], format!("Unresolvable: {remote}"));
    assert_eq!(unresolvable.body["details"][0]["name"], "schema");
    assert!(listener.accept().is_err(), "a $ref URL was fetched");

    // The bucket's schemas apply to every collection, group and record under it.
    let bucket_schemas = json!({"data": {
        "record:schema": {"type": "object", "properties": {"count": {"type": "integer"}}},
        "collection:schema": {"type": "object", "properties": {"label": {"type": "string"}}},
        "group:schema": {"type": "object", "properties": {"members": {"maxItems": 1}}},
    }});
    assert_eq!(s.put("/buckets/b", Some(ALICE), bucket_schemas).await.status, 200);
    let record = s.put(&format!("{R}/r2"), Some(ALICE), json!({"data": {"count": "x"}})).await;
    assert_eq!(record.body["message"], "count in body: 'x' is not of type 'integer'");
    let collection = s.put("/buckets/b/collections/y", Some(ALICE), json!({"data": {"label": 1}})).await;
    assert_eq!(collection.body["message"], "label in body: 1 is not of type 'string'");
    let group = s.put("/buckets/b/groups/g", Some(ALICE), json!({"data": {"members": ["a", "b"]}})).await;
    assert_eq!(group.body["message"], "members in body: ['a', 'b'] is too long");
    s.stop().await;
}

#[tokio::test]
async fn version_comes_from_a_version_json_as_in_kinto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("version.json");
    std::fs::write(&file, r#"{"name":"deployed","version":"1.2.3","source":"x","commit":"abc"}"#).expect("write");
    let path = file.display().to_string();
    let s = Server::start_with(&[("version_json_path", &path)]).await;
    let version = s.get("/__version__", None).await;
    assert_eq!(version.status, 200);
    assert_eq!(version.body, json!({"name": "deployed", "version": "1.2.3", "source": "x", "commit": "abc"}));
    s.stop().await;

    let missing = dir.path().join("absent.json").display().to_string();
    let s = Server::start_with(&[("version_json_path", &missing)]).await;
    let version = s.get("/__version__", None).await;
    assert_eq!(version.status, 500);
    assert_eq!(version.errno(), 999);
    s.stop().await;
}

#[tokio::test]
async fn every_412_carries_the_current_timestamp() {
    let s = Server::start().await;
    s.seed().await;
    let existing = s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {}})).await;
    let list_etag = s.get(R, Some(ALICE)).await.header("etag").map(str::to_owned);
    let cases = [
        ("PUT", format!("{R}/new"), ("If-Match", "*"), list_etag.clone()),
        ("POST", R.to_owned(), ("If-Match", "\"1\""), list_etag.clone()),
        ("PUT", format!("{R}/r1"), ("If-Match", "\"1\""), existing.header("etag").map(str::to_owned)),
        ("PUT", format!("{R}/r1"), ("If-None-Match", "*"), existing.header("etag").map(str::to_owned)),
        ("DELETE", R.to_owned(), ("If-Match", "\"1\""), list_etag.clone()),
    ];
    for (method, path, precondition, etag) in cases {
        let reply = s.call(method, &path, Some(ALICE), Some(json!({"data": {}})), &[precondition]).await;
        assert_eq!(reply.status, 412, "{method} {path}");
        assert_eq!(reply.header("etag").map(str::to_owned), etag, "{method} {path}");
        assert!(reply.header("last-modified").is_some(), "{method} {path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_permissions_endpoint_paginates_filters_and_has_an_etag() {
    let s = kinto_like(&[]).await;
    s.seed().await;
    for id in ["r1", "r2", "r3"] {
        s.put(&format!("{R}/{id}"), Some(ALICE), json!({})).await;
    }
    let all = s.get("/permissions", Some(ALICE)).await;
    let etag = all.header("etag").map(str::to_owned);
    assert!(etag.is_some() && all.header("last-modified").is_some());
    let every: Vec<Value> = all.body["data"].as_array().cloned().unwrap_or_default();
    let uris: Vec<&str> = every.iter().filter_map(|e| e["uri"].as_str()).collect();
    let mut descending = uris.clone();
    descending.sort_by(|a, b| b.cmp(a));
    assert_eq!(uris, descending, "URIs in descending order by default, as Kinto");

    let mut paged = Vec::new();
    let mut next = Some(format!("{}/permissions?_limit=2", s.base));
    while let Some(url) = next {
        let page = s.get(&url, Some(ALICE)).await;
        let entries = page.body["data"].as_array().cloned().unwrap_or_default();
        assert!(entries.len() <= 2);
        paged.extend(entries);
        next = page.header("next-page").map(str::to_owned);
    }
    assert_eq!(paged, every, "the pages hold every entry once, in order");

    let records = s.get("/permissions?resource_name=record&_sort=uri", Some(ALICE)).await;
    let record_uris: Vec<&str> =
        records.body["data"].as_array().into_iter().flatten().filter_map(|e| e["uri"].as_str()).collect();
    assert_eq!(record_uris, [format!("{R}/r1"), format!("{R}/r2"), format!("{R}/r3")]);
    let head = s.call("HEAD", "/permissions?resource_name=record", Some(ALICE), None, &[]).await;
    assert_eq!(head.header("total-records"), Some("3"));
    assert_eq!(head.header("content-length"), Some("11"), "the length of an empty page, as Kinto");

    s.put(&format!("{R}/r4"), Some(ALICE), json!({})).await;
    assert_ne!(s.get("/permissions", Some(ALICE)).await.header("etag").map(str::to_owned), etag);
    s.stop().await;
}

#[tokio::test]
async fn fields_with_dotted_paths_select_only_those_and_drop_permissions() {
    let s = Server::start().await;
    s.seed().await;
    let record = json!({"data": {"n": 7, "m": 2, "sub": {"z": 3, "p": 9}}});
    let created = s.put(&format!("{R}/dot"), Some(ALICE), record).await;
    let ts = created.body["data"]["last_modified"].clone();
    let expected = json!({"n": 7, "sub": {"z": 3}, "id": "dot", "last_modified": ts});
    let one = s.get(&format!("{R}/dot?_fields=n,sub.z"), Some(ALICE)).await;
    assert_eq!(one.body, json!({ "data": expected }));
    let list = s.get(&format!("{R}?_fields=n,sub.z"), Some(ALICE)).await;
    assert_eq!(list.body["data"][0], expected);
    s.stop().await;
}

#[tokio::test]
async fn account_writes_are_validated_as_kinto() {
    let s = kinto_like(&[]).await;
    let erin = "erin:x";
    assert_eq!(s.put("/accounts/erin", None, json!({"data": {"password": "x"}})).await.status, 201);
    let cases = [
        (
            Some(erin),
            "/accounts/erin",
            json!({"data": {"id": "other", "password": "y"}}),
            "Object id does not match existing object",
        ),
        (
            Some(erin),
            "/accounts/other",
            json!({"data": {"password": "y"}}),
            "data.id in body: Username and account ID do not match.",
        ),
        (
            Some("mat:secret"),
            "/accounts/gina",
            json!({"data": {"password": "y"}}),
            "data.id in body: Username and account ID do not match.",
        ),
        (
            Some(erin),
            "/accounts/erin",
            json!({"data": {"password": 5}}),
            "data.password in body: 5 is not a string: {'password': ''}",
        ),
        (Some(erin), "/accounts/erin", json!({"data": {}}), "data.password in body: Required"),
        (None, "/accounts/fred", json!({}), "data in body: Required"),
    ];
    for (auth, path, body, message) in cases {
        let reply = s.put(path, auth, body).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.body["message"], message, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn redirects_carry_pyramids_short_html_page() {
    let s = Server::start().await;
    let root = s.base.trim_end_matches("/v1").to_owned();
    let slash = s.get(&format!("{root}/v1"), None).await;
    assert_eq!(slash.status, 307);
    assert_eq!(slash.header("location"), Some(format!("{root}/v1/").as_str()));
    assert_eq!(slash.header("content-type"), Some("text/html; charset=UTF-8"));
    assert_eq!(slash.header("cache-control"), Some("max-age=3600"));
    let page = "<html>\n <head>\n  <title>307 Temporary Redirect</title>\n </head>\n <body>\n  <h1>307 Temporary \
                Redirect</h1>\n  The resource has been moved to /v1/; you should be redirected automatically.\n\n\n \
                </body>\n</html>";
    assert_eq!(String::from_utf8_lossy(&slash.raw), page);
    let unprefixed = s.get(&format!("{root}/buckets?x=1&y=2"), None).await;
    assert_eq!(unprefixed.header("location"), Some(format!("{root}/v1/buckets?x=1&y=2").as_str()));
    assert!(unprefixed.header("cache-control").is_none());
    assert!(String::from_utf8_lossy(&unprefixed.raw).contains("moved to /v1/buckets?x=1&amp;y=2;"));
    let head = s.call("HEAD", "/buckets/", Some(ALICE), None, &[]).await;
    assert_eq!(head.header("content-length"), Some("210"));
    s.stop().await;
}

#[tokio::test]
async fn json_patch_refusals_read_as_kintos() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/jp"), Some(ALICE), json!({"data": {"x": 1, "l": [1, 2]}})).await;
    let cases = [
        (
            r#"[{"op":"remove","path":"/data/missing"}]"#,
            "body: JSON Patch operation failed: can't remove a non-existent object 'missing'",
        ),
        (
            r#"[{"op":"test","path":"/data/x","value":"1"}]"#,
            "body: JSON Patch operation failed: 1 (<class 'int'>) is not equal to tested value 1 (<class 'str'>)",
        ),
        (
            r#"[{"op":"replace","path":"/data/l/5","value":1}]"#,
            "body: JSON Patch operation failed: can't replace outside of list",
        ),
        (r#"[{"op":"move","from":"/data/zz","path":"/data/y"}]"#, "body: JSON Patch operation failed: 'zz'"),
        (r#"[{"op":"add","value":2}]"#, "0.path in body: Required"),
        (r#"[{"op":"add","path":"data/x","value":1}]"#, "0.path in body: String does not match expected pattern"),
        (r#"{}"#, "\"{}\" is not iterable"),
        (r#""notalist""#, "Should be a JSON object or an array"),
    ];
    for (body, message) in cases {
        let headers = [("Content-Type", "application/json-patch+json")];
        let reply = s.raw("PATCH", &format!("{R}/jp"), Some(ALICE), body.as_bytes().to_vec(), &headers).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.body["message"], message, "{body}");
    }
    let xml = s.raw("PATCH", &format!("{R}/jp"), Some(ALICE), vec![], &[("Content-Type", "application/xml")]).await;
    assert_eq!(
        xml.body["message"],
        "Content-Type header should be one of ['application/merge-patch+json', 'application/json-patch+json', 'application/json']"
    );
    assert_eq!(s.get(&format!("{R}/jp"), Some(ALICE)).await.body["data"]["x"], 1, "nothing was applied");
    s.stop().await;
}

#[tokio::test]
async fn head_on_a_list_announces_the_length_of_an_empty_page() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({"data": {"title": "one"}})).await;
    let head = s.call("HEAD", R, Some(ALICE), None, &[]).await;
    assert_eq!(head.header("content-length"), Some("11"));
    assert_eq!(head.header("total-records"), Some("1"));
    assert!(head.raw.is_empty());
    let get = s.get(&format!("{R}/r1"), Some(ALICE)).await;
    let head = s.call("HEAD", &format!("{R}/r1"), Some(ALICE), None, &[]).await;
    assert_eq!(head.header("content-length"), Some(get.raw.len().to_string().as_str()));
    s.stop().await;
}

#[tokio::test]
async fn hello_shows_no_config_path_of_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("kinto.ini");
    std::fs::write(&ini, "[app:main]\nkinto.userid_hmac_secret = s\n").expect("ini");
    let mut server = crate::common::spawn_binary(&dir.path().join("data"), &ini, None).await;
    let hello: Value = reqwest::get(format!("{}/", server.base)).await.expect("hello").json().await.expect("json");
    assert_eq!(hello["config"], Value::Null);
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Header lists compared as sets: Kinto builds them from Python sets, in no stable order.
fn header_set(value: Option<&str>) -> std::collections::BTreeSet<String> {
    value.unwrap_or_default().split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()
}

#[tokio::test]
async fn errors_expose_their_endpoints_headers_and_preflights_allow_them_as_kinto() {
    let s = Server::start().await;
    s.seed().await;
    let object_get = header_set(Some(
        "Backoff, Retry-After, Alert, Content-Length, Content-Type, Last-Modified, ETag, Cache-Control, Expires, Pragma",
    ));
    // A 404 and a 403 on an object GET expose what a 200 would.
    let missing = s.get(&format!("{R}/nope"), Some(ALICE)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(header_set(missing.header("access-control-expose-headers")), object_get);
    let denied = s.get(&format!("{R}/nope"), Some(BOB)).await;
    assert_eq!(denied.status, 403);
    assert_eq!(header_set(denied.header("access-control-expose-headers")), object_get);
    // Inside a batch too.
    let batch = s.post("/batch", Some(BOB), json!({"requests": [{"path": format!("{R}/nope")}]})).await;
    let sub = &batch.body["responses"][0]["headers"];
    assert_eq!(header_set(sub["Access-Control-Expose-Headers"].as_str()), object_get);
    // A method the endpoint does not allow exposes nothing.
    let refused = s.get("/batch", Some(ALICE)).await;
    assert_eq!(refused.status, 405);
    assert!(refused.header("access-control-expose-headers").is_none());
    // A preflight allows the endpoint's headers and the asked ones, and exposes nothing.
    let preflight = s
        .call(
            "OPTIONS",
            R,
            None,
            None,
            &[
                ("Origin", "http://app"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 200);
    let expected = header_set(Some(
        "Backoff, Retry-After, Alert, Content-Length, Content-Type, Next-Page, Last-Modified, ETag, Cache-Control, \
         Expires, Pragma, Total-Objects, Total-Records, authorization",
    ));
    assert_eq!(header_set(preflight.header("access-control-allow-headers")), expected);
    assert!(preflight.header("access-control-expose-headers").is_none());
    s.stop().await;
}

#[tokio::test]
async fn one_challenge_per_policy_and_none_on_the_anonymous_accounts_listing() {
    let s = Server::start_with(&[
        ("includes", "kinto.plugins.accounts"),
        ("multiauth.policies", "account basicauth"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
    ])
    .await;
    let denied = s.get("/buckets/nope", None).await;
    assert_eq!(denied.status, 401);
    let challenges: Vec<&str> =
        denied.headers.get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(challenges, ["Basic realm=\"Realm\"", "Basic realm=\"Realm\""], "as Kinto: one per policy");
    let listing = s.get("/accounts", None).await;
    assert_eq!((listing.status.as_u16(), listing.errno()), (401, 999));
    assert!(listing.header("www-authenticate").is_none(), "Kinto's odd 401 carries no challenge");
    s.stop().await;
}

/// Differences found by schemathesis and the Kinto Admin against the reference, each pinned.
#[tokio::test]
async fn fixes_found_by_generated_requests_and_the_admin() {
    let s = kinto_like(&[]).await;
    s.put("/accounts/ann", None, json!({"data": {"password": "pw-of-ann"}})).await;
    let ann = "ann:pw-of-ann";
    s.put("/buckets/b", Some(ann), json!({})).await;
    s.put("/buckets/b/collections/c", Some(ann), json!({})).await;
    s.put(&format!("{R}/r"), Some(ann), json!({"data": {"x": 1}})).await;

    // A plural DELETE lists the list's own objects, not what their deletion cascaded to.
    let deleted = s.delete("/buckets/b/collections", Some(ann)).await;
    let ids: Vec<Value> = deleted.body["data"].as_array().into_iter().flatten().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, [json!("c")], "{}", deleted.body);

    // An empty precondition header is no header.
    s.put("/buckets/b/collections/c", Some(ann), json!({})).await;
    let put = s.call("PUT", &format!("{R}/r"), Some(ann), Some(json!({"data": {"x": 2}})), &[("If-Match", "")]).await;
    assert_eq!(put.status, 201, "{}", put.body);

    // An empty principal is refused, as Kinto's schema does.
    let empty = s.patch("/buckets/b", Some(ann), json!({"permissions": {"read": [""]}})).await;
    assert_eq!(
        (empty.status.as_u16(), empty.body["message"].clone()),
        (400, json!("permissions.read.0 in body: Required"))
    );

    // A record under a missing bucket and collection: the collection is named, as in Kinto.
    let missing = s.post("/buckets/nob/collections/c/records", Some(ann), json!({"data": {}})).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.body["details"], json!({"id": "c", "resource_name": "collection"}));

    // A browser's batch: every subresponse carries the allowed origin.
    let batch = s
        .call(
            "POST",
            "/batch",
            Some(ann),
            Some(json!({"requests": [{"path": "/buckets"}, {"path": "/buckets/nope"}]})),
            &[("Origin", "http://admin.example")],
        )
        .await;
    for response in batch.body["responses"].as_array().into_iter().flatten() {
        assert_eq!(response["headers"]["Access-Control-Allow-Origin"], "*", "{response}");
    }

    // `/permissions` names an account by `account_id` too.
    let own = s.get("/permissions?resource_name=account", Some(ann)).await;
    assert_eq!(own.body["data"][0]["account_id"], "ann", "{}", own.body);
    assert_eq!(s.get("/permissions?account_id=ann", Some(ann)).await.status, 200, "a field one may filter on");
    s.stop().await;
}

/// Values with a NUL paginate: the token of a page ending on one leads to the next page.
#[tokio::test]
async fn pages_end_on_values_with_a_nul() {
    let s = Server::start().await;
    s.seed().await;
    for i in 0..6 {
        s.put(&format!("{R}/r{i}"), Some(ALICE), json!({"data": {"title": format!("t\u{0}{i}")}})).await;
    }
    let mut url = format!("{R}?_sort=title&_limit=2");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = s.get(&url, Some(ALICE)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(page.body["data"].as_array().into_iter().flatten().map(|r| r["id"].clone()));
        match page.header("next-page") {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    s.stop().await;
}

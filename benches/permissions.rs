//! `GET /v1/permissions` with 100k objects and 1,000 groups, served from the principal index,
//! next to the same answer computed by scanning every object's ACL (what Kinto effectively does,
//! kinto-admin #533).
//!
//! Run: `cargo bench --bench permissions`.

use std::collections::BTreeSet;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use tidemark_engine::{Acl, Command, Context, Engine, Expect, ListOrder, ListRange, Op};
use tidemark_server::{AppState, Settings};

const RECORDS: usize = 100_000;
const COLLECTIONS: usize = 100;
const GROUPS: usize = 1_000;
/// Groups the benchmark user belongs to.
const MEMBER_OF: usize = 50;
const USER: &str = "alice:secret";

fn put(parent: &str, resource: &str, id: &str, data: Value, acl: Acl) -> Command {
    // Groups are Kinto's principal source: their members come from `members`.
    let members = (resource == "group").then(|| {
        data.get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(String::from))
            .collect()
    });
    Command {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members,
        parent: parent.into(),
        id: id.into(),
        op: Op::Put { data: data.as_object().cloned().unwrap_or_else(Map::new), permissions: acl },
        expect: Expect::Any,
        last_modified: None,
        context: Context::default(),
    }
}

fn populate(engine: &Engine, user_id: &str) {
    let owner = Acl::from([("write".to_owned(), vec!["basicauth:owner".to_owned()])]);
    engine.submit_blocking(vec![put("", "bucket", "b", json!({}), owner.clone())]).expect("bucket");
    let groups: Vec<Command> = (0..GROUPS)
        .map(|g| {
            let mut members = vec![format!("basicauth:m{g}")];
            if g < MEMBER_OF {
                members.push(user_id.to_owned());
            }
            put("/buckets/b", "group", &format!("g{g}"), json!({ "members": members }), owner.clone())
        })
        .collect();
    engine.submit_blocking(groups).expect("groups");
    let collections: Vec<Command> =
        (0..COLLECTIONS).map(|c| put("/buckets/b", "collection", &format!("c{c}"), json!({}), owner.clone())).collect();
    engine.submit_blocking(collections).expect("collections");
    let per_collection = RECORDS / COLLECTIONS;
    for c in 0..COLLECTIONS {
        let parent = format!("/buckets/b/collections/c{c}");
        let records: Vec<Command> = (0..per_collection)
            .map(|r| {
                // One record in a hundred is readable by one of the groups the user is in.
                let n = c * per_collection + r;
                let reader = format!(
                    "/buckets/b/groups/g{}",
                    if n.is_multiple_of(100) { n / 100 % MEMBER_OF } else { MEMBER_OF + n % (GROUPS - MEMBER_OF) }
                );
                let acl = Acl::from([
                    ("read".to_owned(), vec![reader]),
                    ("write".to_owned(), vec!["basicauth:owner".to_owned()]),
                ]);
                put(&parent, "record", &format!("r{r}"), json!({"n": n}), acl)
            })
            .collect();
        engine.submit_blocking(records).expect("records");
    }
}

/// The same answer by scanning: every object's ACL, checked against the user's principals.
fn permissions_by_scan(engine: &Engine, principals: &BTreeSet<String>) -> usize {
    let mut found = 0;
    let mut lists = vec![("/buckets/b".to_owned(), "collections"), ("/buckets/b".to_owned(), "groups")];
    lists.extend((0..COLLECTIONS).map(|c| (format!("/buckets/b/collections/c{c}"), "records")));
    for (parent, plural) in lists {
        engine
            .walk_list(&parent, plural, ListRange::default(), ListOrder::Newest, |object| {
                let uri = tidemark_engine::object_uri(&parent, plural, object.id());
                let acl = engine.acl(&uri)?;
                if acl.values().flatten().any(|p| principals.contains(p)) {
                    found += 1;
                }
                Ok(true)
            })
            .expect("scan");
    }
    found
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let overrides: Vec<(String, String)> = [
        ("data_dir", dir.path().display().to_string()),
        ("userid_hmac_secret", "bench".to_owned()),
        ("experimental_permissions_endpoint", "true".to_owned()),
        ("storage_backend", "kinto.core.storage.memory".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::load(None, &[], &overrides).expect("settings");
    let engine = tidemark_server::open_engine(&settings).expect("engine");
    let user_id = format!("basicauth:{}", tidemark_server::auth::hmac_hex("bench", USER));
    let started = std::time::Instant::now();
    populate(&engine, &user_id);
    eprintln!("populated {RECORDS} records, {GROUPS} groups in {:.1}s", started.elapsed().as_secs_f64());

    let state = AppState::new(engine.clone(), settings, "bench".into());
    let (addr, client) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(tidemark_server::serve(listener, state, std::future::pending()));
        (addr, reqwest::Client::new())
    });
    let url = format!("http://{addr}/v1/permissions");
    let (user, password) = USER.split_once(':').expect("user:password");
    let count = runtime.block_on(async {
        let body: Value =
            client.get(&url).basic_auth(user, Some(password)).send().await.expect("get").json().await.expect("json");
        body["data"].as_array().map(Vec::len).unwrap_or(0)
    });
    let mut principals: BTreeSet<String> = engine.groups_of(&user_id).expect("groups").into_iter().collect();
    principals.insert(user_id.clone());
    let scanned = permissions_by_scan(&engine, &principals);
    eprintln!("/v1/permissions lists {count} objects (root entry included); a scan finds {scanned}");

    let mut group = c.benchmark_group("permissions_100k_objects_1k_groups");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("get_v1_permissions_from_index", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client.get(&url).basic_auth(user, Some(password)).send().await.expect("get");
            response.bytes().await.expect("body")
        })
    });
    group.bench_function("acl_scan_of_every_object", |b| b.iter(|| permissions_by_scan(&engine, &principals)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

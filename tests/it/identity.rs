//! Identity: who a request is (malformed credentials, accounts, groups, the default bucket),
//! what `GET /v1/permissions` tells them, and that passwords stay out of the logs.
//!
//! bcrypt (cost 12) costs ~0.25 s per hash or failed check: the account tests create and log in
//! as few accounts as they can.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use crate::common::{user_id, Server, ALICE, BOB};

const CAROL: &str = "carol:secret";

/// The settings of the accounts plugin, as kinto-protocol.md §11.2 configures it.
const ACCOUNTS: [(&str, &str); 5] = [
    ("includes", "kinto.plugins.accounts"),
    ("multiauth.policies", "account"),
    ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
    ("account_create_principals", "system.Everyone"),
    ("account_write_principals", "account:admin"),
];

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", base64(credentials))
}

/// `GET` with a raw `Authorization` header value (any bytes): (status, headers, JSON body).
async fn get_with_authorization(s: &Server, path: &str, value: &[u8]) -> (u16, reqwest::header::HeaderMap, Value) {
    let header = HeaderValue::from_bytes(value).expect("a header value");
    let response =
        s.client.get(format!("{}{path}", s.base)).header(AUTHORIZATION, header).send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn malformed_authorization_headers_are_anonymous_never_an_error() {
    let s = Server::start().await;
    assert_eq!(s.put("/buckets/b", Some(ALICE), json!({})).await.status, 201);
    let (no_colon, empty_user, eight_kib) = (basic("alice"), basic(":secret"), basic(&"a".repeat(6000)));
    assert!(eight_kib.len() > 8000);
    let malformed: [(&str, &[u8]); 7] = [
        ("no colon", no_colon.as_bytes()),
        ("bad base64", b"Basic !!!not-base64!!!"),
        ("empty user", empty_user.as_bytes()),
        ("8 KiB value", eight_kib.as_bytes()),
        ("non-UTF-8 bytes", b"Basic \xff\xfe\xfd"),
        ("unknown scheme", b"Bearer abcdef"),
        ("scheme alone", b"Basic"),
    ];
    for (what, value) in malformed {
        let (status, _, hello) = get_with_authorization(&s, "/", value).await;
        assert_eq!(status, 200, "{what}: GET /v1/");
        assert!(hello.get("user").is_none(), "{what}: identified as {}", hello["user"]);
        let (status, headers, body) = get_with_authorization(&s, "/buckets/b", value).await;
        assert_eq!((status, body["errno"].as_u64()), (401, Some(104)), "{what}: {body}");
        assert_eq!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Basic realm=\"Realm\""));
    }
    // Well formed but oversized: with basicauth, just somebody else.
    let oversized = basic(&format!("alice:{}", "x".repeat(6000)));
    let (status, _, body) = get_with_authorization(&s, "/buckets/b", oversized.as_bytes()).await;
    assert_eq!((status, body["errno"].as_u64()), (403, Some(121)));
    s.stop().await;
}

#[tokio::test]
async fn anonymous_account_listing_is_kintos_401_errno_999() {
    let s = Server::start_with(&ACCOUNTS).await;
    let r = s.get("/accounts", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"code": 401, "errno": 999, "error": "Cannot read accounts."}));
    s.stop().await;
}

/// One story, to keep bcrypt work low: 3 hashes (two sign-ups, one reset), 4 checks.
#[tokio::test]
async fn accounts_hash_passwords_log_in_and_let_only_admins_reset_them() {
    let s = Server::start_with(&ACCOUNTS).await;
    let (bob, bob_new, admin) = ("bob:first-pw", "bob:second-pw", "admin:admin-pw");

    let signed_up = s.put("/accounts/bob", None, json!({"data": {"password": "first-pw"}})).await;
    assert_eq!(signed_up.status, 201, "{}", signed_up.body);
    let hash = signed_up.body["data"]["password"].as_str().unwrap_or_default().to_owned();
    assert!(hash.starts_with("$2b$12$") && hash.len() == 60, "not a bcrypt hash: {hash}");
    assert_eq!(signed_up.body["permissions"], json!({"write": ["account:bob"]}));

    let hello = s.get("/", Some(bob)).await;
    assert_eq!(hello.body["user"]["id"], "account:bob");
    assert_eq!(s.put("/buckets/bobs", Some(bob), json!({})).await.status, 201);
    let own = s.get("/accounts", Some(bob)).await;
    assert_eq!(
        own.body["data"].as_array().map(|a| a.iter().map(|a| a["id"].clone()).collect()),
        Some(vec![json!("bob")])
    );
    let stored = s.get("/accounts/bob", Some(bob)).await;
    assert_eq!(stored.body["data"]["password"], hash.as_str(), "stored as the hash: {}", stored.body);
    let renamed = s.patch("/accounts/bob", Some(bob), json!({"data": {"nickname": "bobby"}})).await;
    assert_eq!(renamed.status, 200, "one may change one's own account: {}", renamed.body);
    assert_eq!(renamed.body["data"]["password"], hash.as_str(), "a hash is not hashed again");

    assert_eq!(s.put("/accounts/admin", None, json!({"data": {"password": "admin-pw"}})).await.status, 201);
    let other = s.get("/accounts/admin", Some(bob)).await;
    assert_eq!((other.status.as_u16(), other.errno()), (403, 121), "a user may not read another account");
    let other = s.patch("/accounts/admin", Some(bob), json!({"data": {"password": "mine-now"}})).await;
    assert_eq!((other.status.as_u16(), other.errno()), (403, 121), "a user may not reset another account");

    let reset = s.patch("/accounts/bob", Some(admin), json!({"data": {"password": "second-pw"}})).await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let new_hash = reset.body["data"]["password"].as_str().unwrap_or_default();
    assert!(new_hash.starts_with("$2b$12$") && new_hash != hash);
    assert_eq!(reset.body["permissions"], json!({"write": ["account:bob"]}), "the account stays bob's alone");

    // The old password is now a wrong one: anonymous, so 401 where bob may read.
    let wrong = s.get("/buckets/bobs", Some(bob)).await;
    assert_eq!((wrong.status.as_u16(), wrong.errno()), (401, 104));
    assert_eq!(s.get("/buckets/bobs", Some(bob_new)).await.status, 200);
    s.stop().await;
}

/// What a login costs and who pays it (kinto.js's configuration: `account basicauth`): a
/// user who is no account goes to Basic Auth at once; a batch authenticates its credentials
/// once; failed logins are limited per account and per client address (429 errno 999 with
/// `Retry-After`), before any hash work, while a verified login goes on; a failure is never
/// remembered as a success. bcrypt work: 2 hashes, 1 successful check, 3 failed checks.
#[tokio::test]
async fn failed_logins_are_limited_and_cost_the_next_policy_nothing() {
    let s = Server::start_with(&[
        ("includes", "kinto.plugins.accounts"),
        ("multiauth.policies", "account basicauth"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
        ("account_create_principals", "system.Everyone"),
        ("bucket_create_principals", "system.Authenticated"),
        ("account_login_failures_per_minute", "2"),
        ("client_login_failures_per_minute", "3"),
    ])
    .await;
    let (alice, wrong) = ("alice:right-pw", "alice:wrong-pw");
    assert_eq!(s.put("/accounts/alice", None, json!({"data": {"password": "right-pw"}})).await.status, 201);
    assert_eq!(s.get("/", Some(alice)).await.body["user"]["id"], "account:alice");

    // Not an account: Basic Auth's user, with no password check in between.
    assert_eq!(s.get("/", Some(BOB)).await.body["user"]["id"], json!(user_id(BOB)));

    // A batch whose subrequests repeat its credentials (kinto-http.js's `defaults`) is the
    // batch's user; a subrequest with other credentials is theirs.
    let requests: Vec<Value> = (0..25).map(|_| json!({"method": "GET", "path": "/"})).collect();
    let auth = basic(alice);
    let mut batch = json!({"defaults": {"headers": {"Authorization": auth}}, "requests": requests});
    batch["requests"][24]["headers"] = json!({"Authorization": basic(BOB)});
    let answered = s.post("/batch", Some(alice), batch).await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    let ids: Vec<Value> =
        answered.body["responses"].as_array().into_iter().flatten().map(|r| r["body"]["user"]["id"].clone()).collect();
    assert_eq!(ids.len(), 25);
    assert!(ids[..24].iter().all(|id| id == "account:alice"), "{ids:?}");
    assert_eq!(ids[24], json!(user_id(BOB)));

    // A wrong password is no account login, so Basic Auth's user of that password (403 on
    // alice's bucket); after the account's two failures a minute, 429.
    assert_eq!(s.put("/buckets/alices", Some(alice), json!({})).await.status, 201);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let tried = s.get("/buckets/alices", Some(wrong)).await;
        statuses.push(tried.status.as_u16());
        if tried.status == 429 {
            assert_eq!(tried.errno(), 999, "{}", tried.body);
            let retry: u64 = tried.headers["retry-after"].to_str().unwrap_or_default().parse().unwrap_or(0);
            assert!(retry >= 1, "Retry-After: {retry}");
        }
    }
    assert_eq!(statuses, [403, 403, 429, 429, 429], "two failures a minute, then limited");
    // The verified login goes on (remembered); a failure was never remembered as a success.
    assert_eq!(s.get("/buckets/alices", Some(alice)).await.status, 200);
    assert_eq!(s.get("/buckets/alices", Some(wrong)).await.status, 429);

    // This client's third failure, on another account, locks the client: no login of any
    // account is checked from it for a while, but a remembered one goes on.
    assert_eq!(s.put("/accounts/dave", None, json!({"data": {"password": "dave-pw"}})).await.status, 201);
    assert_eq!(s.get("/", Some("dave:not-it")).await.body["user"]["id"], json!(user_id("dave:not-it")));
    let locked = s.get("/", Some("dave:dave-pw")).await;
    assert_eq!((locked.status.as_u16(), locked.errno()), (429, 999), "{}", locked.body);
    assert_eq!(s.get("/buckets/alices", Some(alice)).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn group_members_get_what_the_group_is_granted() {
    let s = Server::start().await;
    let group = "/buckets/b/groups/g";
    assert_eq!(s.put("/buckets/b", Some(ALICE), json!({})).await.status, 201);
    let members = json!({"data": {"members": [user_id(CAROL)]}});
    assert_eq!(s.put(group, Some(ALICE), members).await.status, 201);
    let shared = json!({"permissions": {"read": [group]}});
    assert_eq!(s.put("/buckets/b/collections/c", Some(ALICE), shared).await.status, 201);
    assert_eq!(s.put("/buckets/b/collections/c/records/r", Some(ALICE), json!({})).await.status, 201);

    let principals = s.get("/", Some(CAROL)).await.body["user"]["principals"].clone();
    assert_eq!(principals[0], json!(user_id(CAROL)), "the user id comes first");
    assert!(principals.as_array().is_some_and(|p| p.contains(&json!(group))), "{principals}");
    assert_eq!(s.get("/buckets/b/collections/c", Some(CAROL)).await.status, 200);
    let records = s.get("/buckets/b/collections/c/records", Some(CAROL)).await;
    assert_eq!(records.body["data"][0]["id"], "r");
    assert_eq!(s.get("/buckets/b/collections/c/records/r", Some(CAROL)).await.status, 200);
    assert_eq!(s.get("/buckets/b/collections/c", Some(BOB)).await.status, 403, "not a member");

    assert_eq!(s.patch(group, Some(ALICE), json!({"data": {"members": []}})).await.status, 200);
    assert_eq!(s.get("/buckets/b/collections/c", Some(CAROL)).await.status, 403, "no longer a member");
    let principals = s.get("/", Some(CAROL)).await.body["user"]["principals"].clone();
    assert!(principals.as_array().is_some_and(|p| !p.contains(&json!(group))), "{principals}");
    s.stop().await;
}

#[tokio::test]
async fn default_bucket_is_the_users_own_created_on_first_use() {
    let s = Server::start_with(&[("includes", "kinto.plugins.default_bucket")]).await;
    let anonymous = s.get("/buckets/default", None).await;
    assert_eq!((anonymous.status.as_u16(), anonymous.errno()), (401, 104));

    // Kinto's id for alice (user id basicauth:2381f1d3…, default_bucket_hmac_secret "").
    let id = "6231008d-d80d-3a2a-b9c0-7928db8e0c9d";
    let bucket = s.get("/buckets/default", Some(ALICE)).await;
    assert_eq!(bucket.status, 200, "a GET creates it");
    assert_eq!(bucket.body["data"]["id"], id);
    assert_eq!(bucket.body["permissions"], json!({"write": [user_id(ALICE)]}));
    assert_eq!(s.get("/", Some(ALICE)).await.body["user"]["bucket"], id);
    assert_eq!(s.get(&format!("/buckets/{id}"), Some(ALICE)).await.status, 200, "a real bucket");

    let created = s.post("/buckets/default/collections/tasks/records", Some(ALICE), json!({"data": {"t": 1}})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let tasks = s.get(&format!("/buckets/{id}/collections/tasks"), Some(ALICE)).await;
    assert_eq!(tasks.status, 200, "the collection was created implicitly");
    let records = s.get(&format!("/buckets/{id}/collections/tasks/records"), Some(ALICE)).await;
    assert_eq!(records.body["data"][0]["id"], created.body["data"]["id"]);

    let bobs = s.get("/buckets/default", Some(BOB)).await;
    assert_eq!(bobs.status, 200);
    assert_ne!(bobs.body["data"]["id"], id, "each user has their own");
    assert_eq!(s.get(&format!("/buckets/{id}"), Some(BOB)).await.status, 403);
    s.stop().await;
}

/// `uri → sorted permissions` of a `GET /v1/permissions` answer, in the answer's order.
fn permissions_by_uri(body: &Value) -> Vec<(String, Vec<String>)> {
    body["data"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut perms: Vec<String> = serde_json::from_value(e["permissions"].clone()).unwrap_or_default();
                    perms.sort();
                    (e["uri"].as_str().unwrap_or_default().to_owned(), perms)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry(uri: &str, perms: &[&str]) -> (String, Vec<String>) {
    let mut perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
    perms.sort();
    (uri.to_owned(), perms)
}

/// The expected answers were read from Kinto 26.5.0.
#[tokio::test]
async fn permissions_endpoint_lists_the_callers_objects_with_implied_permissions() {
    let s = Server::start_with(&[("experimental_permissions_endpoint", "true")]).await;
    let bob = user_id(BOB);
    let setup = [
        ("/buckets/b", json!({"permissions": {"read": [bob]}})),
        ("/buckets/b/groups/g", json!({"data": {"members": [bob]}, "permissions": {"write": [bob]}})),
        ("/buckets/b/collections/c", json!({"permissions": {"record:create": [bob]}})),
        ("/buckets/b/collections/c/records/r", json!({"permissions": {"write": [bob]}})),
        ("/buckets/b/collections/d", json!({"permissions": {"read": ["/buckets/b/groups/g"]}})),
    ];
    for (path, body) in setup {
        assert_eq!(s.put(path, Some(ALICE), body).await.status, 201, "{path}");
    }

    // Explicit permissions only (bob's bucket read is not spread over its children), each with
    // what it implies on the same object; sorted by URI, descending.
    let listed = s.get("/permissions", Some(BOB)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        permissions_by_uri(&listed.body),
        vec![
            entry("/buckets/b/groups/g", &["read", "write"]),
            entry("/buckets/b/collections/d", &["read", "read:attributes"]),
            entry("/buckets/b/collections/c/records/r", &["read", "write"]),
            entry("/buckets/b/collections/c", &["record:create", "read:attributes"]),
            entry("/buckets/b", &["read", "read:attributes"]),
            entry("/", &["bucket:create"]),
        ]
    );
    let record =
        listed.body["data"].as_array().and_then(|d| d.iter().find(|e| e["resource_name"] == "record")).cloned();
    assert_eq!(
        record.map(|mut r| {
            r.as_object_mut().map(|r| r.remove("permissions"));
            r
        }),
        Some(json!({"uri": "/buckets/b/collections/c/records/r", "resource_name": "record", "bucket_id": "b",
                    "collection_id": "c", "record_id": "r", "id": "r"}))
    );

    let owner = s.get("/permissions", Some(ALICE)).await;
    assert_eq!(
        permissions_by_uri(&owner.body),
        vec![
            entry("/buckets/b/groups/g", &["read", "write"]),
            entry("/buckets/b/collections/d", &["read", "read:attributes", "record:create", "write"]),
            entry("/buckets/b/collections/c/records/r", &["read", "write"]),
            entry("/buckets/b/collections/c", &["read", "read:attributes", "record:create", "write"]),
            entry("/buckets/b", &["collection:create", "group:create", "read", "read:attributes", "write"]),
            entry("/", &["bucket:create"]),
        ]
    );
    assert_eq!(s.get("/permissions", None).await.body, json!({"data": []}), "anonymous holds nothing");
    s.stop().await;
}

/// The real binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the `listening on http://…/v1/` line in the log and returns that base URL.
async fn listening_url(log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(file) = std::fs::File::open(log) {
            let found = BufReader::new(file).lines().map_while(Result::ok).find_map(|line| {
                let start = line.find("listening on http://")? + "listening on ".len();
                // Text or JSON lines: the URL ends at a space or a quote.
                let url = line[start..].split(|c: char| c.is_whitespace() || c == '"').next()?;
                Some(url.trim_end_matches('/').to_owned())
            });
            if let Some(url) = found {
                return url;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tidemark did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

#[tokio::test]
async fn passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("tidemark.ini");
    let mut settings = String::from("[app:main]\nkinto.userid_hmac_secret = s3cret\n");
    for (key, value) in ACCOUNTS {
        settings.push_str(&format!("{key} = {value}\n"));
    }
    std::fs::write(&ini, settings).expect("ini");
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--ini"])
        .arg(&ini)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn tidemark");
    let process = Process(child);
    let base = listening_url(&log).await;

    let password = "Zebra-Quokka-7731-distinctive";
    let wrong = "Wombat-Narwhal-4402-distinctive";
    let client = reqwest::Client::new();
    let signed_up =
        client.put(format!("{base}/accounts/eve")).json(&json!({"data": {"password": password}})).send().await;
    assert_eq!(signed_up.expect("sign-up").status(), 201);
    let hello: Value = client
        .get(format!("{base}/"))
        .basic_auth("eve", Some(password))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert_eq!(hello["user"]["id"], "account:eve");
    let refused = client.get(format!("{base}/accounts/eve")).basic_auth("eve", Some(wrong)).send().await.expect("get");
    assert_eq!(refused.status(), 401);
    drop(process);

    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("listening on"), "the log was captured");
    for secret in
        [password.to_owned(), wrong.to_owned(), base64(&format!("eve:{password}")), base64(&format!("eve:{wrong}"))]
    {
        assert!(!logged.contains(&secret), "the log holds {secret}:\n{logged}");
    }
}

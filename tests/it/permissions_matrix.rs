//! The permission matrix: for every grant, caller, endpoint and method, the status an ORACLE of
//! Kinto's authorization rules expects (kinto-protocol.md §8.4–8.7), against what the server
//! answers — once as plain requests, once inside `POST /v1/batch`.
//!
//! The oracle is a pure function of the fixture's ACLs, the caller, the endpoint and the method;
//! it never calls server code. Its rules were checked against the reference Kinto 26.5.0, with
//! basicauth and with accounts, by running this very matrix against it (all cases, 0 mismatches:
//! `matrix_matches_a_reference_kinto`, ignored unless `KINTO_URL` is set). Where Kinto differs
//! from kinto-protocol.md, the oracle follows Kinto:
//! - the children of a list shared with a caller are found with the child's own inherited
//!   permission (`read:attributes` for collections), so `record:create` on a collection lists
//!   that collection in `GET …/collections`;
//! - `POST …/records`, and `PUT`/`PATCH`/`DELETE` of a record, under a missing collection answer
//!   404 (errno 111) before any permission check, to anyone: Kinto's records resource, built to
//!   find the target before authorizing those methods, checks its parents first.
//!
//! Every fixture is a fresh bucket. Cases expected to change something (a 2xx write) get a
//! fixture of their own; all the others (reads, denials, 404s) change nothing and share their
//! scenario's fixture, reads first.
//!
//! Under the accounts policy the matrix runs in batches only: nothing caches a failed login, so
//! every request with a wrong password pays a bcrypt verification (~0.25 s), a batch pays it once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::common::{Server, ALICE, BOB};

const CAROL: &str = "carol:secret";
/// Alice's name with another password: an unknown pair of credentials.
const WRONG_PASSWORD: &str = "alice:not-her-password";
/// Kinto's default `batch_max_requests`: batches stay within it so the reference Kinto takes them.
const BATCH_LIMIT: usize = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Bucket,
    Group,
    Collection,
    Record,
}

use Level::{Bucket as B, Collection as C, Group as G, Record as R};

/// A permission on one object of the fixture: `(B, "read")` is `read` on the bucket.
type Ace = (Level, &'static str);

/// Who a grant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grantee {
    Bob,
    /// The fixture's group `/buckets/<b>/groups/g`, whose only member is carol.
    GroupMembers,
    Authenticated,
    Everyone,
}

#[derive(Clone, Copy, Debug)]
struct Grant {
    ace: Ace,
    to: Grantee,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Anonymous,
    WrongPassword,
    /// Alice, who created every object of the fixture (so is in each one's `write`).
    Owner,
    /// Bob.
    Other,
    /// Carol, member of the fixture's group.
    Member,
}

impl Caller {
    fn credentials(self) -> Option<&'static str> {
        match self {
            Caller::Anonymous => None,
            Caller::WrongPassword => Some(WRONG_PASSWORD),
            Caller::Owner => Some(ALICE),
            Caller::Other => Some(BOB),
            Caller::Member => Some(CAROL),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Kinto's `basicauth`: any user:password pair is somebody, so a wrong password is a stranger.
    Basic,
    /// `kinto.plugins.accounts`: a wrong password identifies nobody, the request is anonymous.
    Accounts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One HTTP request per case.
    Direct,
    /// The cases in `POST /v1/batch` requests of at most this many subrequests, one caller each.
    Batched(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Bucket,
    Collections,
    Collection,
    Groups,
    Group,
    Records,
    Record,
    MissingRecord,
    RecordsOfMissingCollection,
    RecordOfMissingCollection,
    Buckets,
}

impl Endpoint {
    const ALL: [Endpoint; 11] = [
        Endpoint::Bucket,
        Endpoint::Collections,
        Endpoint::Collection,
        Endpoint::Groups,
        Endpoint::Group,
        Endpoint::Records,
        Endpoint::Record,
        Endpoint::MissingRecord,
        Endpoint::RecordsOfMissingCollection,
        Endpoint::RecordOfMissingCollection,
        Endpoint::Buckets,
    ];

    /// `DELETE /buckets` is left out: it would delete other scenarios' fixtures.
    fn methods(self) -> &'static [&'static str] {
        match self {
            Endpoint::Buckets => &["GET", "HEAD", "POST"],
            Endpoint::Collections | Endpoint::Groups | Endpoint::Records | Endpoint::RecordsOfMissingCollection => {
                &["GET", "HEAD", "POST", "DELETE"]
            }
            _ => &["GET", "HEAD", "PUT", "PATCH", "DELETE"],
        }
    }

    fn template(self) -> &'static str {
        match self {
            Endpoint::Bucket => "/buckets/{b}",
            Endpoint::Collections => "/buckets/{b}/collections",
            Endpoint::Collection => "/buckets/{b}/collections/c",
            Endpoint::Groups => "/buckets/{b}/groups",
            Endpoint::Group => "/buckets/{b}/groups/g",
            Endpoint::Records => "/buckets/{b}/collections/c/records",
            Endpoint::Record => "/buckets/{b}/collections/c/records/r",
            Endpoint::MissingRecord => "/buckets/{b}/collections/c/records/missing",
            Endpoint::RecordsOfMissingCollection => "/buckets/{b}/collections/nope/records",
            Endpoint::RecordOfMissingCollection => "/buckets/{b}/collections/nope/records/r",
            Endpoint::Buckets => "/buckets",
        }
    }

    fn path(self, bucket: &str) -> String {
        self.template().replace("{b}", bucket)
    }

    fn body(self, method: &str, carol_id: &str) -> Option<Value> {
        match (self, method) {
            (_, "GET" | "HEAD" | "DELETE") => None,
            (Endpoint::Group, "PUT") => Some(json!({"data": {"members": [carol_id]}})),
            (Endpoint::Groups, _) => Some(json!({"data": {"members": []}})),
            _ => Some(json!({"data": {"title": method}})),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle.

// §8.4: the ACEs granting each permission, on the object itself or an ancestor.
const BUCKET_WRITE: &[Ace] = &[(B, "write")];
const BUCKET_READ: &[Ace] = &[(B, "write"), (B, "read")];
const BUCKET_ATTRIBUTES: &[Ace] = &[(B, "write"), (B, "read"), (B, "collection:create"), (B, "group:create")];
const COLLECTION_CREATE: &[Ace] = &[(B, "write"), (B, "collection:create")];
const GROUP_CREATE: &[Ace] = &[(B, "write"), (B, "group:create")];
const GROUP_WRITE: &[Ace] = &[(B, "write"), (G, "write")];
const GROUP_READ: &[Ace] = &[(B, "write"), (B, "read"), (G, "write"), (G, "read")];
const COLLECTION_WRITE: &[Ace] = &[(B, "write"), (C, "write")];
const COLLECTION_READ: &[Ace] = &[(B, "write"), (B, "read"), (C, "write"), (C, "read")];
const COLLECTION_ATTRIBUTES: &[Ace] = &[(B, "write"), (B, "read"), (C, "write"), (C, "read"), (C, "record:create")];
const RECORD_CREATE: &[Ace] = &[(B, "write"), (C, "write"), (C, "record:create")];
const RECORD_WRITE: &[Ace] = &[(B, "write"), (C, "write"), (R, "write")];
const RECORD_READ: &[Ace] = &[(B, "write"), (B, "read"), (C, "write"), (C, "read"), (R, "write"), (R, "read")];

/// How a plural endpoint is authorized (§8.6 step 4).
struct ListRules {
    /// The list-level rights, for reading and for deleting.
    read: &'static [Ace],
    write: &'static [Ace],
    /// The child's own ACEs that share it with the caller, for reading and for deleting.
    shared_read: &'static [Ace],
    shared_write: &'static [Ace],
    /// `<child>:create` on the parent, as the parent's own ACE: an empty list.
    create_ace: Ace,
    /// What POST needs (the create permission, inherited).
    create: &'static [Ace],
}

const COLLECTIONS: ListRules = ListRules {
    read: BUCKET_READ,
    write: BUCKET_WRITE,
    // A collection is shared through its `read:attributes` (Kinto), `record:create` included.
    shared_read: &[(C, "write"), (C, "read"), (C, "record:create")],
    shared_write: &[(C, "write")],
    create_ace: (B, "collection:create"),
    create: COLLECTION_CREATE,
};

const GROUPS: ListRules = ListRules {
    read: BUCKET_READ,
    write: BUCKET_WRITE,
    shared_read: &[(G, "write"), (G, "read")],
    shared_write: &[(G, "write")],
    create_ace: (B, "group:create"),
    create: GROUP_CREATE,
};

const RECORDS: ListRules = ListRules {
    read: COLLECTION_READ,
    write: COLLECTION_WRITE,
    shared_read: &[(R, "write"), (R, "read")],
    shared_write: &[(R, "write")],
    create_ace: (C, "record:create"),
    create: RECORD_CREATE,
};

/// What one caller holds in a fixture.
struct Rights {
    aces: Vec<Ace>,
    authenticated: bool,
}

impl Rights {
    fn of(caller: Caller, grant: Option<Grant>, policy: Policy) -> Rights {
        use Grantee::{Authenticated, Bob, Everyone, GroupMembers};
        let principals: &[Grantee] = match (caller, policy) {
            (Caller::Anonymous, _) | (Caller::WrongPassword, Policy::Accounts) => &[Everyone],
            (Caller::WrongPassword, Policy::Basic) | (Caller::Owner, _) => &[Everyone, Authenticated],
            (Caller::Other, _) => &[Everyone, Authenticated, Bob],
            (Caller::Member, _) => &[Everyone, Authenticated, GroupMembers],
        };
        let mut aces: Vec<Ace> = grant.filter(|g| principals.contains(&g.to)).map(|g| g.ace).into_iter().collect();
        if caller == Caller::Owner {
            aces.extend([(B, "write"), (G, "write"), (C, "write"), (R, "write")]);
        }
        Rights { aces, authenticated: principals.contains(&Authenticated) }
    }

    fn any(&self, granting: &[Ace]) -> bool {
        granting.iter().any(|ace| self.aces.contains(ace))
    }

    /// `status` if granted, else 401 (anonymous) or 403.
    fn allow(&self, granted: bool, status: u16) -> u16 {
        match (granted, self.authenticated) {
            (true, _) => status,
            (false, true) => 403,
            (false, false) => 401,
        }
    }

    /// POST needs the create permission; GET/HEAD/DELETE need the list-level right, else a
    /// shared child, else the create ACE on the parent (then the list is empty).
    fn list(&self, rules: &ListRules, method: &str) -> u16 {
        match method {
            "POST" => self.allow(self.any(rules.create), 201),
            "DELETE" => self.allow(
                self.any(rules.write) || self.any(rules.shared_write) || self.aces.contains(&rules.create_ace),
                200,
            ),
            _ => self.allow(
                self.any(rules.read) || self.any(rules.shared_read) || self.aces.contains(&rules.create_ace),
                200,
            ),
        }
    }
}

/// The status Kinto answers `caller` for `method` on `endpoint` of a fixture with `grant`.
fn expected(grant: Option<Grant>, caller: Caller, endpoint: Endpoint, method: &str, policy: Policy) -> u16 {
    let rights = Rights::of(caller, grant, policy);
    let reads = matches!(method, "GET" | "HEAD");
    let object = |read: &[Ace], write: &[Ace]| rights.allow(rights.any(if reads { read } else { write }), 200);
    match endpoint {
        Endpoint::Bucket => object(BUCKET_ATTRIBUTES, BUCKET_WRITE),
        Endpoint::Collection => object(COLLECTION_ATTRIBUTES, COLLECTION_WRITE),
        Endpoint::Group => object(GROUP_READ, GROUP_WRITE),
        Endpoint::Record => object(RECORD_READ, RECORD_WRITE),
        Endpoint::MissingRecord => match method {
            "PUT" => rights.allow(rights.any(RECORD_CREATE), 201),
            // Read on it, or a write on a missing object (§8.6 step 3): read on the collection.
            _ => rights.allow(rights.any(COLLECTION_READ), 404),
        },
        Endpoint::Collections => rights.list(&COLLECTIONS, method),
        Endpoint::Groups => rights.list(&GROUPS, method),
        Endpoint::Records => rights.list(&RECORDS, method),
        Endpoint::RecordsOfMissingCollection => match method {
            "POST" => 404,
            "DELETE" => rights.allow(rights.any(BUCKET_WRITE), 404),
            _ => rights.allow(rights.any(BUCKET_READ), 404),
        },
        Endpoint::RecordOfMissingCollection => match method {
            "GET" | "HEAD" => rights.allow(rights.any(BUCKET_READ), 404),
            _ => 404,
        },
        // `bucket_create_principals` is system.Authenticated: listing falls back to it.
        Endpoint::Buckets => rights.allow(rights.authenticated, if method == "POST" { 201 } else { 200 }),
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// One grant (or none) and the callers worth trying with it.
struct Scenario {
    grant: Option<Grant>,
    callers: &'static [Caller],
}

impl Scenario {
    fn label(&self) -> String {
        let Some(Grant { ace: (level, perm), to }) = self.grant else {
            return "nothing granted".into();
        };
        let to = match to {
            Grantee::Bob => "bob",
            Grantee::GroupMembers => "group g",
            Grantee::Authenticated => "system.Authenticated",
            Grantee::Everyone => "system.Everyone",
        };
        format!("{level:?} {perm} to {to}").to_lowercase()
    }
}

const EVERY_PERMISSION: [Ace; 11] = [
    (B, "read"),
    (B, "write"),
    (B, "collection:create"),
    (B, "group:create"),
    (G, "read"),
    (G, "write"),
    (C, "read"),
    (C, "write"),
    (C, "record:create"),
    (R, "read"),
    (R, "write"),
];

/// No bucket-level grant to system.Everyone: it would make `GET /buckets` succeed for anonymous
/// callers in every later scenario (the bucket list spans all fixtures).
fn scenarios() -> Vec<Scenario> {
    use Caller::*;
    let mut all = vec![Scenario { grant: None, callers: &[Anonymous, WrongPassword, Owner, Other, Member] }];
    let grants = |aces: &[Ace], to: Grantee, callers: &'static [Caller]| -> Vec<Scenario> {
        aces.iter().map(|&ace| Scenario { grant: Some(Grant { ace, to }), callers }).collect()
    };
    all.extend(grants(&EVERY_PERMISSION, Grantee::Bob, &[Other]));
    let to_group = [(B, "read"), (B, "group:create"), (G, "write"), (C, "write"), (C, "record:create"), (R, "read")];
    all.extend(grants(&to_group, Grantee::GroupMembers, &[Member, Other]));
    let to_authenticated = [(B, "collection:create"), (G, "read"), (C, "read"), (R, "write")];
    all.extend(grants(&to_authenticated, Grantee::Authenticated, &[Other, WrongPassword, Anonymous]));
    all.extend(grants(&[(C, "record:create"), (R, "read")], Grantee::Everyone, &[Anonymous, WrongPassword]));
    all
}

struct Case {
    scenario: usize,
    caller: Caller,
    endpoint: Endpoint,
    method: &'static str,
    expected: u16,
    /// The fixture's bucket id.
    bucket: String,
}

impl Case {
    /// A successful write changes the fixture: such a case gets a fixture of its own.
    fn changes_things(&self) -> bool {
        !matches!(self.method, "GET" | "HEAD") && (200..300).contains(&self.expected)
    }
}

/// A bucket id no earlier run used (the reference Kinto cannot be flushed).
fn fresh_bucket_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    });
    format!("pm{run:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Running it.

/// A server to run the matrix against: a Tidemark of this suite, or a reference Kinto.
struct Target {
    client: reqwest::Client,
    base: String,
}

impl Target {
    fn of(server: &Server) -> Target {
        Target { client: server.client.clone(), base: server.base.clone() }
    }

    async fn send(&self, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = auth.and_then(|a| a.split_once(':')) {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The statuses of a batch's subrequests (the batch itself must succeed).
    async fn batch(&self, auth: Option<&str>, requests: Vec<Value>) -> Vec<u16> {
        let count = requests.len();
        let (status, body) = self.send("POST", "/batch", auth, Some(&json!({ "requests": requests }))).await;
        assert_eq!(status, 200, "POST /batch: {body}");
        let statuses: Vec<u16> = body["responses"]
            .as_array()
            .map(|r| r.iter().map(|r| r["status"].as_u64().unwrap_or(0) as u16).collect())
            .unwrap_or_default();
        assert_eq!(statuses.len(), count, "one response per subrequest: {body}");
        statuses
    }

    async fn user_id(&self, auth: &str) -> String {
        let (_, hello) = self.send("GET", "/", Some(auth), None).await;
        hello["user"]["id"].as_str().unwrap_or_else(|| panic!("{auth} is not authenticated: {hello}")).to_owned()
    }
}

/// The subrequests (run by alice) creating a fixture bucket with one grant.
fn fixture_requests(bucket: &str, grant: Option<Grant>, bob_id: &str, carol_id: &str) -> Vec<Value> {
    let group_uri = format!("/buckets/{bucket}/groups/g");
    let permissions = |level: Level| match grant {
        Some(Grant { ace: (l, perm), to }) if l == level => {
            let principal = match to {
                Grantee::Bob => bob_id,
                Grantee::GroupMembers => &group_uri,
                Grantee::Authenticated => "system.Authenticated",
                Grantee::Everyone => "system.Everyone",
            };
            json!({ perm: [principal] })
        }
        _ => json!({}),
    };
    let b = format!("/buckets/{bucket}");
    vec![
        json!({"method": "PUT", "path": b, "body": {"permissions": permissions(B)}}),
        json!({"method": "PUT", "path": format!("{b}/groups/g"),
               "body": {"data": {"members": [carol_id]}, "permissions": permissions(G)}}),
        json!({"method": "PUT", "path": format!("{b}/collections/c"), "body": {"permissions": permissions(C)}}),
        json!({"method": "PUT", "path": format!("{b}/collections/c/records/r"),
               "body": {"data": {"title": "r"}, "permissions": permissions(R)}}),
    ]
}

struct Mismatch {
    scenario: String,
    caller: Caller,
    method: &'static str,
    endpoint: &'static str,
    expected: u16,
    got: u16,
}

/// The mismatches as a table, one line each.
fn table(mismatches: &[Mismatch]) -> String {
    let mut out =
        format!("{:<50} {:<14} {:<7} {:<42} {:>8} {:>4}\n", "grant", "caller", "method", "endpoint", "expected", "got");
    for m in mismatches {
        let caller = format!("{:?}", m.caller);
        let _ = writeln!(
            out,
            "{:<50} {caller:<14} {:<7} {:<42} {:>8} {:>4}",
            m.scenario, m.method, m.endpoint, m.expected, m.got
        );
    }
    out
}

/// What a run found: how many cases, and those whose status differs from the oracle's.
struct Outcome {
    cases: usize,
    mismatches: Vec<Mismatch>,
}

impl Outcome {
    fn assert_clean(&self) {
        assert!(self.cases >= 500, "only {} cases", self.cases);
        assert!(
            self.mismatches.is_empty(),
            "{} of {} cases differ from the oracle:\n{}",
            self.mismatches.len(),
            self.cases,
            table(&self.mismatches)
        );
    }
}

/// Creates the callers' accounts (alice, bob, carol), concurrently: each costs a bcrypt hash.
async fn sign_up(target: &Target) {
    let sign_up = |credentials: &'static str| async move {
        let (user, password) = credentials.split_once(':').unwrap_or_default();
        let body = json!({"data": {"password": password}});
        let (status, reply) = target.send("PUT", &format!("/accounts/{user}"), None, Some(&body)).await;
        // 401: it exists already (a reference Kinto kept from an earlier run).
        assert!(matches!(status, 201 | 401), "sign-up of {user}: {status} {reply}");
    };
    tokio::join!(sign_up(ALICE), sign_up(BOB), sign_up(CAROL));
}

/// Runs the whole matrix: builds the fixtures, sends every case, compares with the oracle.
async fn run_matrix(target: &Target, policy: Policy, mode: Mode) -> Outcome {
    if policy == Policy::Accounts {
        sign_up(target).await;
    }
    let bob_id = target.user_id(BOB).await;
    let carol_id = target.user_id(CAROL).await;
    let scenarios = scenarios();

    let mut cases = Vec::new();
    let mut fixtures = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let shared = fresh_bucket_id();
        fixtures.push((shared.clone(), scenario.grant));
        for &caller in scenario.callers {
            for endpoint in Endpoint::ALL {
                for &method in endpoint.methods() {
                    let expected = expected(scenario.grant, caller, endpoint, method, policy);
                    let bucket = shared.clone();
                    let mut case = Case { scenario: index, caller, endpoint, method, expected, bucket };
                    if case.changes_things() {
                        case.bucket = fresh_bucket_id();
                        fixtures.push((case.bucket.clone(), scenario.grant));
                    }
                    cases.push(case);
                }
            }
        }
    }
    // Shared fixtures: every read before any write that is expected to change nothing.
    cases.sort_by_key(|c| (c.changes_things(), !matches!(c.method, "GET" | "HEAD"), c.caller));

    for chunk in fixtures.chunks(BATCH_LIMIT / 4) {
        let requests =
            chunk.iter().flat_map(|(bucket, grant)| fixture_requests(bucket, *grant, &bob_id, &carol_id)).collect();
        let statuses = target.batch(Some(ALICE), requests).await;
        assert!(statuses.iter().all(|s| *s == 201), "fixtures not created: {statuses:?}");
    }

    let mut got = Vec::with_capacity(cases.len());
    match mode {
        Mode::Direct => {
            for case in &cases {
                let body = case.endpoint.body(case.method, &carol_id);
                let path = case.endpoint.path(&case.bucket);
                got.push(target.send(case.method, &path, case.caller.credentials(), body.as_ref()).await.0);
            }
        }
        Mode::Batched(limit) => {
            for same_caller in cases.chunk_by(|a, b| a.caller == b.caller) {
                for chunk in same_caller.chunks(limit) {
                    let requests = chunk
                        .iter()
                        .map(|case| {
                            let mut request = json!({"method": case.method, "path": case.endpoint.path(&case.bucket)});
                            if let Some(body) = case.endpoint.body(case.method, &carol_id) {
                                request["body"] = body;
                            }
                            request
                        })
                        .collect();
                    got.extend(target.batch(chunk[0].caller.credentials(), requests).await);
                }
            }
        }
    }

    let mismatches = cases
        .iter()
        .zip(got)
        .filter(|(case, got)| case.expected != *got)
        .map(|(case, got)| Mismatch {
            scenario: scenarios[case.scenario].label(),
            caller: case.caller,
            method: case.method,
            endpoint: case.endpoint.template(),
            expected: case.expected,
            got,
        })
        .collect();
    Outcome { cases: cases.len(), mismatches }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn oracle_reproduces_the_spec_examples() {
    let to_bob = |ace: Ace| Some(Grant { ace, to: Grantee::Bob });
    let bob = |grant, endpoint, method| expected(grant, Caller::Other, endpoint, method, Policy::Basic);
    // §8.7: create is not read.
    assert_eq!(bob(to_bob((C, "record:create")), Endpoint::MissingRecord, "GET"), 403);
    assert_eq!(bob(to_bob((C, "record:create")), Endpoint::MissingRecord, "PUT"), 201);
    assert_eq!(bob(to_bob((C, "record:create")), Endpoint::Records, "GET"), 200);
    assert_eq!(bob(to_bob((C, "record:create")), Endpoint::Collection, "GET"), 200);
    assert_eq!(bob(to_bob((C, "read")), Endpoint::MissingRecord, "DELETE"), 404);
    assert_eq!(bob(to_bob((B, "read")), Endpoint::RecordsOfMissingCollection, "GET"), 404);
    assert_eq!(bob(None, Endpoint::RecordsOfMissingCollection, "GET"), 403);
    assert_eq!(bob(None, Endpoint::RecordOfMissingCollection, "GET"), 403);
    assert_eq!(bob(None, Endpoint::RecordOfMissingCollection, "PATCH"), 404, "Kinto looks the collection up first");
    assert_eq!(bob(to_bob((R, "read")), Endpoint::Record, "PATCH"), 403);
    assert_eq!(bob(to_bob((B, "group:create")), Endpoint::Bucket, "GET"), 200);
    assert_eq!(bob(to_bob((B, "group:create")), Endpoint::Collections, "GET"), 403);
    assert_eq!(bob(None, Endpoint::Buckets, "GET"), 200);
    assert_eq!(expected(None, Caller::Anonymous, Endpoint::Buckets, "GET", Policy::Basic), 401);
    assert_eq!(expected(None, Caller::Owner, Endpoint::MissingRecord, "PATCH", Policy::Basic), 404);
    let everyone_reads = Some(Grant { ace: (R, "read"), to: Grantee::Everyone });
    assert_eq!(expected(everyone_reads, Caller::Anonymous, Endpoint::Record, "GET", Policy::Accounts), 200);
    let authenticated = Some(Grant { ace: (C, "read"), to: Grantee::Authenticated });
    assert_eq!(expected(authenticated, Caller::WrongPassword, Endpoint::Collection, "GET", Policy::Basic), 200);
    assert_eq!(expected(authenticated, Caller::WrongPassword, Endpoint::Collection, "GET", Policy::Accounts), 401);
}

async fn tidemark(policy: Policy, mode: Mode) -> Outcome {
    let accounts = [
        ("includes", "kinto.plugins.accounts"),
        ("multiauth.policies", "account"),
        ("multiauth.policy.account.use", "kinto.plugins.accounts.AccountsPolicy"),
        ("account_create_principals", "system.Everyone"),
        ("account_write_principals", "account:admin"),
        ("batch_max_requests", "0"),
    ];
    let s = Server::start_with(if policy == Policy::Accounts { &accounts } else { &[] }).await;
    let outcome = run_matrix(&Target::of(&s), policy, mode).await;
    s.stop().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_kintos_status_on_every_endpoint() {
    tidemark(Policy::Basic, Mode::Direct).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_batch_every_subrequest_gets_kintos_status() {
    tidemark(Policy::Basic, Mode::Batched(BATCH_LIMIT)).await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_accounts_a_wrong_password_is_anonymous_throughout_the_matrix() {
    tidemark(Policy::Accounts, Mode::Batched(usize::MAX)).await.assert_clean();
}

/// Checks the oracle against a reference Kinto 26.5 (`bucket_create_principals =
/// system.Authenticated`), with basicauth, or with accounts when `KINTO_ACCOUNTS=1`, e.g.
/// `KINTO_URL=http://127.0.0.1:28888/v1 cargo test --test it matrix_matches -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a reference Kinto: set KINTO_URL"]
async fn matrix_matches_a_reference_kinto() {
    let Ok(base) = std::env::var("KINTO_URL") else {
        panic!("set KINTO_URL to a reference Kinto's /v1 URL");
    };
    let target = Target { client: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned() };
    if std::env::var("KINTO_ACCOUNTS").is_ok_and(|v| v == "1") {
        run_matrix(&target, Policy::Accounts, Mode::Batched(BATCH_LIMIT)).await.assert_clean();
        return;
    }
    for mode in [Mode::Direct, Mode::Batched(BATCH_LIMIT)] {
        run_matrix(&target, Policy::Basic, mode).await.assert_clean();
    }
}

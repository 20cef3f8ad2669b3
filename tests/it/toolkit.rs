//! The toolkit: services of one's own resources, served like Kinto's (the tutorial's `food`
//! service under `/v0`, per-user and shareable resources, schemas, irregular URL segments,
//! principal sources).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidemark_server::toolkit::{Resource, Service};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{user_id, Server, ALICE, BOB};

const MKAUR: &str = "token:mkaur";

fn food_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"food": {"type": "string"}, "taste": {"type": "string"}},
        "required": ["food"]
    })
}

/// The tutorial's service: `food`, one list per user, under `/v0`.
async fn food_service(shared: bool) -> Server {
    let food = if shared { Resource::shareable("food", "food") } else { Resource::per_user("food", "food") };
    let service = Service::new("food")
        .version("1.0.0")
        .prefix("/v0")
        .setting("multiauth.policies", "basicauth")
        .setting("food_create_principals", "system.Authenticated")
        .resource(food.schema(&food_schema()).expect("schema"));
    Server::start_service(service, "/v0").await
}

fn is_uuid4(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts[2].starts_with('4')
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

#[tokio::test]
async fn the_tutorial_session_creates_a_food_as_printed() {
    let s = food_service(false).await;
    let sent = json!({"data": {"food": "chocolate", "taste": "varies from bitter to sweet"}});
    let created = s.post("/food", Some(MKAUR), sent).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(created.header("x-content-type-options"), Some("nosniff"));
    assert!(created.header("access-control-expose-headers").is_some());
    let data = created.body["data"].as_object().expect("data");
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["food", "id", "last_modified", "taste"]);
    assert_eq!(created.body.as_object().map(|b| b.len()), Some(1), "no permissions on a per-user object");
    assert!(is_uuid4(data["id"].as_str().unwrap_or_default()), "{}", data["id"]);
    assert_eq!(created.etag(), data["last_modified"].as_u64().expect("last_modified"));
    assert!(created.header("last-modified").is_some());

    let hello = s.get("/", None).await;
    assert_eq!(hello.body["project_name"], "food");
    assert_eq!(hello.body["project_version"], "1.0.0");
    assert_eq!(hello.body["url"], format!("http://{}/v0/", s.addr));
    assert_eq!(s.get("/food", None).await.status, 401, "anonymous callers have no namespace");
    let kinto_path = s.get(&format!("http://{}/v1/buckets", s.addr), Some(MKAUR)).await;
    assert_eq!(kinto_path.status, 404, "only /v0 is served, and no buckets are declared");
    s.stop().await;
}

#[tokio::test]
async fn a_per_user_resource_hides_other_users_objects() {
    let s = food_service(false).await;
    let before = s.get("/food", Some(MKAUR)).await.etag();
    let created = s.post("/food", Some(MKAUR), json!({"data": {"food": "tea"}})).await;
    let id = created.body["data"]["id"].as_str().expect("id").to_owned();
    let path = format!("/food/{id}");

    // Another user: the object does not exist in their namespace.
    assert_eq!(s.get(&path, Some(BOB)).await.status, 404);
    assert_eq!(s.patch(&path, Some(BOB), json!({"data": {"food": "coffee"}})).await.status, 404);
    assert_eq!(s.delete(&path, Some(BOB)).await.status, 404);
    assert_eq!(s.get("/food", Some(BOB)).await.body["data"], json!([]));
    assert_eq!(s.get(&format!("/food?_since={before}"), Some(BOB)).await.body["data"], json!([]));
    // The same id in Bob's namespace is another object.
    let bobs = s.put(&path, Some(BOB), json!({"data": {"food": "coffee"}})).await;
    assert_eq!(bobs.status, 201);
    assert_eq!(s.get(&path, Some(MKAUR)).await.body["data"]["food"], "tea");

    // The owner: listing, `_since`, PATCH with If-Match.
    let listed = s.get("/food", Some(MKAUR)).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    let since = s.get(&format!("/food?_since={before}"), Some(MKAUR)).await;
    assert_eq!(since.body["data"][0]["id"], id.as_str());
    let stale =
        s.call("PATCH", &path, Some(MKAUR), Some(json!({"data": {"taste": "bitter"}})), &[("If-Match", "\"1\"")]).await;
    assert_eq!(stale.status, 412);
    let etag = format!("\"{}\"", created.etag());
    let patched =
        s.call("PATCH", &path, Some(MKAUR), Some(json!({"data": {"taste": "bitter"}})), &[("If-Match", &etag)]).await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["data"]["taste"], "bitter");
    assert_eq!(patched.body["data"]["food"], "tea");
    // No ACL can be set on a per-user object.
    let shared = s.patch(&path, Some(MKAUR), json!({"permissions": {"read": ["system.Everyone"]}})).await;
    assert_eq!(shared.status, 400);
    assert_eq!(s.delete(&path, Some(MKAUR)).await.status, 200);
    assert_eq!(s.get(&path, Some(BOB)).await.status, 200, "Bob's own object is untouched");
    s.stop().await;
}

#[tokio::test]
async fn a_resource_schema_accepts_and_refuses_as_kinto() {
    let s = food_service(false).await;
    let missing = s.post("/food", Some(MKAUR), json!({"data": {"taste": "sweet"}})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.errno(), 107);
    assert_eq!(missing.body["details"][0]["name"], "data.food");
    let wrong = s.post("/food", Some(MKAUR), json!({"data": {"food": 12}})).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["details"][0]["name"], "data.food");
    let id = s.post("/food", Some(MKAUR), json!({"data": {"food": "pie"}})).await.body["data"]["id"].clone();
    let path = format!("/food/{}", id.as_str().expect("id"));
    assert_eq!(s.patch(&path, Some(MKAUR), json!({"data": {"food": null}})).await.status, 400, "PATCH is checked too");
    assert_eq!(s.get(&path, Some(MKAUR)).await.body["data"]["food"], "pie", "nothing written");
    s.stop().await;
}

/// A `$ref` to a URL is never fetched: the schema cannot be compiled, so the service does not
/// start with it.
#[test]
fn a_schema_ref_to_a_url_is_refused_without_fetching() {
    let schema = json!({"$ref": "http://127.0.0.1:9/never-fetched.json"});
    let refused = Resource::per_user("food", "food").schema(&schema);
    assert!(refused.is_err());
}

async fn ws(
    s: &Server,
    auth: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws", s.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, auth);
    request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
    tokio_tungstenite::connect_async(request).await.expect("connect").0
}

async fn next_change<S>(socket: &mut S, wait: Duration) -> Option<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).ok()?;
                if frame["type"] == "change" {
                    return Some(frame);
                }
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn streams_deliver_a_users_own_changes_only() {
    let s = food_service(false).await;
    let mut mine = ws(&s, MKAUR).await;
    let subscribe = json!({"type": "subscribe", "id": "f", "filter": {"resource_name": "food"}, "since": "now"});
    mine.send(Message::Text(subscribe.to_string().into())).await.expect("subscribe");
    let mut bobs = ws(&s, BOB).await;
    bobs.send(Message::Text(subscribe.to_string().into())).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;

    s.post("/food", Some(BOB), json!({"data": {"food": "bob's"}})).await;
    let created = s.post("/food", Some(MKAUR), json!({"data": {"food": "mine"}})).await;
    let id = created.body["data"]["id"].as_str().expect("id").to_owned();
    let change = next_change(&mut mine, Duration::from_secs(5)).await.expect("a change");
    assert_eq!(change["data"]["food"], "mine", "Bob's change never reaches mkaur");
    assert_eq!(change["resource_name"], "food");
    assert_eq!(change["uri"], format!("/food/{id}"), "the URI the owner reads it at");
    let bob_change = next_change(&mut bobs, Duration::from_secs(5)).await.expect("Bob's own change");
    assert_eq!(bob_change["data"]["food"], "bob's");
    assert!(next_change(&mut bobs, Duration::from_millis(500)).await.is_none(), "and nothing of mkaur's");
    s.stop().await;
}

#[tokio::test]
async fn a_shareable_resource_honours_grants_and_revocations() {
    let s = food_service(true).await;
    let created = s.post("/food", Some(ALICE), json!({"data": {"food": "cake"}})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["permissions"]["write"], json!([user_id(ALICE)]));
    let path = format!("/food/{}", created.body["data"]["id"].as_str().expect("id"));
    assert_eq!(s.get(&path, Some(BOB)).await.status, 403);
    assert_eq!(s.get("/food", Some(BOB)).await.body["data"], json!([]), "Bob may create, so he lists nothing");

    let granted = s.patch(&path, Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    assert_eq!(granted.status, 200);
    assert_eq!(s.get(&path, Some(BOB)).await.body["data"]["food"], "cake");
    assert_eq!(s.get("/food", Some(BOB)).await.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(s.patch(&path, Some(BOB), json!({"data": {"food": "pie"}})).await.status, 403, "read is not write");

    let revoked = s.patch(&path, Some(ALICE), json!({"permissions": {"read": []}})).await;
    assert_eq!(revoked.status, 200);
    assert_eq!(s.get(&path, Some(BOB)).await.status, 403);
    assert_eq!(s.get("/food", Some(BOB)).await.body["data"], json!([]));
    s.stop().await;
}

/// A nested shareable tree with irregular URL segments and a principal source of its own:
/// URIs, inheritance and memberships follow the declarations, not Kinto's names.
#[tokio::test]
async fn declared_segments_inheritance_and_members_drive_the_generic_handlers() {
    let service = Service::new("policies")
        .setting("multiauth.policies", "basicauth")
        .setting("policy_create_principals", "system.Authenticated")
        .resource(Resource::shareable("policy", "policies").permission("rule:create"))
        .resource(Resource::shareable("team", "teams").under("policy").members_field("people"))
        .resource(Resource::shareable("rule", "rules").under("policy").default_sort("title"));
    let s = Server::start_service(service, "/v1").await;
    assert_eq!(s.put("/policies/p", Some(ALICE), json!({})).await.status, 201);
    for title in ["b", "c", "a"] {
        let made = s.post("/policies/p/rules", Some(ALICE), json!({"data": {"title": title}})).await;
        assert_eq!(made.status, 201, "{:?}", made.body);
    }
    let titles: Vec<Value> = s.get("/policies/p/rules", Some(ALICE)).await.body["data"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["title"].clone())
        .collect();
    assert_eq!(titles, [json!("a"), json!("b"), json!("c")], "the declared default sort");

    // Bob cannot read the policy's rules until a team of the policy that names him is granted
    // read on the policy.
    assert_eq!(s.get("/policies/p/rules", Some(BOB)).await.status, 403);
    let team = s.put("/policies/p/teams/t", Some(ALICE), json!({"data": {"people": [user_id(BOB)]}})).await;
    assert_eq!(team.status, 201, "{:?}", team.body);
    let grant = json!({"permissions": {"read": ["/policies/p/teams/t"]}});
    assert_eq!(s.patch("/policies/p", Some(ALICE), grant).await.status, 200);
    assert_eq!(s.get("/policies/p/rules", Some(BOB)).await.body["data"].as_array().map(Vec::len), Some(3));
    let hello = s.get("/", Some(BOB)).await;
    assert!(hello.body["user"]["principals"].as_array().expect("principals").contains(&json!("/policies/p/teams/t")));
    // Emptying the team takes the right away at once.
    assert_eq!(s.patch("/policies/p/teams/t", Some(ALICE), json!({"data": {"people": []}})).await.status, 200);
    assert_eq!(s.get("/policies/p/rules", Some(BOB)).await.status, 403);
    // Deleting the policy takes its children with it.
    assert_eq!(s.delete("/policies/p", Some(ALICE)).await.status, 200);
    assert_eq!(s.get("/policies/p/rules", Some(ALICE)).await.status, 403);
    s.stop().await;
}

/// A policy a service brings: `Authorization: Token <name>` (for the test, any name is valid).
struct TokenPolicy;

impl tidemark_server::auth::Policy for TokenPolicy {
    fn name(&self) -> &str {
        "token"
    }

    fn identify<'a>(
        &'a self,
        _: &'a tidemark_engine::Engine,
        authorization: &'a str,
    ) -> tidemark_server::toolkit::BoxFuture<
        'a,
        Result<Option<tidemark_server::auth::Identified>, tidemark_protocol::ApiError>,
    > {
        let found = authorization
            .strip_prefix("Token ")
            .map(|name| tidemark_server::auth::Identified { user_id: format!("token:{name}"), profile: None });
        Box::pin(async move { Ok(found) })
    }

    fn challenge(&self) -> Option<String> {
        Some("Token realm=\"food\"".into())
    }
}

#[tokio::test]
async fn a_service_brings_its_own_authentication_policy() {
    let service = Service::new("food")
        .prefix("/v0")
        .setting("multiauth.policies", "")
        .policy(std::sync::Arc::new(TokenPolicy))
        .resource(Resource::per_user("food", "food"));
    let s = Server::start_service(service, "/v0").await;
    let token = [("Authorization", "Token mkaur")];
    let created = s.call("POST", "/food", None, Some(json!({"data": {"food": "soup"}})), &token).await;
    assert_eq!(created.status, 201);
    let hello = s.call("GET", "/", None, None, &token).await;
    assert_eq!(hello.body["user"]["id"], "token:mkaur");
    let anonymous = s.get("/food", Some(MKAUR)).await;
    assert_eq!(anonymous.status, 401, "Basic Auth is not in this service's chain");
    assert_eq!(anonymous.header("www-authenticate"), Some("Token realm=\"food\""));
    s.stop().await;
}

/// The data of a typed resource must deserialise into its Rust type.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Meal {
    name: String,
    calories: u32,
}

#[tokio::test]
async fn a_typed_resource_checks_data_against_its_rust_type() {
    let service = Service::new("meals")
        .setting("multiauth.policies", "basicauth")
        .resource(Resource::per_user("meal", "meals").typed::<Meal>());
    let s = Server::start_service(service, "/v1").await;
    let ok = s.post("/meals", Some(ALICE), json!({"data": {"name": "soup", "calories": 120}})).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    for bad in [json!({"name": "soup"}), json!({"name": "soup", "calories": -1}), json!({"name": 1, "calories": 1})] {
        let refused = s.post("/meals", Some(ALICE), json!({ "data": bad })).await;
        assert_eq!((refused.status.as_u16(), refused.errno()), (400, 107), "{bad}");
        assert_eq!(refused.body["details"][0]["name"], "data");
    }
    s.stop().await;
}

/// `/__api__` describes what the registry serves: Kinto's tree, or a service's own resources.
#[tokio::test]
async fn the_openapi_document_follows_the_registry() {
    let kinto = Server::start().await;
    let api = kinto.get("/__api__", None).await;
    assert_eq!(api.status, 200);
    assert_eq!(api.body["swagger"], "2.0");
    assert_eq!(api.body["basePath"], "/v1");
    let paths = api.body["paths"].as_object().expect("paths");
    for path in ["/buckets", "/buckets/{id}", "/buckets/{bucket_id}/collections/{collection_id}/records/{id}", "/batch"]
    {
        assert!(paths.contains_key(path), "{path}");
    }
    let record = &paths["/buckets/{bucket_id}/collections/{collection_id}/records/{id}"];
    for method in ["get", "head", "put", "patch", "delete"] {
        assert!(record.get(method).is_some(), "{method}");
    }
    let names: Vec<&str> =
        record["get"]["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.starts_with(&["bucket_id", "collection_id", "id"]), "{names:?}");
    assert!(!paths.contains_key("/accounts"), "accounts are a plugin");
    kinto.stop().await;

    let food = food_service(false).await;
    let api = food.get("/__api__", None).await;
    assert_eq!(api.body["basePath"], "/v0");
    assert_eq!(api.body["info"]["title"], "food");
    let paths = api.body["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/food") && paths.contains_key("/food/{id}"));
    assert!(!paths.contains_key("/buckets"), "only what the service declares");
    food.stop().await;
}

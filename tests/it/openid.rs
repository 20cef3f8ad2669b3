//! OpenID Connect: bearer JWTs checked against a local identity provider's keys, and the
//! login flow that sends a browser there and back.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::Server;

/// The provider's signing key (generated for these tests only).
const PROVIDER_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA9dxxfGZao4MhNVVkYvX8vd6MFnMdAUrE4ELLRlLhwNki29e3
Sqi+nBD/9z39SGs+ykUU8T7dbWH5mDlN7vS4tFhC+v5RUXt1roycGH9jF/Z6GDOf
uiCtFxmqj6UsPwViy+4CFcZ9ml2sOu5m1q6aorixwU7uoWslWownmk+cM8Zm7n9R
wjGNkLNDSTVR5bmvwL14KGI9ZNg9iGAfRAqAlS89Sqr9jMlR3ne7v7CGTxlYk+EI
0DdvsXDfy4j2GmvLH94UmJ5+A7k//X0DMnM672RmJNedL6v6a/Hq3r5s90KD9WjA
OdeZHTqXtVoVAO8JJbcznLfjT3ZbyXFjOhErgwIDAQABAoIBAA/N7A+lRrtPFnHm
u4LEXEsE73gRTfKDe2oNG825TeDHNH9G+8sqqMIV3QES34wUX3TCLGlLnhFGJIod
WOinm5NK6ddXmiOaQ5jaWhMVu+l87cv4zueN6oKFza8uh3caTLJeP40QdYotmQDa
yrU52R/lA9bbe5SDHjjBXK8F4hJ5KhXbfbxzmSmjITGvn7Mvqii9RI+5nBEzSXES
y3zDTD5ZUy8kZEGL6XEtKDlQSs46svbNCuDDlqOV7+zoqaGSHSntaCrc/ZR1o/3Y
1/O8K9H7IN8lltXAcdIwa+BlmvWUgEHv2J7Rlk+gjDCOonAXznw4n8xMwJdxptyU
2PaZDUECgYEA+9pvSXbLiR/XKHWPwtj8O8S6sDtRUghuS+DMCZ8qTBhgourNIjYd
RAvRDMo6hJa2DwqQcAu9vmy36OMOO55+PrusR0i9SYo1+jeJh+KVVFnUJRvpAEyP
8Tck/T7hJAIgRJzgL8fPF9uyGcWWBzfc56qWH6pZGUl7eO20qPMwqsECgYEA+ejA
Zu6Y+THgqZQ1C8jz8JemIkvz+gcGddIPbVjepRwVIYLx1cB060WI35BYHMUwZ1UT
SEsyetIuylrwMrzC4Dye+UfUIiqqKozuews7wvxndUmkEDY2FIf3G0BE85wNXRrj
s2BTzqZNlvnqGBeBeyP7rMJm6xGKkhsAvj16O0MCgYEApzKYdvj6nooY2K9TRVOw
AC3WknCOyBr4vj76tdiIyAPXA9FFZdTvEOGXYxpORv+W1d15jij9SpH6dg1mwYWy
4grNkHVl1JCAzSBZmXB/GoSYJhqlUKGDXevyDn3UEYenzGUpIA9SGNCtKBbYRup7
KQFCsLryc6so4VtNeGwafwECgYEAx8msL13mC6o1SjzC36YKZrhFx7ti0+rT3lNN
pARdEjBOMFlHzrOqhQA0+U2jM3TtSl64KJ59P7VSVNG4n0dKoAu2p+EllR74pUW/
zbxgTXSNnTV/JLrCJ02/XhjWRs7l3B4IFToYJefLtbwbyqDYEcLli+pqbti6KC3Q
PUZWtpMCgYAefRN71WvtFWF5idGYKQJ0g5HdLiD3XZDAorLxr2pIlvPSFuMAoceF
ICgM3YKP/PgmVSRwQ3fnZ3fChhm8jVfBeuzEpEC3QDtXmx0bblKmV9KTuMJ/Cob9
OJcriRpH4UzHXNKSqMDvVfRthnFpWVadYgXYz4yhhJznrYB1TDyKyQ==
-----END RSA PRIVATE KEY-----";
/// Its public modulus, as the provider's JWKS publishes it.
const PROVIDER_N: &str = "9dxxfGZao4MhNVVkYvX8vd6MFnMdAUrE4ELLRlLhwNki29e3Sqi-nBD_9z39SGs-ykUU8T7dbWH5mDlN7vS4tFhC-v5RUXt1roycGH9jF_Z6GDOfuiCtFxmqj6UsPwViy-4CFcZ9ml2sOu5m1q6aorixwU7uoWslWownmk-cM8Zm7n9RwjGNkLNDSTVR5bmvwL14KGI9ZNg9iGAfRAqAlS89Sqr9jMlR3ne7v7CGTxlYk-EI0DdvsXDfy4j2GmvLH94UmJ5-A7k__X0DMnM672RmJNedL6v6a_Hq3r5s90KD9WjAOdeZHTqXtVoVAO8JJbcznLfjT3ZbyXFjOhErgw";
/// Somebody else's key: tokens it signs must be refused.
const OTHER_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAsICJa3L4l0OljsCAqY0Nl8yFCKT8+QGV9lPtZTTvTaBgBWs6
OD+eHwBrCIlSX7gzQwoJP7pRH+z3Mch8NGmwdgPIVzAv1gnPxQttzluyZbopfuzG
g96jkPmPXj754QB0Omkp61tvbJdHBv5UL001YewSeTEPvjUOdnRecOEmFqCVlMq+
wMExT94KBJEgs+yG54SOA0gZLLp5VbZfTRLaF4xBKhJZlrlilSuuvPFzXTRaCNYM
Hxe5EUfPlOLnNg16nMZ1oTWkds9rd0qH1eyRONNVjtdCDzXQAjuPa2VJ6vCMwlld
8au2pcwDz45ckqtnnZCnHJICZUgbSI8VoFjgBwIDAQABAoIBAAl9ErL3ROxc2dM8
ZhS3XVO1Z8sSYGDCkd1JBcO7F/vqwAuKiC0d8Z7/cFs1IEiLdOk8Ha/492npkCBz
ae0nZ8uJ+7gBAl4iiOWyITHgaObIuBJd7qe7Zrx64Uo5XuJjTXXjN9QY3+Fmmie2
F7CAGUgtkl1371cgyXZBkavGO6LCFSWAGne09L8nioTb2H8bbKbD5XvKwNObmiMM
WHMQhoKL19okexdYU9aBJgZgl+4/vO8oZOYm9qhKy/qi4oJ0gHYkYzXCDxP2aEUO
W5QgzqYT3beL7gOXyktNRtwyfPbrYbMsCwhVgMIDiTlagiaFRM+6tbFwRkETO7xC
plC6HAECgYEA51MkXeATfaMrbo8JiPpVLtc8FdDEPNdGc1mK2cstsUgMyN9nTjqG
2bV0h6GukeH0K138To1hz7NEXtH02wPqPl7ougiFzUrDuJreHLPCpK41aWI0vRQU
ffIKMeNr0DghyT/I7bVYJWnBD33MWWnppX3FdSIl9rIrgo6zUBqTPqECgYEAw1RV
sp7rHHkdyrBb1t75TxGjbFyVUANm7xBklSD7QBJKoXoipG0nuVJy0BBRL+xkzgVg
iZdb7V/ElVYx6spkILqbe9jxhg0wAy0XCf5i688Gvngy+QqE/ar2nT/psja8O9Np
RhCTFMHkeGHDROLtk/SUoAFtz9hSih1ClsYl5acCgYBU70sYCNE/PS0SQASxPbEP
LMoL/IZBDI36hnMb+qUBRcIj8xscNxMSVrS9pBjTyZH8ZlrggLrcJydAZXiw/eQB
GJn8zGpMcVohqwNIqJwcGTbVRdC1Z+0KPVeO78DDSAjnurrMxNvjiMvxIzBn2CKI
uABLPMmRpeOh4UFndQqBYQKBgQCX47KoLW/COmRyQuWHlufjFmIwV2Y8TAj1CZhN
ZtI5pn+mRaU+myryryxcovOfAoH4urGxDKQNWBUz000JuMxXrwRNMAvQI90b+yoZ
OVmO6PPjlPB+PDHiV9lhulttm6aQFvub4jOdRpD1E4CWxqfcD6qrKbFMmHjGsa4g
NIEvrQKBgApAfVhCkypY3T1pWI4vgzqtWKWxKoPOBMGpCdVsHTeIcDqCGJ5EBTpw
wRwz6h1mo/Ul2IlrjC7Jiam3JIkwmX+UtKkQnZL7WsLbhU/o3B7utHPP2df/O5jA
xUj+AqYKig3beJAS7W8bljNXgM35TNZUQfdPMeOH+Slw1B+HiuBm
-----END RSA PRIVATE KEY-----";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn token(key: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let key = EncodingKey::from_rsa_pem(key.as_bytes()).expect("pem");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// A provider on 127.0.0.1: discovery, keys, and a token endpoint that answers any code.
pub(crate) async fn provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    let jwks =
        json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": PROVIDER_N, "e": "AQAB"}]});
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
        .route("/jwks", get(move || async move { Json(jwks) }))
        .route(
            "/token",
            post(|body: String| async move {
                let granted = body.contains("code=good") && body.contains("grant_type=authorization_code");
                Json(if granted {
                    json!({"access_token": "at-1", "id_token": "it-1", "token_type": "Bearer"})
                } else {
                    json!({"error": "invalid_grant", "error_description": "bad code"})
                })
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}

/// The settings of an OpenID policy named `openid` on the provider at `issuer`.
pub(crate) fn openid_settings(issuer: &str) -> [(&'static str, &str); 6] {
    [
        ("multiauth.policies", "openid basicauth"),
        ("multiauth.policy.openid.use", "kinto.plugins.openid.OpenIDConnectPolicy"),
        ("multiauth.policy.openid.issuer", issuer),
        ("multiauth.policy.openid.client_id", "tidemark"),
        ("multiauth.policy.openid.client_secret", "s3cret"),
        ("multiauth.policy.openid.audience", "tidemark"),
    ]
}

async fn server(issuer: &str) -> Server {
    Server::start_with(&openid_settings(issuer)).await
}

async fn bearer(s: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> crate::common::Reply {
    let header = format!("Bearer {token}");
    s.call(method, path, None, body, &[("Authorization", header.as_str())]).await
}

#[tokio::test]
async fn a_signed_bearer_token_identifies_its_subject() {
    let issuer = provider().await;
    let s = server(&issuer).await;
    let good = token(
        PROVIDER_KEY,
        json!({"iss": issuer, "sub": "alice", "aud": "tidemark", "exp": now() + 600, "email": "a@x"}),
    );
    let hello = bearer(&s, "GET", "/", &good, None).await;
    assert_eq!(hello.body["user"]["id"], "openid:alice");
    assert_eq!(hello.body["user"]["profile"]["email"], "a@x");
    let provider = &hello.body["capabilities"]["openid"]["providers"][0];
    assert_eq!(provider["name"], "openid");
    assert_eq!(provider["auth_path"], "/openid/openid/login");
    assert_eq!(provider["client_id"], "tidemark");
    assert!(hello.body["capabilities"]["basicauth"].is_object(), "the other policy of the chain stays");

    let created = bearer(&s, "PUT", "/buckets/b", &good, Some(json!({}))).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["permissions"]["write"], json!(["openid:alice"]));
    assert_eq!(bearer(&s, "GET", "/buckets/b", &good, None).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn expired_wrongly_signed_or_misaddressed_tokens_are_refused() {
    let issuer = provider().await;
    let s = server(&issuer).await;
    let good = token(PROVIDER_KEY, json!({"iss": issuer, "sub": "alice", "aud": "tidemark", "exp": now() + 600}));
    assert_eq!(bearer(&s, "PUT", "/buckets/b", &good, Some(json!({}))).await.status, 201);
    let refused = [
        ("expired", token(PROVIDER_KEY, json!({"iss": issuer, "sub": "alice", "aud": "tidemark", "exp": now() - 600}))),
        (
            "signed by another key",
            token(OTHER_KEY, json!({"iss": issuer, "sub": "alice", "aud": "tidemark", "exp": now() + 600})),
        ),
        (
            "for another audience",
            token(PROVIDER_KEY, json!({"iss": issuer, "sub": "alice", "aud": "other", "exp": now() + 600})),
        ),
        (
            "from another issuer",
            token(
                PROVIDER_KEY,
                json!({"iss": "http://127.0.0.1:9", "sub": "alice", "aud": "tidemark", "exp": now() + 600}),
            ),
        ),
        ("not a JWT", "opaque-token".to_owned()),
    ];
    for (why, token) in refused {
        let reply = bearer(&s, "GET", "/buckets/b", &token, None).await;
        assert_eq!(reply.status, 401, "{why}");
        assert_eq!(reply.errno(), 104, "{why}");
        let challenges: Vec<&str> =
            reply.headers.get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(challenges, ["Bearer realm=\"Realm\"", "Basic realm=\"Realm\""], "{why}");
        assert!(bearer(&s, "GET", "/", &token, None).await.body.get("user").is_none(), "{why}: anonymous");
    }
    s.stop().await;
}

#[test]
fn an_openid_policy_without_issuer_stops_the_server() {
    let settings = tidemark_server::Settings::load(
        None,
        &[],
        &[
            ("multiauth.policies".into(), "openid".into()),
            ("multiauth.policy.openid.use".into(), "kinto.plugins.openid.OpenIDConnectPolicy".into()),
            ("multiauth.policy.openid.client_id".into(), "tidemark".into()),
        ],
    );
    let err = settings.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("multiauth.policy.openid.issuer"), "{err}");
}

#[tokio::test]
async fn the_login_flow_goes_to_the_provider_and_back_with_its_tokens() {
    let issuer = provider().await;
    let s = server(&issuer).await;
    let callback = "http://app.example/cb#token=";
    let login = format!("/openid/openid/login?callback={}&scope=openid%20email", urlencode(callback));
    let sent = s.get(&login, None).await;
    assert_eq!(sent.status, 307);
    let location = sent.header("location").expect("location").to_owned();
    assert!(
        location.starts_with(&format!("{issuer}/authorize?client_id=tidemark&response_type=code&scope=openid%20email")),
        "{location}"
    );
    assert!(location.contains(&format!("redirect_uri={}", urlencode(&format!("{}/openid/openid/token", s.base)))));
    let state = location.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state").to_owned();

    let back = s.get(&format!("/openid/openid/token?code=good&state={state}"), None).await;
    assert_eq!(back.status, 307);
    let target = back.header("location").expect("location");
    let encoded = target.strip_prefix(callback).expect("back to the callback");
    let decoded = base64::engine::general_purpose::URL_SAFE.decode(urldecode(encoded)).expect("base64");
    let tokens: Value = serde_json::from_slice(&decoded).expect("json");
    assert_eq!(tokens["access_token"], "at-1");
    // The state is used up.
    assert_eq!(s.get(&format!("/openid/openid/token?code=good&state={state}"), None).await.status, 400);
    // A refused code is a 400, in Kinto's shape.
    let again = s.get(&login, None).await.header("location").map(str::to_owned).expect("location");
    let state = again.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state").to_owned();
    let bad = s.get(&format!("/openid/openid/token?code=bad&state={state}"), None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.errno(), 107);
    assert_eq!(s.get("/openid/openid/login?scope=openid", None).await.status, 400, "callback required");
    assert_eq!(s.get("/openid/nobody/login?callback=x&scope=y", None).await.status, 404);
    s.stop().await;
}

pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn urldecode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_default()
}

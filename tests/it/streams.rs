//! Live change streams over real WebSockets (tokio-tungstenite) and SSE.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{user_id, Server, ALICE, BOB};

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const R: &str = "/buckets/b/collections/c/records";

pub(crate) async fn connect(s: &Server, auth: Option<&str>) -> Socket {
    let mut request = format!("ws://{}/v1/ws", s.addr).into_client_request().expect("request");
    if let Some(auth) = auth {
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, auth);
        request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::Text(frame.to_string().into())).await.expect("send");
}

/// The next JSON frame, or None after `wait` of silence.
async fn next(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Err(_) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads change frames until `count` arrive (or a silence of 5 s).
pub(crate) async fn changes(socket: &mut Socket, count: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < count {
        match next(socket, Duration::from_secs(5)).await {
            Some(frame) if frame["type"] == "change" => out.push(frame),
            Some(_) => continue,
            None => break,
        }
    }
    out
}

pub(crate) async fn subscribe(socket: &mut Socket, id: &str, filter: Value, since: Value, snapshot: bool) -> Value {
    send(socket, json!({"type": "subscribe", "id": id, "filter": filter, "since": since, "snapshot": snapshot})).await;
    loop {
        let frame = next(socket, Duration::from_secs(5)).await.expect("subscribed frame");
        if frame["type"] == "subscribed" || frame["type"] == "error" {
            return frame;
        }
    }
}

async fn create_many(s: &Server, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let requests: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"method": "PUT", "path": format!("{R}/{prefix}{i}"), "body": {"data": {"i": i}}}))
            .collect();
        let r = s.post("/batch", Some(ALICE), json!({ "requests": requests })).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn a_subscriber_receives_every_change_in_order_and_resumes_without_gap_or_duplicate() {
    let s = Server::start().await;
    s.seed().await;
    let mut socket = connect(&s, Some(ALICE)).await;
    let subscribed = subscribe(&mut socket, "s1", json!({"bucket": "b", "collection": "c"}), json!("now"), false).await;
    assert_eq!(subscribed["type"], "subscribed");
    create_many(&s, "r", 1000).await;
    let got = changes(&mut socket, 1000).await;
    assert_eq!(got.len(), 1000);
    let cursors: Vec<String> = got.iter().filter_map(|f| f["cursor"].as_str().map(str::to_owned)).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert!(got.iter().all(|f| f["subscription"] == "s1" && f["action"] == "create" && f["resource_name"] == "record"));
    assert_eq!(got[0]["uri"], "/buckets/b/collections/c/records/r0");
    let last = cursors.last().cloned().unwrap_or_default();
    drop(socket);

    create_many(&s, "later", 500).await;
    let mut socket = connect(&s, Some(ALICE)).await;
    subscribe(&mut socket, "s1", json!({"bucket": "b", "collection": "c"}), json!(last), false).await;
    let resumed = changes(&mut socket, 501).await;
    assert_eq!(resumed.len(), 500, "exactly the 500 written while away");
    let ids: HashSet<String> = resumed.iter().filter_map(|f| f["id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.len(), 500);
    assert!(ids.iter().all(|id| id.starts_with("later")));
}

#[tokio::test]
async fn filters_and_query_select_changes_and_updates_carry_the_old_version() {
    let s = Server::start().await;
    s.seed().await;
    s.put("/buckets/b/collections/other", Some(ALICE), json!({})).await;
    let mut socket = connect(&s, Some(ALICE)).await;
    subscribe(
        &mut socket,
        "done",
        json!({"bucket": "b", "collection": "c", "query": "status=done&min_price=10"}),
        json!("now"),
        false,
    )
    .await;
    subscribe(&mut socket, "deletes", json!({"bucket": "b", "actions": ["delete"]}), json!("now"), false).await;
    s.put(&format!("{R}/a"), Some(ALICE), json!({"data": {"status": "done", "price": 20}})).await;
    s.put(&format!("{R}/b"), Some(ALICE), json!({"data": {"status": "todo", "price": 20}})).await;
    s.put("/buckets/b/collections/other/records/x", Some(ALICE), json!({"data": {"status": "done", "price": 20}}))
        .await;
    s.patch(&format!("{R}/a"), Some(ALICE), json!({"data": {"price": 30}})).await;
    s.delete(&format!("{R}/b"), Some(ALICE)).await;
    let got = changes(&mut socket, 3).await;
    let summary: Vec<(String, String, String)> = got
        .iter()
        .map(|f| {
            (
                f["subscription"].as_str().unwrap_or("").into(),
                f["id"].as_str().unwrap_or("").into(),
                f["action"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("done".into(), "a".into(), "create".into()),
            ("done".into(), "a".into(), "update".into()),
            ("deletes".into(), "b".into(), "delete".into())
        ]
    );
    assert_eq!(got[1]["old"]["price"], 20);
    assert_eq!(got[1]["data"]["price"], 30);
    assert!(next(&mut socket, Duration::from_millis(300)).await.is_none(), "nothing else matched");
}

#[tokio::test]
async fn another_users_private_collection_never_leaks() {
    let s = Server::start().await;
    s.seed().await;
    let mut bob = connect(&s, Some(BOB)).await;
    subscribe(&mut bob, "all", json!({}), json!("now"), false).await;
    s.put(&format!("{R}/secret"), Some(ALICE), json!({"data": {"pin": 1234}})).await;
    s.put(&format!("{R}/shared"), Some(ALICE), json!({"permissions": {"read": [user_id(BOB)]}})).await;
    let got = changes(&mut bob, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], "shared", "only the record shared with bob");
    assert!(next(&mut bob, Duration::from_millis(300)).await.is_none());
    // After the grant is revoked, nothing more of it is delivered.
    s.put(&format!("{R}/shared"), Some(ALICE), json!({"permissions": {"read": []}})).await;
    s.patch(&format!("{R}/shared"), Some(ALICE), json!({"data": {"x": 1}})).await;
    assert!(next(&mut bob, Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn snapshot_then_live_delivers_every_object_exactly_once_under_concurrent_writes() {
    let s = Server::start().await;
    s.seed().await;
    create_many(&s, "pre", 300).await;
    let writer = {
        let (base, client) = (s.base.clone(), s.client.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let url = format!("{base}{R}/live{i}");
                let _ =
                    client.put(url).basic_auth("alice", Some("secret")).json(&json!({"data": {"i": i}})).send().await;
            }
        })
    };
    let mut socket = connect(&s, Some(ALICE)).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "snap", "filter": {"bucket": "b", "collection": "c"}, "snapshot": true}),
    )
    .await;
    let mut seen: Vec<String> = Vec::new();
    let mut done = false;
    let _ = writer.await;
    loop {
        let Some(frame) = next(&mut socket, Duration::from_secs(2)).await else { break };
        match frame["type"].as_str() {
            Some("change") => seen.push(frame["id"].as_str().unwrap_or_default().to_owned()),
            Some("snapshot_done") => done = true,
            _ => {}
        }
    }
    assert!(done);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no object twice");
    assert_eq!(unique.len(), 500, "every object: 300 before, 200 during");
}

#[tokio::test]
async fn ping_pong_and_protocol_errors() {
    let s = Server::start().await;
    let mut socket = connect(&s, None).await;
    send(&mut socket, json!({"type": "ping", "id": "p1"})).await;
    let pong = next(&mut socket, Duration::from_secs(2)).await.expect("pong");
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["id"], "p1");
    socket.send(Message::Text("{not json".into())).await.expect("send");
    let error = next(&mut socket, Duration::from_secs(2)).await.expect("error");
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], 400);
}

#[tokio::test]
async fn browsers_authenticate_with_a_first_frame() {
    let s = Server::start().await;
    s.seed().await;
    let mut socket = connect(&s, None).await;
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ALICE);
    send(&mut socket, json!({"type": "auth", "authorization": format!("Basic {token}")})).await;
    subscribe(&mut socket, "s", json!({"bucket": "b", "collection": "c"}), json!("now"), false).await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    assert_eq!(changes(&mut socket, 1).await.len(), 1);
}

#[tokio::test]
async fn sse_streams_changes_and_resumes_from_last_event_id() {
    let s = Server::start().await;
    s.seed().await;
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    let url = format!("{}/buckets/b/collections/c/changes/stream?since=0", s.base);
    let response = s.client.get(&url).basic_auth("alice", Some("secret")).send().await.expect("sse");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let mut body = response.bytes_stream();
    s.put(&format!("{R}/r2"), Some(ALICE), json!({})).await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while text.matches("event: change").count() < 2 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(text.contains("\"id\":\"r1\""), "{text}");
    assert!(text.contains("\"id\":\"r2\""), "{text}");
    let last_id = text.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().unwrap_or_default().to_owned();
    drop(body);
    s.put(&format!("{R}/r3"), Some(ALICE), json!({})).await;
    let response = s
        .client
        .get(format!("{}/buckets/b/collections/c/changes/stream", s.base))
        .basic_auth("alice", Some("secret"))
        .header("Last-Event-ID", last_id)
        .send()
        .await
        .expect("sse");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: change") {
        match tokio::time::timeout(Duration::from_secs(3), body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    assert!(text.contains("\"id\":\"r3\"") && !text.contains("\"id\":\"r2\""), "{text}");
    let denied = s
        .client
        .get(format!("{}/buckets/b/collections/c/changes/stream", s.base))
        .basic_auth("bob", Some("x"))
        .send()
        .await
        .expect("sse");
    assert_eq!(denied.status(), 403);
}

/// A client socket whose receive buffer is tiny, so a client that never reads stalls quickly.
async fn connect_small_buffer(s: &Server) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(s.addr).await.expect("connect");
    let mut request = format!("ws://{}/v1/ws", s.addr).into_client_request().expect("request");
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ALICE);
    request.headers_mut().insert("Authorization", format!("Basic {token}").parse().expect("header"));
    let (socket, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake");
    socket
}

/// Reads change frames until `total` arrived or the stream ends; a slow reader sleeps before
/// each frame. Returns the ids in arrival order, and the last other frame (or how it ended).
async fn read_all(mut socket: Socket, slow: bool, total: usize) -> (Vec<String>, String) {
    let (mut ids, mut last) = (Vec::new(), String::new());
    while ids.len() < total {
        if slow {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                match frame["type"].as_str() {
                    Some("change") => ids.push(frame["id"].as_str().unwrap_or_default().to_owned()),
                    _ => last = text.to_string(),
                }
            }
            Ok(Some(Ok(_))) => {}
            ended => {
                last = format!("{ended:?}");
                break;
            }
        }
    }
    (ids, last)
}

/// Reads what a socket that never read has waiting: whether it was told it lagged, and the
/// reason of its close frame.
async fn drain_until_close(mut socket: Socket) -> (bool, Option<String>) {
    let mut lagged = false;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match message {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                lagged |= frame["type"] == "lagged";
            }
            Ok(Message::Close(frame)) => return (lagged, frame.map(|f| f.reason.to_string())),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (lagged, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_ten_stalled_ten_slow_the_rest_get_everything_in_order() {
    // Past what writing takes: 4-6 s here under the whole suite, every commit fsynced (sled
    // writes these 32 KiB records' nodes as blob files, each synced).
    const STALL_MS: u64 = 10_000;
    let stall = STALL_MS.to_string();
    let s = Server::start_with(&[("stream_queue_size", "16"), ("stream_stall_timeout_ms", &stall)]).await;
    s.seed().await;
    assert_eq!(s.put("/buckets/b/collections/big", Some(ALICE), json!({})).await.status, 201);
    let filter = json!({"bucket": "b", "collection": "c"});
    let total = 300;
    let (mut readers, mut stalled) = (Vec::new(), Vec::new());
    for i in 0..200 {
        if i < 10 {
            // Never reads, with a tiny receive buffer, and follows the whole bucket: the large
            // records written to `big` fill its socket buffers.
            let mut socket = connect_small_buffer(&s).await;
            subscribe(&mut socket, "s", json!({"bucket": "b"}), json!("now"), false).await;
            stalled.push(socket);
            continue;
        }
        let mut socket = connect(&s, Some(ALICE)).await;
        subscribe(&mut socket, "s", filter.clone(), json!("now"), false).await;
        readers.push((i < 20, tokio::spawn(read_all(socket, i < 20, total))));
    }
    // 10 MB for each stalled peer: far more than loopback socket buffers hold.
    let pad = "x".repeat(32 * 1024);
    let started = std::time::Instant::now();
    for (n, chunk) in (0..total).collect::<Vec<_>>().chunks(25).enumerate() {
        let small: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"method": "PUT", "path": format!("{R}/r{i}"), "body": {"data": {"i": i}}}))
            .collect();
        assert_eq!(s.post("/batch", Some(ALICE), json!({ "requests": small })).await.status, 200);
        let large: Vec<Value> = (0..25)
            .map(|i| {
                let path = format!("/buckets/b/collections/big/records/{n}-{i}");
                json!({"method": "PUT", "path": path, "body": {"data": {"pad": pad}}})
            })
            .collect();
        assert_eq!(s.post("/batch", Some(ALICE), json!({ "requests": large })).await.status, 200);
    }
    // Had the publisher waited on a stalled peer, the writes would have waited for its close.
    let writing = started.elapsed();
    assert!(writing < Duration::from_millis(STALL_MS), "writes were held back: {writing:?}");
    // The stalled peers start reading only once the bound has surely passed (their buffers may
    // still take frames for a while after the last write, under load): all they find is the
    // frames already in flight, `lagged`, and the close frame with their cursor.
    let stalled: Vec<_> = stalled
        .into_iter()
        .map(|socket| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * STALL_MS + 1000)).await;
                drain_until_close(socket).await
            })
        })
        .collect();
    let expected: Vec<String> = (0..total).map(|i| format!("r{i}")).collect();
    for (slow, reader) in readers {
        let (ids, last) = reader.await.expect("reader");
        let kind = if slow { "slow" } else { "normal" };
        assert_eq!(ids.len(), total, "{kind}: every change, any gap filled from the log (last: {last})");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), total, "{kind}: no duplicate");
        if !slow {
            assert_eq!(ids, expected, "normal readers get every change in order");
        }
    }
    for drained in stalled {
        let (lagged, close_reason) = drained.await.expect("stalled peer");
        assert!(lagged, "a stalled subscriber is told it lagged");
        let cursor = close_reason.expect("closed with its cursor");
        assert!(tidemark_protocol::stream::parse_cursor(&cursor).is_some(), "{cursor}");
    }
}

/// A history purge is an event in the log, but of no declared resource: no stream carries it.
#[tokio::test]
async fn history_purges_are_not_streamed() {
    let s = Server::start_with(&[("includes", "kinto.plugins.history")]).await;
    s.seed().await;
    s.put(&format!("{R}/r0"), Some(ALICE), json!({})).await;
    let mut socket = connect(&s, Some(ALICE)).await;
    assert_eq!(
        subscribe(&mut socket, "bucket", json!({"bucket": "b"}), json!("now"), false).await["type"],
        "subscribed"
    );
    assert_eq!(subscribe(&mut socket, "all", json!({}), json!("now"), false).await["type"], "subscribed");
    let purged = s.delete("/buckets/b/history", Some(ALICE)).await;
    assert_eq!(purged.status, 200);
    assert_eq!(purged.body["data"].as_array().map(Vec::len), Some(3));
    s.put(&format!("{R}/r1"), Some(ALICE), json!({})).await;
    let got = changes(&mut socket, 2).await;
    let uris: Vec<(&str, &str)> =
        got.iter().map(|c| (c["subscription"].as_str().unwrap_or(""), c["uri"].as_str().unwrap_or(""))).collect();
    let r1 = format!("{R}/r1");
    assert_eq!(uris.len(), 2, "{got:?}");
    assert!(uris.iter().all(|(_, uri)| *uri == r1), "{got:?}");
    s.stop().await;
}

/// Hostile frames: garbage and unknown frames get `error` frames, a subscription past the limit
/// is refused, an oversize frame closes the socket; the server goes on serving.
#[tokio::test]
async fn hostile_frames_are_refused_and_the_server_goes_on() {
    let s = Server::start_with(&[("stream_max_subscriptions", "3")]).await;
    s.seed().await;
    let mut socket = connect(&s, Some(ALICE)).await;
    for garbage in [
        "not json",
        "[]",
        r#"{"type": "explode"}"#,
        r#"{"type": "subscribe"}"#,
        r#"{"type": "unsubscribe", "id": "nope"}"#,
    ] {
        socket.send(Message::Text(garbage.to_owned().into())).await.expect("send");
        let frame = next(&mut socket, Duration::from_secs(5)).await.expect("an answer");
        assert_eq!(frame["type"], "error", "{garbage}: {frame}");
        assert!(frame["errno"].as_u64().is_some(), "{garbage}: {frame}");
    }
    for i in 0..3 {
        let id = format!("s{i}");
        assert_eq!(
            subscribe(&mut socket, &id, json!({"bucket": "b"}), json!("now"), false).await["type"],
            "subscribed"
        );
    }
    let refused = subscribe(&mut socket, "s3", json!({"bucket": "b"}), json!("now"), false).await;
    assert_eq!((refused["type"].clone(), refused["errno"].clone()), (json!("error"), json!(107)), "{refused}");
    let since_garbage = subscribe(&mut socket, "s4", json!({}), json!({"a": 1}), false).await;
    assert_eq!(since_garbage["type"], "error", "{since_garbage}");
    // A frame over 64 KiB ends the connection.
    let huge = json!({"type": "ping", "id": "x".repeat(70_000)}).to_string();
    let _ = socket.send(Message::Text(huge.into())).await;
    let mut closed = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => break,
        }
    }
    assert!(closed, "the oversize frame closed the socket");
    let mut again = connect(&s, Some(ALICE)).await;
    assert_eq!(subscribe(&mut again, "fresh", json!({"bucket": "b"}), json!("now"), false).await["type"], "subscribed");
    s.put(&format!("{R}/after"), Some(ALICE), json!({})).await;
    assert_eq!(changes(&mut again, 1).await.len(), 1, "still streaming");
    s.stop().await;
}
